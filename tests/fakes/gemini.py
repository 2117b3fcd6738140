"""Fake Gemini API: `models/{model}:generateContent` and `:streamGenerateContent` (chat, and
Nano Banana images from the gemini-*-image models), Veo's `:predictLongRunning` with its
operations, and the download of a finished video (a redirect to a separate storage port).

Speaks the wire protocol in /work/shared/PROVIDERS.md. Like the real API it parses the
body as protobuf JSON: unknown field names are rejected (camelCase or snake_case both
accepted), the assistant role is "model", and a bad key is a 400 (not a 401) with
reason API_KEY_INVALID. Stream events are separated by "\\r\\n\\r\\n", so a client
that only splits on "\\n\\n" fails here. Zero token counts are omitted, as proto3
JSON does: clients must default a missing `candidatesTokenCount` to 0.

Chat is checked as strictly: tools and toolConfig, function call and response turns (a response
answers a call of the turn before it, by name), inlineData, response formats, candidateCount,
thinkingConfig ranges per model, and what each model refuses. A scripted tool call is answered as a
functionCall part; a gemini-3* model signs the first with a thoughtSignature and refuses a request
whose current turn brings a call back without it. `:countTokens` counts what generateContent would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    Fault,
    Received,
    TokenCounts,
    count_words,
    new_id,
)

# Field names in camelCase; check_fields() also accepts their snake_case forms.
# fmt: off
REQUEST_FIELDS = {
    "contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig",
    "cachedContent",
}
CONFIG_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution",
}
PART_DATA = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}
# fmt: on
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
# A candidate that ends for one of these reasons carries no content at all.
NO_CONTENT = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: (
        "INTERNAL",
        (
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"
        ),
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
MODALITIES = {"TEXT", "IMAGE", "AUDIO"}
IMAGE_MODELS = {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview"}
IMAGE_ASPECT_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
IMAGE_TOKENS = 1290  # output tokens per image (PROVIDERS.md: about 1290, unverified)
INPUT_IMAGE_TOKENS = 258  # prompt tokens Gemini counts for a small input image
# A real 1x1 PNG: every image the fake makes.
PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

# ---- chat: what the API checks ----------------------------------------------------------------
# Field names and the function name rule are the google-genai SDK's (types.py and its Gemini API
# converters). The 400s quoted from the API itself come from issue threads: the function call and
# response turn rules, the missing thought signature, penalties, candidates and logprobs per model,
# the thinking budget ranges; the others are marked "wording unverified".
# fmt: off
TOOL_FIELDS = {
    "functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext",
    "fileSearch", "googleMaps", "computerUse",
}
DECLARATION_FIELDS = {
    "name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior",
}
# What `parameters` (the Schema message, an OpenAPI subset) has; JSON Schema's other keywords are unknown.
SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum", "additionalProperties", "defs", "ref",
}
# fmt: on
SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
CALLING_MODES = {"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"}
RESPONSE_MIME_TYPES = {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
SCHEMA_MIME_TYPES = {"application/json", "text/x.enum"}
# The image types the Gemini docs list (GIF is not one), and the other documented inline media.
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "application/pdf", "text/plain"}
INLINE_PREFIXES = ("audio/", "video/")
MAX_CANDIDATES = 8  # Gemini 2.5; Gemini 3 answers one
# thinkingBudget per 2.5 model: (least positive budget, most, whether 0 switches thinking off).
# Longest prefix first.
THINKING_BUDGETS = (
    ("gemini-2.5-flash-lite", (512, 24576, True)),
    ("gemini-2.5-flash", (1, 24576, True)),
    ("gemini-2.5-pro", (128, 32768, False)),
)
THINKING_LEVELS = {"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"}
GEMINI_3_PRO_LEVELS = {"LOW", "HIGH"}
GEMINI_3_FLASH_LEVELS = {"MINIMAL", "LOW", "MEDIUM", "HIGH"}
V1BETA = "type.googleapis.com/google.ai.generativelanguage.v1beta"  # where the API's message types live
# The API's words; the position's numbering is unverified.
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
    "correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
    "function call `default_api:{name}` , position {position}. Please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)

SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]


def google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    """google.rpc.Status as JSON; `details` is left out when empty, as the API does."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


class Invalid(Exception):
    """A 400 INVALID_ARGUMENT; `field` adds a BadRequest fieldViolation like the API."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def camel(obj: dict[str, Any]) -> dict[str, Any]:
    """Proto JSON accepts `max_output_tokens` as well as `maxOutputTokens`."""
    return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in obj.items()}


def check_fields(obj: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    for name, key in zip(camel(obj), obj, strict=True):
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise Invalid(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')
    return camel(obj)


Turn = tuple[str, list[dict[str, Any]]]  # a content's role ("user" when unset) and its parts, camelCased


def check_content(content: Any, where: str) -> Turn:
    """Validate one Content; returns its role and its checked parts."""
    if not isinstance(content, dict):
        raise Invalid(
            f"Invalid value at '{where}' (type.googleapis.com/"
            f"google.ai.generativelanguage.v1beta.Content), {json.dumps(content)}",
            where,
        )
    content = check_fields(content, {"role", "parts"}, where)
    if content.get("role") not in (None, "", "user", "model"):
        raise Invalid("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    return content.get("role") or "user", [check_part(part, f"{where}.parts[{i}]") for i, part in enumerate(parts)]


def check_part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    part = check_fields(part, PART_FIELDS, where)
    data = sorted(PART_DATA & set(part))
    if not data:
        raise Invalid(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field\n"
        )
    if len(data) > 1:
        raise Invalid(f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{data[1]}'")
    if "text" in part and not isinstance(part["text"], str):
        raise Invalid(f"Invalid value at '{where}.text' (TYPE_STRING), {json.dumps(part['text'])}", f"{where}.text")
    if "inlineData" in part:
        check_blob(part["inlineData"], f"{where}.inline_data")
    if "functionCall" in part:
        part["functionCall"] = check_function_call(part["functionCall"], f"{where}.function_call")
    if "functionResponse" in part:
        part["functionResponse"] = check_function_response(part["functionResponse"], f"{where}.function_response")
    if "thoughtSignature" in part:
        check_base64(part["thoughtSignature"], f"{where}.thought_signature")
    return part


def check_struct(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Struct), {json.dumps(value)}")


def check_function_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    call = check_fields(call, {"id", "name", "args", "partialArgs", "willContinue"}, where)
    if not isinstance(call.get("name"), str) or not call["name"]:
        raise Invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")  # wording unverified
    if "args" in call:
        check_struct(call["args"], f"{where}.args")
    return call


def check_function_response(response: Any, where: str) -> dict[str, Any]:
    if not isinstance(response, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    response = check_fields(response, {"id", "name", "response", "parts", "willContinue", "scheduling"}, where)
    if not isinstance(response.get("name"), str) or not response["name"]:
        raise Invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")  # wording unverified
    check_struct(response.get("response"), f"{where}.response")
    return response


def check_turns(turns: list[Turn]) -> None:
    """The order the API wants: a function call turn follows a user turn (or a function response
    turn), and the turn after it answers every one of its calls, by name (messages quoted from the
    API, except the name's)."""
    previous_role, previous_calls = "", list[dict[str, Any]]()
    for role, parts in turns:
        calls = [part["functionCall"] for part in parts if "functionCall" in part]
        responses = [part["functionResponse"] for part in parts if "functionResponse" in part]
        if calls and (role != "model" or previous_role != "user"):
            raise Invalid(
                "Please ensure that function call turn comes immediately after a user turn or after a "
                "function response turn."
            )
        if responses:
            check_responses(role, responses, previous_calls)
        previous_role, previous_calls = role, calls


def check_responses(role: str, responses: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
    if role != "user" or not calls:
        raise Invalid("Please ensure that function response turn comes immediately after a function call turn.")
    if len(responses) != len(calls):
        raise Invalid(
            "Please ensure that the number of function response parts is equal to the number of function "
            "call parts of the function call turn."
        )
    called = {call["name"] for call in calls}
    for response in responses:
        if response["name"] not in called:  # wording unverified
            raise Invalid(
                f"Function response {response['name']} does not match any function call of the function call turn."
            )


def current_turn_start(turns: list[Turn]) -> int:
    """Where the current turn starts: after the last user content that is not a function response."""
    for index in range(len(turns) - 1, -1, -1):
        role, parts = turns[index]
        if role == "user" and not any("functionResponse" in part for part in parts):
            return index + 1
    return 0


def invalid_value(field: str, proto_type: str, value: Any) -> Invalid:
    """The API's answer to a value of the wrong type or outside an enum."""
    return Invalid(f"Invalid value at '{field}' ({proto_type}), {json.dumps(value)}", field)


def proto_bytes(value: str) -> bytes:
    """Bytes as proto3 JSON reads them: standard or URL-safe base64, with or without padding (the
    google-genai SDK sends URL-safe). Raises binascii.Error."""
    value = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def check_base64(value: Any, where: str) -> bytes:
    try:
        return proto_bytes(value) if isinstance(value, str) else b""
    except binascii.Error:
        raise Invalid(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed", where) from None


def check_blob(blob: Any, where: str) -> None:
    """An inlineData Blob: a mimeType the model reads and base64 data, both required."""
    if not isinstance(blob, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    blob = check_fields(blob, {"mimeType", "data"}, where)
    mime_type = blob.get("mimeType")
    if not isinstance(mime_type, str) or not mime_type:
        raise Invalid(f"* GenerateContentRequest.{where}.mime_type: required field is not specified\n")
    if mime_type not in INLINE_TYPES and not mime_type.startswith(INLINE_PREFIXES):
        raise Invalid(f"Unsupported MIME type: {mime_type}")  # wording unverified
    if not check_base64(blob.get("data"), f"{where}.data"):
        raise Invalid(f"* GenerateContentRequest.{where}.data: required field is not specified\n")


def check_tools(tools: Any) -> frozenset[str]:
    """Validate `tools`; returns the declared function names."""
    if tools is None:
        return frozenset()
    if not isinstance(tools, list):
        raise Invalid("Invalid value at 'tools'", "tools")
    names: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise Invalid(f"Invalid value at 'tools[{i}]'", f"tools[{i}]")
        declarations = check_fields(tool, TOOL_FIELDS, f"tools[{i}]").get("functionDeclarations") or []
        if not isinstance(declarations, list):
            raise Invalid(f"Invalid value at 'tools[{i}].function_declarations'", f"tools[{i}].function_declarations")
        names += [check_declaration(d, f"tools[{i}].function_declarations[{j}]") for j, d in enumerate(declarations)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise Invalid(f"Duplicate function declaration found: {duplicates[0]}")  # wording unverified
    return frozenset(names)


def check_declaration(declaration: Any, where: str) -> str:
    if not isinstance(declaration, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    declaration = check_fields(declaration, DECLARATION_FIELDS, where)
    name = declaration.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        # The rule is the SDK's (types.FunctionDeclaration.name); the wording is the API's older one.
        raise Invalid(
            f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter or an "
            "underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes "
            "(-), with a maximum length of 128.\n"
        )
    if "parameters" in declaration and "parametersJsonSchema" in declaration:  # wording unverified
        raise Invalid(
            f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually exclusive\n"
        )
    if "parameters" in declaration:
        check_schema(declaration["parameters"], f"{where}.parameters")
    if "parametersJsonSchema" in declaration:
        check_json_schema_object(declaration["parametersJsonSchema"], f"{where}.parameters_json_schema")
    return name


def check_schema(schema: Any, where: str) -> None:
    """`parameters`: the OpenAPI subset (the Schema message), so JSON Schema keywords outside it,
    "$schema" say, are unknown fields."""
    if not isinstance(schema, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    schema = check_fields(schema, SCHEMA_FIELDS, where)
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in SCHEMA_TYPES):
        raise invalid_value(f"{where}.type", f"{V1BETA}.Type", kind)
    for name, value in (schema.get("properties") or {}).items():
        check_schema(value, f"{where}.properties[{name}]")
    if schema.get("items") is not None:
        check_schema(schema["items"], f"{where}.items")
    for i, option in enumerate(schema.get("anyOf") or []):
        check_schema(option, f"{where}.any_of[{i}]")


def check_json_schema_object(schema: Any, where: str) -> None:
    """parametersJsonSchema is free JSON Schema, but must describe an object (the parameters)."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":  # wording unverified
        raise Invalid(f"* GenerateContentRequest.{where}: the schema must describe an object\n")


def check_tool_config(tool_config: Any, functions: frozenset[str]) -> tuple[str, frozenset[str]]:
    """Validate toolConfig; returns (functionCallingConfig.mode, allowedFunctionNames)."""
    where = "tool_config.function_calling_config"
    if tool_config is None:
        return "AUTO", frozenset()
    if not isinstance(tool_config, dict):
        raise Invalid("Invalid value at 'tool_config'", "tool_config")
    tool_config = check_fields(
        tool_config, {"functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"}, "tool_config"
    )
    calling = tool_config.get("functionCallingConfig") or {}
    if not isinstance(calling, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    calling = check_fields(calling, {"mode", "allowedFunctionNames"}, where)
    mode = calling.get("mode", "MODE_UNSPECIFIED")
    if mode not in CALLING_MODES:
        raise invalid_value(f"{where}.mode", f"{V1BETA}.FunctionCallingConfig.Mode", mode)
    allowed = calling.get("allowedFunctionNames") or []
    # Wording unverified for the three below.
    if mode in ("ANY", "VALIDATED") and not functions:
        raise Invalid("Function calling config is set without function_declarations.")
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise Invalid(
            f"* GenerateContentRequest.{where}.allowed_function_names: may be set only when mode is ANY or VALIDATED\n"
        )
    for name in allowed:
        if name not in functions:
            raise Invalid(
                f"* GenerateContentRequest.{where}.allowed_function_names: {name} is not a declared function\n"
            )
    return ("AUTO" if mode == "MODE_UNSPECIFIED" else mode), frozenset(allowed)


def check_config(config: Any, model: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise Invalid("Invalid value at 'generation_config'", "generation_config")
    config = check_fields(config, CONFIG_FIELDS, "generation_config")
    for name, proto_type in (
        ("temperature", "TYPE_FLOAT"),
        ("topP", "TYPE_FLOAT"),
        ("maxOutputTokens", "TYPE_INT32"),
        ("topK", "TYPE_INT32"),
        ("candidateCount", "TYPE_INT32"),
        ("seed", "TYPE_INT32"),
        ("presencePenalty", "TYPE_FLOAT"),
        ("frequencyPenalty", "TYPE_FLOAT"),
    ):
        value = config.get(name)
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or (proto_type == "TYPE_INT32" and value != int(value)):
            field = "generation_config." + re.sub(r"([A-Z])", r"_\1", name).lower()
            raise Invalid(f"Invalid value at '{field}' ({proto_type}), {json.dumps(value)}", field)
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise Invalid("* GenerateContentRequest.generation_config.temperature: must be in the range [0.0, 2.0]\n")
    if (config.get("maxOutputTokens") or 0) < 0:
        raise Invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n")
    for modality in config.get("responseModalities") or []:
        if modality not in MODALITIES:
            field = "generation_config.response_modalities"
            raise Invalid(f"Invalid value at '{field}' (type.googleapis.com/Modality), {json.dumps(modality)}", field)
    if config.get("imageConfig") is not None:
        check_image_config(config["imageConfig"])
    check_response_format(config)
    check_model_limits(config, model)
    if config.get("thinkingConfig") is not None:
        check_thinking(config["thinkingConfig"], model)
    return config


def check_response_format(config: dict[str, Any]) -> None:
    """responseMimeType among the API's; a response schema (either kind, not both) only for JSON or
    an enum. Wording unverified."""
    mime_type = config.get("responseMimeType", "text/plain")
    if mime_type not in RESPONSE_MIME_TYPES:
        raise Invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
            "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n"
        )
    schemas = [name for name in ("responseSchema", "responseJsonSchema") if config.get(name) is not None]
    if len(schemas) > 1:
        where = "generation_config"
        raise Invalid(
            f"* GenerateContentRequest.{where}: response_schema and response_json_schema are mutually exclusive\n"
        )
    if schemas and mime_type not in SCHEMA_MIME_TYPES:
        raise Invalid(
            "* GenerateContentRequest.generation_config.response_mime_type: must be either `application/json` or "
            "`text/x.enum` when a response schema is set\n"
        )
    if config.get("responseJsonSchema") is not None and not isinstance(config["responseJsonSchema"], dict):
        raise Invalid("* GenerateContentRequest.generation_config.response_json_schema: must be a JSON Schema object\n")


def check_model_limits(config: dict[str, Any], model: str) -> None:
    """What a model refuses (messages quoted from the API, the candidate range's from Vertex)."""
    count = config.get("candidateCount", 1)
    if count > 1 and model.startswith("gemini-3"):
        raise Invalid("Multiple candidates is not enabled for this model")
    if not 1 <= count <= MAX_CANDIDATES:
        raise Invalid(
            f"Unable to submit request because it has a candidateCount value of {count} but the supported range "
            f"is from 1 (inclusive) to {MAX_CANDIDATES + 1} (exclusive). Update the value and try again."
        )
    penalized = any(config.get(name) for name in ("presencePenalty", "frequencyPenalty"))
    if penalized and model.startswith(("gemini-2.5", "gemini-3")):
        raise Invalid(f"Penalty is not enabled for models/{model}")
    if config.get("responseLogprobs") and model.startswith(("gemini-2.5", "gemini-3")):
        raise Invalid(f"Logprobs is not enabled for models/{model}")


def budget_range(model: str) -> tuple[int, int, bool] | None:
    return next((limits for prefix, limits in THINKING_BUDGETS if model.startswith(prefix)), None)


def check_thinking(thinking: Any, model: str) -> None:
    where = "generation_config.thinking_config"
    if not isinstance(thinking, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    thinking = check_fields(thinking, {"includeThoughts", "thinkingBudget", "thinkingLevel"}, where)
    budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
    if budget is not None and level is not None:  # wording unverified
        raise Invalid("You can only set one of thinking budget and thinking level.")
    if budget is not None:
        check_budget(budget, model)
    if level is not None:
        check_level(level, model)


def check_budget(budget: Any, model: str) -> None:
    """Per 2.5 model: -1 (dynamic), 0 where thinking can be switched off, else least..most."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        field = "generation_config.thinking_config.thinking_budget"
        raise Invalid(f"Invalid value at '{field}' (TYPE_INT32), {json.dumps(budget)}", field)
    limits = budget_range(model)
    if limits is None or budget == -1:
        return
    least, most, can_switch_off = limits
    if budget == 0 and not can_switch_off:
        raise Invalid("Budget 0 is invalid. This model only works in thinking mode.")
    if budget != 0 and not least <= budget <= most:
        raise Invalid(f"The thinking budget {budget} is invalid. Please choose a value between {least} and {most}.")


def check_level(level: Any, model: str) -> None:
    """Gemini 3 only; Pro has LOW and HIGH, Flash MINIMAL to HIGH. Enum names in either case (the
    SDK sends "LOW", the REST docs "low"). Wording unverified."""
    name = level.upper() if isinstance(level, str) else level
    if name not in THINKING_LEVELS:
        field = "generation_config.thinking_config.thinking_level"
        raise invalid_value(field, f"{V1BETA}.ThinkingConfig.ThinkingLevel", level)
    if not model.startswith("gemini-3"):
        raise Invalid("Thinking level is not supported for this model.")
    allowed = GEMINI_3_FLASH_LEVELS if "flash" in model else GEMINI_3_PRO_LEVELS
    if name not in allowed:
        raise Invalid(
            f"Thinking level {level} is not supported for this model. Use one of: {', '.join(sorted(allowed))}."
        )


def check_image_config(image_config: Any) -> None:
    where = "generation_config.image_config"
    if not isinstance(image_config, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    image_config = check_fields(image_config, {"aspectRatio", "imageSize"}, where)
    ratio = image_config.get("aspectRatio")
    if ratio is not None and ratio not in IMAGE_ASPECT_RATIOS:
        # The real wording is unverified; the status and the field are what clients see.
        raise Invalid(f"* GenerateContentRequest.{where}.aspect_ratio: unsupported aspect ratio {json.dumps(ratio)}\n")


@dataclass(frozen=True)
class ChatAsk:
    """What a checked GenerateContentRequest asks for."""

    prompt_tokens: int  # the fake's count: words of texts, calls and results, INPUT_IMAGE_TOKENS an image
    max_tokens: int | None
    functions: frozenset[str]  # declared
    calling_mode: str  # AUTO | ANY | NONE | VALIDATED
    allowed: frozenset[str]  # allowedFunctionNames (empty: any declared)
    candidates: int
    turns: list[Turn]

    def may_call(self, name: str) -> bool:
        return name in self.functions and self.calling_mode != "NONE" and (not self.allowed or name in self.allowed)


def part_tokens(part: dict[str, Any]) -> int:
    if "inlineData" in part:
        return INPUT_IMAGE_TOKENS
    if "functionCall" in part:
        return count_words(json.dumps(part["functionCall"].get("args") or {})) + 1
    if "functionResponse" in part:
        return count_words(json.dumps(part["functionResponse"]["response"])) + 1
    return count_words(part.get("text") or "")


def check_request(body: Any, model: str) -> ChatAsk:
    """Validate a GenerateContentRequest for this model (the id from the URL)."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.")
    body = check_fields(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified\n")
    if not isinstance(contents, list):
        raise Invalid("Invalid value at 'contents'", "contents")
    turns = [check_content(c, f"contents[{i}]") for i, c in enumerate(contents)]
    check_turns(turns)
    parts = [part for _, turn_parts in turns for part in turn_parts]
    if body.get("systemInstruction") is not None:
        parts += check_content(body["systemInstruction"], "system_instruction")[1]
    functions = check_tools(body.get("tools"))
    mode, allowed = check_tool_config(body.get("toolConfig"), functions)
    config = check_config(body.get("generationConfig") or {}, model)
    max_tokens = int(config["maxOutputTokens"]) if config.get("maxOutputTokens") else None
    prompt = sum(part_tokens(part) for part in parts)
    return ChatAsk(prompt, max_tokens, functions, mode, allowed, int(config.get("candidateCount", 1)), turns)


def check_count_tokens(body: Any) -> dict[str, Any]:
    """A CountTokensRequest: `contents`, or a whole `generateContentRequest` (with its model), not
    both; returns the GenerateContentRequest to count. Wording unverified."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.")
    body = check_fields(body, {"contents", "generateContentRequest"}, "")
    if "contents" in body and "generateContentRequest" in body:
        raise Invalid("* CountTokensRequest: contents and generate_content_request are mutually exclusive\n")
    if "generateContentRequest" not in body:
        return {"contents": body.get("contents")}
    request = body["generateContentRequest"]
    if not isinstance(request, dict):
        raise Invalid("Invalid value at 'generate_content_request'", "generate_content_request")
    request = check_fields(request, REQUEST_FIELDS | {"model"}, "generate_content_request")
    if not str(request.pop("model", "")).startswith("models/"):
        raise Invalid("* CountTokensRequest.generate_content_request.model: required field is not specified\n")
    return request


NO_COUNTS = TokenCounts()


def usage(prompt: int, output: int, counts: TokenCounts = NO_COUNTS) -> dict[str, Any]:
    """promptTokenCount includes the cached tokens; thoughts are counted apart from the candidates
    (and billed as output). Proto3 JSON leaves zero counts out."""
    metadata: dict[str, Any] = {
        "promptTokenCount": prompt,
        "totalTokenCount": prompt + output + counts.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if output:
        metadata["candidatesTokenCount"] = output
    if counts.cached:
        metadata["cachedContentTokenCount"] = counts.cached
    if counts.reasoning:
        metadata["thoughtsTokenCount"] = counts.reasoning
    return metadata


def same_candidates(parts: list[dict[str, Any]], count: int, finish: str | None) -> list[dict[str, Any]]:
    """`count` candidates with the same parts (the fake's candidates agree), the finish reason on each."""
    finish_field = {"finishReason": finish} if finish else {}
    return [{"content": {"parts": parts, "role": "model"}, "index": i, **finish_field} for i in range(count)]


def image_parts(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """What an image model answers for the responseModalities asked (both when none are)."""
    config = camel(camel(body).get("generationConfig") or {})
    modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
    parts: list[dict[str, Any]] = [{"text": text}] if "TEXT" in modalities else []
    if "IMAGE" in modalities:
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG_PIXEL).decode()}})
    return parts


def image_refusal(reason: str) -> dict[str, Any]:
    """A candidate that ends without an image: NO_IMAGE says why in text, a safety stop says nothing."""
    if reason == "NO_IMAGE":
        content = {"role": "model", "parts": [{"text": "I can't make that image."}]}
        return {"content": content, "finishReason": reason, "index": 0}
    return {"finishReason": reason, "index": 0, "safetyRatings": SAFETY_RATINGS}


# ---- Veo ---------------------------------------------------------------------------------
# What the real API does, and where each fact comes from (the client and this fake rely on them):
# - Request: POST /v1beta/models/{model}:predictLongRunning {"instances": [{"prompt", "image"?:
#   {"bytesBase64Encoded", "mimeType"}, "video"?: {"uri"}}], "parameters": {"aspectRatio",
#   "durationSeconds" (a number), "resolution", "negativePrompt", "personGeneration", "sampleCount",
#   "enhancePrompt"}}. Source: the Gemini API ("mldev") serialisers of generate_videos in
#   googleapis/python-genai, google/genai/models.py (_GenerateVideosParameters_to_mldev,
#   _GenerateVideosConfig_to_mldev, _Image_to_mldev, _Video_to_mldev); fps, seed, generateAudio and
#   the like are refused there as Vertex-only.
# - Extension: instances[0].video = {"uri": <video.uri of the earlier operation's result>} (bytes
#   would be {"encodedVideo", "encoding"}; Veo extends only videos it made, so the fake takes a uri
#   only). Veo 3.1 only, and only videos Veo generated: python-genai README ("only Gemini Developer
#   API supports video extension on Veo 3.1 for previously generated videos") and its
#   tests/models/test_generate_videos.py::test_generated_video_extension_poll, which passes the
#   first operation's generated video as `video=`. A REST script on GitHub (extend-veo3-rest.ts)
#   sends {"instances": [{"prompt", "video": {"uri"}}], "parameters": {"resolution": "720p"}}.
# - ai.google.dev/gemini-api/docs/veo, as quoted in a third-party verification note (2026-09):
#   durationSeconds "4", "6", "8"; for Veo 3.1 and Fast it "must be 8 when using extension,
#   reference images or with 1080p and 4k resolutions"; "1080p (only supports 8s duration)".
#   So the client leaves durationSeconds out of an extension: the fake takes none, or 8.
# - Third-party guides only (help.apiyi.com, blog.greeden.me, aifreeapi.com): each extension adds
#   7 s, up to 20 of them; the input must be 720p, 16:9 or 9:16, at most 141 s; the result is ONE
#   video, the input and the new 7 s together (up to 148 s), at 720p.
# - Operations: python-genai's operations module only GETs them (no cancel). Proto3 JSON leaves
#   `done: false` out, so a running operation here is just {"name"}.
VEO_3_1 = {"veo-3.1-generate-preview", "veo-3.1-fast-generate-preview"}  # extend videos; also make 4k
VEO_MODELS = {"veo-3.0-generate-001", "veo-3.0-fast-generate-001"} | VEO_3_1
VEO_DURATIONS = (4, 6, 8)
VEO_ASPECT_RATIOS = ("16:9", "9:16")
EXTENSION_S = 7
MAX_EXTENDABLE_S = 141
INSTANCE_FIELDS = {"prompt", "image", "lastFrame", "referenceImages", "video"}
PARAMETER_FIELDS = {
    "aspectRatio",
    "durationSeconds",
    "resolution",
    "negativePrompt",
    "personGeneration",
    "sampleCount",
    "enhancePrompt",
}
FRAME_TYPES = {"image/png", "image/jpeg", "image/webp"}
PREDICT_RESPONSE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
RPC_ERRORS = {  # google.rpc.Code -> what a failed operation's error says (wording unverified)
    3: "The input could not be processed.",
    8: "Resource has been exhausted (e.g. check quota).",
    13: "Video generation failed due to an internal error. Please try again.",
    14: "The service is currently unavailable.",
}
RAI_REASON = "The video could not be generated because it may violate the usage guidelines."  # wording unverified
STORAGE_PATH = "/storage/"
# An MP4-looking file whose length says its duration: a real ftyp box, then 1,000 bytes a second.
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
MP4_BYTES_PER_SECOND = 1000


def fake_mp4(seconds: int) -> bytes:
    return MP4_HEADER + bytes(seconds * MP4_BYTES_PER_SECOND)


def mp4_seconds(data: bytes) -> int:
    """The duration of a file fake_mp4 made (what a test asserts a download is)."""
    assert data.startswith(MP4_HEADER), "not a video this fake made"
    return (len(data) - len(MP4_HEADER)) // MP4_BYTES_PER_SECOND


@dataclass(frozen=True)
class FakeVideo:
    """A video the fake made (an extension's seconds include the video it extends)."""

    id: str
    model: str
    seconds: int
    aspect_ratio: str
    resolution: str
    prompt: str
    extends: str | None = None  # the id of the video this one extends


@dataclass(frozen=True)
class VideoScript:
    """How the next operations go: `polls` answers without `done`, then the outcome."""

    polls: int = 0
    outcome: str = "ok"  # ok | error | filtered
    error_code: int = 13  # google.rpc.Code of an "error" outcome (13 INTERNAL, 14 UNAVAILABLE, ...)


@dataclass
class FakeOperation:
    name: str
    video: FakeVideo  # what it makes when it succeeds
    script: VideoScript
    polls_left: int


def check_frame(image: Any) -> None:
    where = "instances[0].image"
    if not isinstance(image, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    image = check_fields(image, {"bytesBase64Encoded", "mimeType", "gcsUri"}, where)
    if "gcsUri" in image:  # python-genai: "gcs_uri parameter is only supported in Vertex AI"
        raise Invalid("Input image from a Cloud Storage URI is not supported. Use bytesBase64Encoded.")
    if image.get("mimeType") not in FRAME_TYPES:
        raise Invalid(f"Unsupported image mime type {json.dumps(image.get('mimeType'))}.")
    if not check_base64(image.get("bytesBase64Encoded"), f"{where}.bytes_base64_encoded"):
        raise Invalid("The image is empty.")


def check_video_request(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a predictLongRunning body's shape; returns (instance, parameters), camelCased."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.")
    body = check_fields(body, {"instances", "parameters"}, "")
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise Invalid("* PredictLongRunningRequest.instances: exactly one instance is required\n")
    instance = check_fields(instances[0], INSTANCE_FIELDS, "instances[0]")
    if not isinstance(body.get("parameters") or {}, dict):
        raise Invalid("Invalid value at 'parameters'", "parameters")
    parameters = check_fields(body.get("parameters") or {}, PARAMETER_FIELDS, "parameters")
    if not isinstance(instance.get("prompt", ""), str):
        raise Invalid("Invalid value at 'instances[0].prompt' (TYPE_STRING)", "instances[0].prompt")
    if "image" in instance:
        check_frame(instance["image"])
    video = instance.get("video")
    if video is not None and (
        not isinstance(video, dict) or not isinstance(check_fields(video, {"uri"}, "video").get("uri"), str)
    ):
        raise Invalid("Invalid value at 'instances[0].video': a uri is required", "instances[0].video")
    duration = parameters.get("durationSeconds")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)):
        raise Invalid(
            f"Invalid value at 'parameters.duration_seconds' (TYPE_INT32), {json.dumps(duration)}",
            "parameters.duration_seconds",
        )
    return instance, parameters


class FakeGemini(FakeProvider):
    provider = "gemini"
    default_api_key = "test-gemini-key"
    url_prefix = ""  # GEMINI_BASE_URL has no /v1beta
    stop_reason = "STOP"
    length_reason = "MAX_TOKENS"
    tool_reason = "STOP"  # Gemini ends a function call with STOP

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.storage_port = 0  # a second port: the "storage host" a download redirects to
        self.image_delay_s = 0.0  # how long each image call takes (calls overlap while they wait)
        self._image_calls = self._peak_image_calls = 0
        self._image_epoch = 0  # bumped by reset(): calls of an earlier test no longer count
        self._video_script = VideoScript()
        self._operations: dict[str, FakeOperation] = {}
        self._videos: dict[str, FakeVideo] = {}
        self._signatures: set[bytes] = set()  # the thought signatures given out, which Gemini 3 wants back

    # ---- what the test scripts and sees, beyond chat ------------------------------------

    def block_prompt(self, reason: str = "SAFETY", times: int = 1, path: str | None = None) -> None:
        """Answer 200 with promptFeedback.blockReason and no candidates."""
        self._add(Fault("block", times, path, reason=reason))

    def refuse_image(self, finish_reason: str = "IMAGE_SAFETY", times: int = 1, path: str | None = None) -> None:
        """An image call answers a candidate with this finishReason and no image (NO_IMAGE: a text part)."""
        self._add(Fault("refuse_image", times, path, reason=finish_reason))

    def video_script(self, polls: int = 0, outcome: str = "ok", error_code: int = 13) -> None:
        """Script every following video operation (until reset or the next call): `polls` GETs answer
        it running, the next one finds it done: "ok" (a video), "error" (with google.rpc.Code
        error_code) or "filtered" (the safety filter withheld the video)."""
        if outcome not in ("ok", "error", "filtered"):
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._lock:
            self._video_script = VideoScript(polls, outcome, error_code)

    @property
    def peak_image_calls(self) -> int:
        """The most image calls in progress at once (set image_delay_s so that calls overlap)."""
        with self._lock:
            return self._peak_image_calls

    @property
    def videos(self) -> dict[str, FakeVideo]:
        """The videos made so far, by id."""
        with self._lock:
            return dict(self._videos)

    def download_url(self, video_id: str) -> str:
        return f"{self.base_url}/v1beta/files/{video_id}:download?alt=media"

    def storage_url(self, video_id: str) -> str:
        return f"http://127.0.0.1:{self.storage_port}{STORAGE_PATH}{video_id}.mp4"

    def reset(self) -> None:
        super().reset()
        self.image_delay_s = 0.0
        with self._lock:
            self._image_calls = self._peak_image_calls = 0
            self._image_epoch += 1
            self._video_script = VideoScript()
            self._operations.clear()
            self._videos.clear()
            self._signatures.clear()

    async def _open(self, sock: socket.socket) -> None:
        await super()._open(sock)
        assert self._runner is not None
        storage = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        storage.bind(("127.0.0.1", 0))
        self.storage_port = storage.getsockname()[1]
        await web.SockSite(self._runner, storage).start()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{target}", self.endpoint(self._model_action)),
            # The real API also serves v1 (the newest google-genai SDK defaults to it).
            web.post("/v1/models/{target}", self.endpoint(self._model_action)),
            web.get("/v1beta/models/{model}/operations/{operation}", self.endpoint(self._operation)),
            web.get("/v1beta/files/{file}", self.endpoint(self._file)),
            web.get(STORAGE_PATH + "{name}", self.endpoint(self._storage)),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    def is_stream(self, received: Received) -> bool:
        return received.path.endswith(":streamGenerateContent")

    # ---- errors and auth ---------------------------------------------------------

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        if body is None:
            name, message = ERRORS.get(status, ("UNKNOWN", f"HTTP {status}"))
            # No rate-limit headers on Gemini: a 429's retry hint is in the body.
            retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
            body = google_error(status, name, message, retry if status == 429 else None)
        return web.json_response(body, status=status, headers=headers)

    def invalid(self, exc: Invalid) -> web.Response:
        violation = {"field": exc.field, "description": str(exc)}
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]
        return self.error_response(400, google_error(400, "INVALID_ARGUMENT", str(exc), details if exc.field else None))

    def auth_error(self, received: Received) -> web.Response | None:
        key = received.headers.get("x-goog-api-key") or received.query.get("key")
        if received.path.startswith(STORAGE_PATH):
            # Storage is another host: a client that sends it the key leaks it, so it fails here.
            return web.Response(status=400, text="the Gemini API key was sent to storage") if key else None
        if not key:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return self.error_response(403, google_error(403, "PERMISSION_DENIED", message))
        if key == self.api_key:
            return None
        message = "API key not valid. Please pass a valid API key."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return self.error_response(400, google_error(400, "INVALID_ARGUMENT", message, details))

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.error_response(404, google_error(404, "NOT_FOUND", f"Unknown URL {request.path}"))

    # ---- generateContent -------------------------------------------------------------

    async def _model_action(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action == "predictLongRunning":
            return self._predict_long_running(model, received)
        if action == "countTokens":
            return self._count_tokens(model, received)
        if action not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404)
        return await self._generate(request, received, fault)

    async def _generate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        try:
            ask = check_request(received.json, model)
            self._check_signatures(ask.turns, model)
        except Invalid as exc:
            return self.invalid(exc)
        if model in IMAGE_MODELS and action == "generateContent":
            return web.json_response(await self._image(model, received.json, ask.prompt_tokens, fault))
        answer = self.answer(ask.prompt_tokens, ask.max_tokens)
        try:
            calls = self._call_parts(answer, ask, model)
        except Invalid as exc:
            return self.invalid(exc)
        envelope = {"modelVersion": model, "responseId": new_id("")}
        if fault is not None and fault.kind == "block":
            chunks = [
                {
                    "promptFeedback": {"blockReason": fault.reason, "safetyRatings": SAFETY_RATINGS},
                    "usageMetadata": usage(answer.input_tokens, 0),
                    **envelope,
                }
            ]
        else:
            chunks = [chunk | envelope for chunk in self._chunks(answer, calls, ask.candidates)]
        if action == "generateContent":
            return web.json_response(self._merge(chunks, answer, calls))
        return await self._stream(request, received, chunks, fault)

    def _count_tokens(self, model: str, received: Received) -> web.Response:
        """What generateContent would count as the prompt (a scripted input_tokens included)."""
        try:
            ask = check_request(check_count_tokens(received.json), model)
        except Invalid as exc:
            return self.invalid(exc)
        total = self.answer(ask.prompt_tokens, None).input_tokens
        return web.json_response(
            {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
        )

    def _check_signatures(self, turns: list[Turn], model: str) -> None:
        """Gemini 3: the first functionCall part of each model step in the current turn must carry the
        thoughtSignature this fake gave it (a made-up or altered one is refused too)."""
        if not model.startswith("gemini-3"):
            return
        for index in range(current_turn_start(turns), len(turns)):
            role, parts = turns[index]
            calls = [part for part in parts if "functionCall" in part]
            if role != "model" or not calls:
                continue
            signature = calls[0].get("thoughtSignature")
            if signature is None:
                name = calls[0]["functionCall"]["name"]
                raise Invalid(MISSING_SIGNATURE.format(name=name, position=index + 1))
            with self._lock:
                known = proto_bytes(signature) in self._signatures
            if not known:
                raise Invalid("Corrupted thought signature.")

    def _call_parts(self, answer: Answer, ask: ChatAsk, model: str) -> list[dict[str, Any]]:
        """The scripted calls as functionCall parts; a Gemini 3 model signs the first. A call the request
        does not let the model make is a mistake in the test's script, answered as a 400 that says so."""
        for call in answer.tool_calls:
            if not ask.may_call(call.name):
                raise Invalid(
                    f"the fake was scripted to call {call.name!r}, which this request does not let the model call"
                )
        parts: list[dict[str, Any]] = [
            {"functionCall": {"name": c.name, "args": c.arguments}} for c in answer.tool_calls
        ]
        if parts and model.startswith("gemini-3"):
            parts[0]["thoughtSignature"] = self._new_signature()
        return parts

    def _new_signature(self) -> str:
        signature = secrets.token_bytes(48)  # real ones are longer; any bytes do
        with self._lock:
            self._signatures.add(signature)
        return base64.b64encode(signature).decode()

    @staticmethod
    def _chunks(answer: Answer, calls: list[dict[str, Any]], candidates: int) -> list[dict[str, Any]]:
        """The stream's chunks: one word each, then one per function call (Gemini sends each call whole),
        usage cumulative, finishReason on the last. Every chunk holds each of the candidates asked for."""
        if answer.finish_reason in NO_CONTENT:
            candidate = {"finishReason": answer.finish_reason, "index": 0, "safetyRatings": SAFETY_RATINGS}
            return [{"candidates": [candidate], "usageMetadata": usage(answer.input_tokens, 0, answer.counts)}]
        steps = [[{"text": piece}] for piece in answer.pieces] + [[call] for call in calls]
        steps = steps or [[{"text": ""}]]
        chunks = []
        for n, parts in enumerate(steps, start=1):
            last = n == len(steps)
            # candidatesTokenCount counts the output of every candidate.
            output = (answer.output_tokens if last else min(n, answer.output_tokens)) * candidates
            metadata = usage(answer.input_tokens, output, answer.counts)
            finish = answer.finish_reason if last else None
            chunks.append({"candidates": same_candidates(parts, candidates, finish), "usageMetadata": metadata})
        return chunks

    @staticmethod
    def _merge(chunks: list[dict[str, Any]], answer: Answer, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The non-stream response: the last chunk, holding the whole text and every call."""
        merged = json.loads(json.dumps(chunks[-1]))
        parts = ([{"text": answer.text}] if answer.text or not calls else []) + calls
        for candidate in merged.get("candidates", []):
            if "content" in candidate:
                candidate["content"]["parts"] = parts
        return merged

    async def _stream(
        self, request: web.Request, received: Received, chunks: list[dict[str, Any]], fault: Fault | None
    ) -> web.StreamResponse:
        sse = received.query.get("alt") == "sse"
        if sse:
            response = await self.open_stream(request)
        else:  # without alt=sse the real API streams one JSON array, not events
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"candidates": [{"content": \r\n\r\n')
            return response
        # Gemini has no mid-stream error event: both stream faults just drop the socket.
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        for n, chunk in enumerate(chunks[:limit]):
            if sse:
                await self.send(response, f"data: {json.dumps(chunk)}\r\n\r\n")
            else:
                await self.send(response, ("[" if n == 0 else ",\r\n") + json.dumps(chunk))
        if limit is not None:
            self.cut(request)
        elif not sse:
            await self.send(response, "]")
        return response

    # ---- Nano Banana -------------------------------------------------------------------

    async def _image(self, model: str, body: dict[str, Any], prompt_tokens: int, fault: Fault | None) -> dict[str, Any]:
        """One image per call, as an inlineData part, after image_delay_s (calls in progress are counted)."""
        with self._lock:
            reply, epoch = self._reply, self._image_epoch
            self._image_calls += 1
            self._peak_image_calls = max(self._peak_image_calls, self._image_calls)
        try:
            await asyncio.sleep(self.image_delay_s)
        finally:
            with self._lock:
                if epoch == self._image_epoch:  # a call a client gave up on may outlive its test
                    self._image_calls -= 1
        envelope = {"modelVersion": model, "responseId": new_id("")}
        prompt = prompt_tokens if reply.input_tokens is None else reply.input_tokens
        if fault is not None and fault.kind == "block":
            feedback = {"blockReason": fault.reason, "safetyRatings": SAFETY_RATINGS}
            return {"promptFeedback": feedback, "usageMetadata": usage(prompt, 0), **envelope}
        if fault is not None and fault.kind == "refuse_image":
            return {"candidates": [image_refusal(fault.reason)], "usageMetadata": usage(prompt, 0), **envelope}
        output = IMAGE_TOKENS if reply.output_tokens is None else reply.output_tokens
        parts = image_parts(body, reply.text or "Here is your image.")
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage(prompt, output), **envelope}

    # ---- Veo -------------------------------------------------------------------------------

    def _predict_long_running(self, model: str, received: Received) -> web.Response:
        if model not in VEO_MODELS:
            message = f"models/{model} is not found for API version v1beta, or is not supported for predictLongRunning."
            return self.error_response(404, google_error(404, "NOT_FOUND", message))
        try:
            instance, parameters = check_video_request(received.json)
            video = self._planned_video(model, instance, parameters)
        except Invalid as exc:
            return self.invalid(exc)
        name = f"models/{model}/operations/{new_id('')}"
        with self._lock:
            script = self._video_script
            self._operations[name] = FakeOperation(name, video, script, script.polls)
        return web.json_response({"name": name})

    def _planned_video(self, model: str, instance: dict[str, Any], parameters: dict[str, Any]) -> FakeVideo:
        """The video a request makes, once its values are checked as the real API checks them."""
        aspect = parameters.get("aspectRatio", "16:9")
        resolution = parameters.get("resolution", "720p")
        duration = parameters.get("durationSeconds", 8)
        if aspect not in VEO_ASPECT_RATIOS:
            raise Invalid(f"Aspect ratio {json.dumps(aspect)} is not supported. Use 16:9 or 9:16.")
        if resolution not in ("720p", "1080p", "4k") or (resolution == "4k" and model not in VEO_3_1):
            raise Invalid(f"Resolution {json.dumps(resolution)} is not supported by {model}.")
        if duration not in VEO_DURATIONS:
            raise Invalid(f"durationSeconds {duration} is out of bounds: use 4, 6 or 8.")
        if resolution != "720p" and duration != 8:
            raise Invalid(f"{resolution} only supports an 8 second duration.")
        prompt = instance.get("prompt", "")
        if "video" in instance:
            return self._extension(model, instance, parameters, prompt)
        if not prompt and "image" not in instance:
            raise Invalid("A prompt or an image is required.")
        return FakeVideo(new_id(""), model, duration, aspect, resolution, prompt)

    def _extension(self, model: str, instance: dict[str, Any], parameters: dict[str, Any], prompt: str) -> FakeVideo:
        """An extension: 7 s more of a 720p video this fake made, as one video of both."""
        if model not in VEO_3_1:
            raise Invalid(f"Video extension is not supported for {model}.")
        if "image" in instance:
            raise Invalid("An image and a video to extend cannot both be given.")
        source = self._video_at(instance["video"]["uri"])
        if source is None:
            raise Invalid("Only videos generated by Veo can be extended; this uri is not one.")
        if parameters.get("durationSeconds", 8) != 8:
            raise Invalid("durationSeconds must be 8 when extending a video.")
        if parameters.get("resolution", "720p") != "720p" or source.resolution != "720p":
            raise Invalid("Only 720p videos can be extended, and only at 720p.")
        if parameters.get("aspectRatio", source.aspect_ratio) != source.aspect_ratio:
            raise Invalid(f"An extension keeps the video's aspect ratio ({source.aspect_ratio}).")
        if source.seconds > MAX_EXTENDABLE_S:
            raise Invalid(f"Only videos of up to {MAX_EXTENDABLE_S} seconds can be extended.")
        seconds = source.seconds + EXTENSION_S
        return FakeVideo(new_id(""), model, seconds, source.aspect_ratio, "720p", prompt, extends=source.id)

    def _video_at(self, uri: str) -> FakeVideo | None:
        with self._lock:
            return next((video for video in self._videos.values() if self.download_url(video.id) == uri), None)

    async def _operation(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        name = received.path.removeprefix("/v1beta/")
        with self._lock:
            operation = self._operations.get(name)
            if operation is not None and operation.polls_left > 0:
                operation.polls_left -= 1
                return web.json_response({"name": name})  # proto3 JSON leaves `done: false` out
        if operation is None:
            return self.error_response(404, google_error(404, "NOT_FOUND", f"Operation {name} not found."))
        return web.json_response({"name": name, "done": True, **self._outcome(operation)})

    def _outcome(self, operation: FakeOperation) -> dict[str, Any]:
        script = operation.script
        if script.outcome == "error":
            message = RPC_ERRORS.get(script.error_code, "Video generation failed.")
            return {"error": {"code": script.error_code, "message": message}}
        if script.outcome == "filtered":
            result: dict[str, Any] = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [RAI_REASON]}
        else:
            with self._lock:
                self._videos[operation.video.id] = operation.video
            result = {"generatedSamples": [{"video": {"uri": self.download_url(operation.video.id)}}]}
        return {"response": {"@type": PREDICT_RESPONSE, "generateVideoResponse": result}}

    async def _file(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        video_id, _, action = request.match_info["file"].partition(":")
        if action != "download" or received.query.get("alt") != "media":
            return self.error_response(400)  # the fake serves downloads only, not file metadata
        with self._lock:
            known = video_id in self._videos
        if not known:
            return self.error_response(404)
        # Like the real download: a redirect to storage on another host (here, another port).
        return web.Response(status=302, headers={"Location": self.storage_url(video_id)})

    async def _storage(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        with self._lock:
            video = self._videos.get(request.match_info["name"].removesuffix(".mp4"))
        if video is None:
            return web.Response(status=404, text="No such object.")
        return web.Response(body=fake_mp4(video.seconds), content_type="video/mp4")
