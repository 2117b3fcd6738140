"""What the fake Gemini API checks of a GenerateContentRequest (and of a CountTokensRequest), as
the real API checks it: known fields only, tools and their function declarations (the parameters
schema, or a JSON Schema), toolConfig, generationConfig (types and ranges, response formats, image
config, thinking budgets and levels per model), and what each model refuses (penalties, logprobs,
several candidates). check_request returns what the request asks for (ChatAsk), the prompt's
tokens counted the fake's way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..server import count_words
from .common import V1BETA, Invalid, check_fields, invalid_value
from .contents import Turn, check_content, check_turns

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
# fmt: on
MODALITIES = {"TEXT", "IMAGE", "AUDIO"}
IMAGE_ASPECT_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
INPUT_IMAGE_TOKENS = 258  # prompt tokens Gemini counts for a small input image

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
