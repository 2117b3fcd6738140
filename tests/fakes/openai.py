"""Fake OpenAI API: chat completions (plain and streamed), moderations, and images
(generations, and edits sent as multipart/form-data).

Speaks the wire protocol in /work/shared/PROVIDERS.md. It is strict on purpose: the
real API rejects unknown arguments, bad types and `stream_options` without `stream`,
so a gateway that sends those must fail here too, not in production. Chat requests are checked
as the real API checks them: tools and tool_choice, tool messages that answer the calls just
before them, image parts, response formats, n and logprobs; a scripted tool call the request does
not offer is refused (a gateway that lost the tools must fail). Likewise for images:
n>1 on dall-e-3, a size the model does not make, response_format on gpt-image, an upload
part without an image content type.

gpt-image answers base64 with token usage; DALL-E answers URLs that this server serves
without a key at /dalle/... until `expire_image_urls()` (then 403, as Azure storage answers
an expired link).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    FakeToolCall,
    Fault,
    Received,
    count_words,
    new_id,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CONTENT_PARTS = {"text", "image_url", "input_audio", "file", "refusal"}
# fmt: off
CHAT_PARAMS = frozenset({
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
})
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# fmt: on

# The name rule for functions and json_schema response formats.
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
# openai-python's ImageURL.detail and ReasoningEffort.
IMAGE_DETAILS = ("auto", "low", "high", "original")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
DATA_URL = re.compile(r"data:(image/[a-zA-Z0-9.+-]+);base64,(.*)", re.DOTALL)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
UNSUPPORTED_IMAGE = (
    "You uploaded an unsupported image. Please make sure your image is below 20 MB in size and is of one "
    "the following formats: ['png', 'jpeg', 'gif', 'webp']."
)
DATA_URL_EXAMPLE = (
    "a base64-encoded data URL with an image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=')"
)

# status -> (type, code, message), as the real API words them.
ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests per min (RPM). Try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "server_is_overloaded", "The server is overloaded or not ready yet."),
}
RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "2ms",
}
JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def error(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# The other 429: out of credit. Gateways must NOT retry it: fake.fail(429, body=INSUFFICIENT_QUOTA).
INSUFFICIENT_QUOTA = error(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    code="insufficient_quota",
)


def tiny_png() -> bytes:
    """A valid 1x1 transparent PNG: every image the fakes make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00" + b"\x00" * 4)  # filter byte, one transparent pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


FAKE_PNG = tiny_png()
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")


@dataclass(frozen=True)
class ImageModel:
    sizes: tuple[str, ...]
    max_n: int
    edits: bool
    gpt: bool  # answers base64 and token usage (DALL-E: URLs, no usage)


IMAGE_MODELS = {
    "gpt-image-1": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1-mini": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1.5": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "dall-e-3": ImageModel(("1024x1024", "1792x1024", "1024x1792"), 1, edits=False, gpt=False),
    "dall-e-2": ImageModel(("256x256", "512x512", "1024x1024"), 10, edits=True, gpt=False),
}
# fmt: off
IMAGE_PARAMS = {
    "model", "prompt", "n", "size", "quality", "response_format", "output_format", "output_compression",
    "background", "moderation", "style", "user", "stream", "partial_images",
}
EDIT_PARAMS = {
    "image", "image[]", "mask", "model", "prompt", "n", "size", "quality", "response_format", "output_format",
    "output_compression", "background", "input_fidelity", "user", "stream", "partial_images",
}
# fmt: on
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp")
# The fake's token counts for gpt-image: per image made (gpt-image-1's 1024x1024 at medium
# quality) and per image uploaded to edit; the prompt's words are its text tokens.
IMAGE_OUTPUT_TOKENS = 1056
IMAGE_INPUT_TOKENS = 323
GPT_IMAGE_REFUSAL = (
    "Your request was rejected by the safety system. If you believe this is an error, contact us at "
    "help.openai.com and include the request ID if you have one."
)
DALLE_REFUSAL = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is "
    "not allowed by our safety system."
)
EXPIRED_LINK = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed '
    "to authenticate the request. Make sure the value of Authorization header is formed correctly including "
    "the signature.</Message><AuthenticationErrorDetail>Signed expiry time has expired</AuthenticationErrorDetail>"
    "</Error>"
)


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart body."""

    name: str
    filename: str
    content_type: str  # application/octet-stream when the part had no Content-Type
    data: bytes


@dataclass(frozen=True)
class ImageEdit:
    """One /images/edits request as the fake read it: its text fields and its file parts."""

    fields: dict[str, str]
    uploads: list[Upload]


class Invalid(Exception):
    """A 400 invalid_request_error, worded like the real one."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def wrong_type(param: str, expected: str, value: Any) -> Invalid:
    got = JSON_TYPES.get(type(value), "an unknown type")
    return Invalid(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param, "invalid_type")


def missing(param: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def mask(key: str) -> str:
    # The real message echoes the key masked; never put a whole secret in a body.
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "***"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def string_field(parent: dict[str, Any], key: str, where: str) -> str:
    if key not in parent:
        raise missing(f"{where}.{key}")
    if not isinstance(parent[key], str):
        raise wrong_type(f"{where}.{key}", "a string", parent[key])
    return parent[key]


def object_field(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in parent:
        raise missing(f"{where}.{key}")
    if not isinstance(parent[key], dict):
        raise wrong_type(f"{where}.{key}", "an object", parent[key])
    return parent[key]


def check_function_name(name: str, param: str) -> None:
    if not FUNCTION_NAME.fullmatch(name):
        raise Invalid(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            "'^[a-zA-Z0-9_-]{1,64}$'.",
            param,
            "invalid_value",
        )


def is_image(data: bytes) -> bool:
    """PNG, JPEG, GIF or WebP by their magic bytes: the real API decodes the image, not its label."""
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return webp or data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a"))


def check_data_url(url: str, param: str) -> None:
    match = DATA_URL.fullmatch(url)
    if match is None:
        raise Invalid(
            f"Invalid '{param}'. Expected a valid http(s) URL or {DATA_URL_EXAMPLE}, but got a value with an "
            "invalid format.",
            param,
            "invalid_value",
        )
    try:
        data = base64.b64decode(match[2], validate=True)
    except binascii.Error:
        raise Invalid(
            f"Invalid '{param}'. Expected {DATA_URL_EXAMPLE}, but got an invalid base64 value.", param, "invalid_value"
        ) from None
    if match[1] not in IMAGE_TYPES or not is_image(data):
        raise Invalid(UNSUPPORTED_IMAGE, None, "invalid_image_format")


def check_image_url(where: str, part: dict[str, Any]) -> None:
    image_url = object_field(part, "image_url", where)
    url = string_field(image_url, "url", f"{where}.image_url")
    detail = image_url.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise Invalid(
            f"Invalid value: '{detail}'. Supported values are: {quoted(IMAGE_DETAILS)}.",
            f"{where}.image_url.detail",
            "invalid_value",
        )
    if not url.startswith(("http://", "https://")):  # the real API downloads those itself
        check_data_url(url, f"{where}.image_url.url")


def check_content_part(where: str, index: int, role: str, part: Any) -> None:
    at = f"{where}.content[{index}]"
    if not isinstance(part, dict) or part.get("type") not in CONTENT_PARTS:
        raise Invalid(f"Invalid value for '{at}.type'.", f"{at}.type", "invalid_value")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise wrong_type(f"{at}.text", "a string", part.get("text"))
    if part["type"] == "image_url":
        if role != "user":
            raise Invalid(
                f"Invalid '{where}'. Image URLs are only allowed for messages with role 'user', but this message "
                f"with role '{role}' contains an image URL.",
                where,
                "invalid_value",
            )
        check_image_url(at, part)


MAX_CALL_ID = 40  # the API refuses longer tool call ids (string_above_max_length, seen in issue threads)


def check_tool_calls(where: str, calls: Any) -> None:
    """An assistant turn's calls, as the API takes them back: id, type "function", name and JSON text."""
    if not isinstance(calls, list):
        raise wrong_type(f"{where}.tool_calls", "an array", calls)
    if not calls:
        raise Invalid(
            f"Invalid '{where}.tool_calls': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            f"{where}.tool_calls",
            "empty_array",
        )
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict):
            raise wrong_type(at, "an object", call)
        call_id = string_field(call, "id", at)
        if len(call_id) > MAX_CALL_ID:
            raise Invalid(
                f"Invalid '{at}.id': string too long. Expected a string with maximum length {MAX_CALL_ID}, "
                f"but got a string with length {len(call_id)} instead.",
                f"{at}.id",
                "string_above_max_length",
            )
        if string_field(call, "type", at) != "function":  # the fake offers function tools only
            raise Invalid(f"Invalid value: '{call['type']}'. Supported values are: 'function'.", f"{at}.type")
        function = object_field(call, "function", at)
        string_field(function, "name", f"{at}.function")
        string_field(function, "arguments", f"{at}.function")  # JSON text, not an object


def check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise wrong_type(where, "an object", message)
    if "role" not in message:
        raise missing(f"{where}.role")
    role = message["role"]
    if role not in ROLES:
        raise Invalid(
            f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
            "'user', 'function', 'tool', and 'developer'.",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    if role == "assistant" and "tool_calls" in message:
        check_tool_calls(where, message["tool_calls"])
        if content is None:
            return  # a pure tool-call turn has no content
    if "content" not in message:
        raise missing(f"{where}.content")
    if not isinstance(content, str | list):
        raise wrong_type(f"{where}.content", "one of a string or array of objects", content)
    for i, part in enumerate(content if isinstance(content, list) else []):
        check_content_part(where, i, role, part)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise missing(f"{where}.tool_call_id")


def unanswered(index: int, call_ids: dict[str, None]) -> Invalid:
    return Invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(call_ids)}",
        f"messages.[{index}].role",
    )


def check_tool_answers(messages: list[dict[str, Any]]) -> None:
    """Tool messages answer the calls of the assistant message just before their run, each call once,
    and every call is answered before the conversation goes on: the real API refuses anything else."""
    open_calls: dict[str, None] = {}  # ids of the calls still waiting for their tool message
    caller = 0
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            if message["tool_call_id"] not in open_calls:
                raise Invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            del open_calls[message["tool_call_id"]]
            continue
        if open_calls:
            raise unanswered(caller, open_calls)
        if message["role"] == "assistant":
            open_calls = dict.fromkeys(call["id"] for call in message.get("tool_calls") or ())
            caller = index
    if open_calls:
        raise unanswered(caller, open_calls)


def check_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise Invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        check_message(index, message)
    check_tool_answers(messages)


def check_tool(where: str, tool: Any) -> str:
    """A function tool; returns its name."""
    if not isinstance(tool, dict):
        raise wrong_type(where, "an object", tool)
    if tool.get("type") != "function":  # the real API also has custom tools: the fake offers functions only
        raise Invalid(f"Invalid value: '{tool.get('type')}'. Supported values are: 'function'.", f"{where}.type")
    function = object_field(tool, "function", where)
    name = string_field(function, "name", f"{where}.function")
    check_function_name(name, f"{where}.function.name")
    if "description" in function:
        string_field(function, "description", f"{where}.function")
    if "parameters" in function:
        object_field(function, "parameters", f"{where}.function")  # a JSON Schema object
    check_bool(function, "strict", f"{where}.function.strict")
    return name


def check_tools(body: dict[str, Any]) -> list[str]:
    """The tools offered; returns their names."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    if not tools:
        raise Invalid(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "tools",
            "empty_array",
        )
    return [check_tool(f"tools[{index}]", tool) for index, tool in enumerate(tools)]


def check_tool_choice(body: dict[str, Any], names: list[str]) -> None:
    for param in ("tool_choice", "parallel_tool_calls"):
        if body.get(param) is not None and not names:
            raise Invalid(f"Invalid value for '{param}': '{param}' is only allowed when 'tools' are specified.", param)
    check_bool(body, "parallel_tool_calls")
    choice = body.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in TOOL_CHOICE_MODES):
        return
    if isinstance(choice, str):
        raise Invalid(
            f"Invalid value: '{choice}'. Supported values are: {quoted(TOOL_CHOICE_MODES)}.",
            "tool_choice",
            "invalid_value",
        )
    if not isinstance(choice, dict):
        raise wrong_type("tool_choice", "one of a string or object", choice)
    if choice.get("type") != "function":
        raise Invalid(f"Invalid value: '{choice.get('type')}'. Supported values are: 'function'.", "tool_choice.type")
    name = string_field(object_field(choice, "function", "tool_choice"), "name", "tool_choice.function")
    if name not in names:
        raise Invalid(f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.", "tool_choice")


def mentions_json(messages: list[dict[str, Any]]) -> bool:
    return any("json" in text_of(message.get("content")).lower() for message in messages)


def check_json_schema(spec: dict[str, Any]) -> None:
    where = "response_format.json_schema"
    name = string_field(spec, "name", where)
    check_function_name(name, f"{where}.name")
    schema = object_field(spec, "schema", where)
    if schema.get("type") != "object":
        raise Invalid(
            f"Invalid schema for response_format '{name}': schema must be a JSON Schema of 'type: \"object\"', "
            f"got 'type: \"{schema.get('type')}\"'.",
            "response_format",
            "invalid_value",
        )
    check_bool(spec, "strict", f"{where}.strict")


def check_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    if not isinstance(response_format, dict):
        raise wrong_type("response_format", "an object", response_format)
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMATS:
        raise Invalid(
            f"Invalid value: '{kind}'. Supported values are: {quoted(RESPONSE_FORMATS)}.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "json_object" and not mentions_json(body["messages"]):
        raise Invalid(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "messages",
        )
    if kind == "json_schema":
        check_json_schema(object_field(response_format, "json_schema", "response_format"))


def check_bool(parent: dict[str, Any], key: str, param: str | None = None) -> None:
    value = parent.get(key)
    if value is not None and not isinstance(value, bool):
        raise wrong_type(param or key, "a boolean", value)


def check_number(body: dict[str, Any], name: str, integer: bool, low: int, high: int | None = None) -> None:
    value = body.get(name)
    kind = "integer" if integer else "decimal"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise wrong_type(name, f"an {kind}" if integer else f"a {kind}", value)
    if value < low:
        raise Invalid(
            f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low}, but got {value} instead.",
            name,
            f"{kind}_below_min_value",
        )
    if high is not None and value > high:
        raise Invalid(
            f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high}, but got {value} instead.",
            name,
            f"{kind}_above_max_value",
        )


def quoted(values: Any) -> str:
    """'a', 'b', and 'c': how the API lists the values it supports."""
    items = [f"'{value}'" for value in values]
    return ", ".join(items[:-1]) + f", and {items[-1]}" if len(items) > 1 else items[0]


def read_form(raw: bytes, content_type: str) -> ImageEdit:
    """Split a multipart/form-data body by hand: aiohttp's reader needs the unread stream, which the
    request log has already read, and the email parser may touch binary file bytes."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise Invalid(f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data.")
    fields, uploads = {}, []
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = BytesHeaderParser().parsebytes(head)
        name, filename, data = (
            str(headers.get_param("name", header="content-disposition")),
            headers.get_filename(),
            body,
        )
        data = body.removesuffix(b"\r\n")
        if filename is None:
            fields[name] = data.decode()
        else:
            kind = headers.get_content_type() if "content-type" in headers else "application/octet-stream"
            uploads.append(Upload(name, filename, kind, data))
    return ImageEdit(fields, uploads)


def check_image_params(params: dict[str, Any], allowed: set[str]) -> tuple[str, ImageModel, int]:
    """Validate a generation's (or an edit's) parameters; returns (model name, model, n)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if "prompt" not in params:
        raise missing("prompt")
    if not isinstance(params["prompt"], str) or not params["prompt"].strip():
        raise Invalid("Invalid 'prompt': empty string. Expected a string with minimum length 1.", "prompt")
    name = params.get("model") or "dall-e-2"  # the API's default model
    model = IMAGE_MODELS.get(name)
    if model is None:
        raise Invalid(
            f"Invalid value: '{name}'. Supported values are: {quoted(IMAGE_MODELS)}.", "model", "invalid_value"
        )
    check_number(params, "n", integer=True, low=1, high=10)
    n = params.get("n") or 1
    if n > model.max_n:
        raise Invalid("You must provide n=1 for this model.")
    size = params.get("size")
    if size is not None and size not in model.sizes:
        raise Invalid(f"Invalid value: '{size}'. Supported values are: {quoted(model.sizes)}.", "size", "invalid_value")
    only_for_other = "response_format" if model.gpt else "output_format"  # gpt-image always answers base64
    if only_for_other in params:
        raise Invalid(f"Unknown parameter: '{only_for_other}'.", only_for_other, "unknown_parameter")
    return name, model, n


def edit_params(edit: ImageEdit) -> dict[str, Any]:
    """An edit's parameters as a generation's: form values are strings, n is a number."""
    params: dict[str, Any] = dict(edit.fields) | {upload.name: upload for upload in edit.uploads}
    if "n" in params:
        if not params["n"].isdigit():
            raise wrong_type("n", "an integer", params["n"])
        params["n"] = int(params["n"])
    return params


def check_edit_images(name: str, model: ImageModel, uploads: list[Upload]) -> None:
    if not model.edits:
        raise Invalid(f"Invalid value: '{name}'. Value must be one of the models that edit images.", "model")
    images = [upload for upload in uploads if upload.name in ("image", "image[]")]
    if not images:
        raise missing("image")
    if not model.gpt and (len(images) != 1 or images[0].name != "image"):
        raise Invalid("dall-e-2 takes exactly one image, in the 'image' field.", "image")
    for upload in images:
        allowed = UPLOAD_TYPES if model.gpt else ("image/png",)
        if upload.content_type not in allowed:
            raise Invalid(
                f"Invalid file '{upload.name}': unsupported mimetype ('{upload.content_type}'). "
                f"Supported file formats are {quoted(allowed)}.",
                upload.name,
                "unsupported_file_mimetype",
            )


def check_sampling(body: dict[str, Any]) -> None:
    check_number(body, "max_tokens", integer=True, low=1)
    check_number(body, "max_completion_tokens", integer=True, low=1)
    check_number(body, "temperature", integer=False, low=0, high=2)
    check_number(body, "presence_penalty", integer=False, low=-2, high=2)
    check_number(body, "frequency_penalty", integer=False, low=-2, high=2)
    check_number(body, "n", integer=True, low=1, high=128)
    check_number(body, "seed", integer=True, low=-(2**63))
    check_number(body, "top_k", integer=True, low=-1)  # vLLM's (-1: off); OpenAI refuses it as unknown
    check_bool(body, "logprobs")
    check_number(body, "top_logprobs", integer=True, low=0, high=20)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise Invalid(
            "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is true.", "top_logprobs"
        )
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise wrong_type("user", "a string", body["user"])
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise Invalid(
            f"Invalid value: '{effort}'. Supported values are: {quoted(REASONING_EFFORTS)}.",
            "reasoning_effort",
            "invalid_value",
        )


def check_stream_options(body: dict[str, Any]) -> None:
    check_bool(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if body.get("stream") is not True:
            raise Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        if not isinstance(options, dict):
            raise wrong_type("stream_options", "an object", options)
        check_bool(options, "include_usage", "stream_options.include_usage")


def check_chat(body: Any, allowed: frozenset[str] = CHAT_PARAMS) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(
            "We could not parse the JSON body of your request. The OpenAI API "
            "expects a JSON payload, but what was sent was not valid JSON."
        )
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("you must provide a model parameter")
    check_messages(body)
    check_tool_choice(body, check_tools(body))
    check_response_format(body)
    check_sampling(body)
    check_stream_options(body)
    return body


def offered_functions(body: dict[str, Any]) -> set[str]:
    """The functions the model may call: none under tool_choice "none", only the named one when one is named."""
    choice = body.get("tool_choice")
    if choice == "none":
        return set()
    if isinstance(choice, dict):
        return {choice["function"]["name"]}
    return {tool["function"]["name"] for tool in body.get("tools") or ()}


def unoffered_call(body: dict[str, Any], answer: Answer) -> Invalid | None:
    """A scripted call the request gives the model no way to make: the gateway lost the tools (or the
    choice) on the way, and a real model could not have answered so."""
    offered = offered_functions(body)
    names = [call.name for call in answer.tool_calls if call.name not in offered]
    if not names:
        return None
    return Invalid(
        f"FakeOpenAI: the scripted answer calls {', '.join(names)}, but the request offers only "
        f"{sorted(offered) or 'no functions'} (tools and tool_choice).",
        "tools",
    )


@dataclass(frozen=True)
class Choices:
    """What a request asks of its answer: how many choices, and log probabilities (top: how many
    alternatives per token; None: no log probabilities)."""

    n: int
    top: int | None

    @classmethod
    def asked(cls, body: dict[str, Any]) -> Choices:
        top = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        return cls(body.get("n") or 1, top)


def token_logprob(token: str, top: int) -> dict[str, Any]:
    """The fake's log probabilities: the answer's own token is the likeliest, made-up ones follow."""
    alternatives = [(token, -0.01)] + [(f" alt{rank}", -1.5 * rank) for rank in range(1, top)]
    return {
        "token": token,
        "logprob": -0.01,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in alternatives[:top]],
    }


def logprobs_of(pieces: list[str], top: int | None) -> dict[str, Any] | None:
    if top is None:
        return None
    return {"content": [token_logprob(piece, top) for piece in pieces], "refusal": None}


def wire_tool_calls(calls: tuple[FakeToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in calls
    ]


def streamed_tool_calls(calls: tuple[FakeToolCall, ...]) -> list[dict[str, Any]]:
    """The deltas of each call as the real API streams them: first its index, id, type and name with
    empty arguments, then the arguments' JSON text in fragments that carry only the index."""
    deltas = []
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for fragment in re.findall(r"\w+|\W+", json.dumps(call.arguments)):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def completion_choice(index: int, answer: Answer, top: int | None) -> dict[str, Any]:
    # content is null in an answer that only calls tools.
    content = (answer.text or None) if answer.tool_calls else answer.text
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if answer.tool_calls:
        message["tool_calls"] = wire_tool_calls(answer.tool_calls)
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs_of(answer.pieces, top),
        "finish_reason": answer.finish_reason,
    }


def usage(answer: Answer, n: int = 1) -> dict[str, Any]:
    # prompt_tokens includes the cached ones, completion_tokens the reasoning ones; n choices
    # read the prompt once and each write their own answer.
    counts = answer.counts
    completion = (answer.output_tokens + counts.reasoning) * n
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": counts.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": counts.reasoning * n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class FakeOpenAI(FakeProvider):
    provider = "openai"
    default_api_key = "sk-test-openai"
    url_prefix = "/v1"  # OPENAI_BASE_URL includes /v1
    stop_reason = "stop"
    length_reason = "length"
    default_flag_terms = frozenset({"kill"})
    extra_params: frozenset[str] = frozenset()  # chat parameters beyond OpenAI's (compatible servers)

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        # Moderation flags an input containing any of these (case-insensitive substring).
        self.flag_terms: set[str] = set(self.default_flag_terms)
        self._images_lock = threading.Lock()
        self._edits: list[ImageEdit] = []
        self._served_images: dict[str, bytes] = {}  # DALL-E's URLs: file name -> bytes

    def reset(self) -> None:
        super().reset()
        self.flag_terms = set(self.default_flag_terms)
        with self._images_lock:
            self._edits.clear()
            self._served_images.clear()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.endpoint(self._chat)),
            web.post("/v1/moderations", self.endpoint(self._moderate)),
            web.post("/v1/images/generations", self.endpoint(self._generate_images)),
            web.post("/v1/images/edits", self.endpoint(self._edit_images)),
            web.get("/dalle/private/{file}", self._serve_image),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    # ---- images: what the test sees and scripts ------------------------------------------

    @property
    def image_edits(self) -> list[ImageEdit]:
        """Every /images/edits request, parsed (the request log's `json` is None for multipart)."""
        with self._images_lock:
            return list(self._edits)

    def block_image(self, times: int = 1, path: str | None = "/images/") -> None:
        """The safety system refuses the next image requests: gpt-image's moderation_blocked,
        DALL-E's content_policy_violation (both 400)."""
        self._add(Fault("block", times, path))

    def expire_image_urls(self) -> None:
        """The DALL-E URLs answered so far stop working (they expire upstream after an hour)."""
        with self._images_lock:
            self._served_images.clear()

    # ---- errors and auth ---------------------------------------------------------

    def headers(self, status: int = 200) -> dict[str, str]:
        headers = {"x-request-id": new_id("req_")}
        if status in (200, 429):
            remaining = "0" if status == 429 else "499"
            headers |= RATE_LIMIT_HEADERS | {"x-ratelimit-remaining-requests": remaining}
        return headers

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        if body is None:
            fallback = ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
            kind, code, message = ERRORS.get(status, fallback)
            body = error(message, kind, code=code)
        return web.json_response(body, status=status, headers={**self.headers(status), **(headers or {})})

    def invalid(self, exc: Invalid) -> web.Response:
        return self.error_response(400, error(str(exc), param=exc.param, code=exc.code))

    def auth_error(self, received: Received) -> web.Response | None:
        auth = received.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                "YOUR_KEY)."
            )
            code = None
        elif auth[7:].strip() != self.api_key:
            message = f"Incorrect API key provided: {mask(auth[7:].strip())}."
            code = "invalid_api_key"
        else:
            return None
        return self.error_response(401, error(message, code=code))

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.error_response(404, error(f"Invalid URL ({request.method} {request.path})"))

    # ---- chat completions ------------------------------------------------------------

    async def _chat(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        try:
            body = check_chat(received.json, CHAT_PARAMS | self.extra_params)
        except Invalid as exc:
            return self.invalid(exc)
        words = sum(count_words(text_of(m.get("content"))) for m in body["messages"])
        answer = self.answer(words, body.get("max_completion_tokens") or body.get("max_tokens"))
        refusal = unoffered_call(body, answer)
        if refusal is not None:
            return self.invalid(refusal)
        envelope = {
            "id": new_id("chatcmpl-"),
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        asked = Choices.asked(body)
        if not body.get("stream"):
            completion = {
                **envelope,
                "object": "chat.completion",
                "choices": [completion_choice(index, answer, asked.top) for index in range(asked.n)],
                "usage": usage(answer, asked.n),
                "service_tier": "default",
            }
            return web.json_response(completion, headers=self.headers())
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        return await self._stream(request, envelope, answer, fault, include_usage, asked)

    async def _stream(
        self,
        request: web.Request,
        envelope: dict[str, Any],
        answer: Answer,
        fault: Fault | None,
        include_usage: bool,
        asked: Choices,
    ) -> web.StreamResponse:
        def chunk(delta: dict[str, Any], index: int, finish: str | None = None, logprobs: Any = None) -> str:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            payload = {**envelope, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                payload["usage"] = None  # present but null on every chunk but the last
            return sse(payload)

        async def send_pieces(pieces: list[str]) -> None:
            for piece in pieces:
                for index in range(asked.n):  # n > 1 streams its choices interleaved
                    logprobs = logprobs_of([piece], asked.top)
                    await self.send(response, chunk({"content": piece}, index, logprobs=logprobs))

        response = await self.open_stream(request, self.headers())
        opening = {
            "role": "assistant",
            "content": None if answer.tool_calls and not answer.text else "",
            "refusal": None,
        }
        for index in range(asked.n):
            await self.send(response, chunk(opening, index))
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"id": "chatcmpl-broken", "choices": [{"delta\n\n')
            await self.send(response, "data: [DONE]\n\n")
            return response
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        await send_pieces(answer.pieces[:limit])
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            await send_pieces(answer.pieces[limit:])
        if fault is not None and fault.kind == "cut":
            self.cut(request)
            return response
        if fault is not None and fault.kind == "stream_error":
            await self.send(response, sse(error(ERRORS[500][2], "server_error")))
            return response
        for index in range(asked.n):
            for delta in streamed_tool_calls(answer.tool_calls):
                await self.send(response, chunk(delta, index))
            await self.send(response, chunk({}, index, answer.finish_reason))
        if include_usage:
            final = {**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage(answer, asked.n)}
            await self.send(response, sse(final))
        await self.send(response, "data: [DONE]\n\n")
        return response

    # ---- images ------------------------------------------------------------------------

    async def _generate_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        if not isinstance(received.json, dict):
            return self.invalid(Invalid("We could not parse the JSON body of your request."))
        try:
            name, model, n = check_image_params(received.json, IMAGE_PARAMS)
        except Invalid as exc:
            return self.invalid(exc)
        return self._images(received.json, name, model, n, fault, uploaded=0)

    async def _edit_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        try:
            edit = read_form(await request.read(), request.headers.get("Content-Type", ""))
            params = edit_params(edit)
            name, model, n = check_image_params(params, EDIT_PARAMS)
            check_edit_images(name, model, edit.uploads)
        except Invalid as exc:
            return self.invalid(exc)
        with self._images_lock:
            self._edits.append(edit)
        return self._images(params, name, model, n, fault, uploaded=len(edit.uploads))

    def _images(
        self, params: dict[str, Any], name: str, model: ImageModel, n: int, fault: Fault | None, uploaded: int
    ) -> web.Response:
        if fault is not None and fault.kind == "block":
            if model.gpt:
                return self.error_response(
                    400, error(GPT_IMAGE_REFUSAL, "image_generation_user_error", code="moderation_blocked")
                )
            return self.error_response(400, error(DALLE_REFUSAL, code="content_policy_violation"))
        answer: dict[str, Any] = {"created": int(time.time())}
        if model.gpt:
            answer |= self._gpt_image_answer(params, n, uploaded)
        else:
            encoded = params.get("response_format") == "b64_json"
            revised = {"revised_prompt": params["prompt"]} if name == "dall-e-3" else {}
            answer["data"] = [self._dalle_image(encoded) | revised for _ in range(n)]
        return web.json_response(answer, headers=self.headers())

    @staticmethod
    def _gpt_image_answer(params: dict[str, Any], n: int, uploaded: int) -> dict[str, Any]:
        text_tokens, image_tokens = count_words(params["prompt"]), IMAGE_INPUT_TOKENS * uploaded
        output_tokens = IMAGE_OUTPUT_TOKENS * n
        return {
            "background": "opaque",
            "data": [{"b64_json": base64.b64encode(FAKE_PNG).decode()} for _ in range(n)],
            "output_format": params.get("output_format") or "png",
            "quality": "medium",
            "size": "1024x1024" if params.get("size") in (None, "auto") else params["size"],
            "usage": {
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + image_tokens + output_tokens,
            },
        }

    def _dalle_image(self, encoded: bool) -> dict[str, Any]:
        if encoded:
            return {"b64_json": base64.b64encode(FAKE_PNG).decode()}
        file = new_id("img-") + ".png"
        with self._images_lock:
            self._served_images[file] = FAKE_PNG
        # Signed like Azure storage's links: no key needed, only the signature in the query.
        return {"url": f"http://127.0.0.1:{self.port}/dalle/private/{file}?se=2099-01-01&sp=r&sig=fake"}

    async def _serve_image(self, request: web.Request) -> web.Response:
        await self._record(request)
        with self._images_lock:
            data = self._served_images.get(request.match_info["file"])
        if data is None:
            return web.Response(status=403, text=EXPIRED_LINK, content_type="application/xml")
        return web.Response(body=data, content_type="image/png")

    # ---- moderations ---------------------------------------------------------------

    async def _moderate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        body = received.json
        try:
            inputs = self._moderation_inputs(body)
        except Invalid as exc:
            return self.invalid(exc)
        terms = [t.lower() for t in list(self.flag_terms)]
        results = [self._moderation_result(text, terms) for text in inputs]
        model = body.get("model") or "omni-moderation-latest"
        return web.json_response({"id": new_id("modr-"), "model": model, "results": results}, headers=self.headers())

    @staticmethod
    def _moderation_inputs(body: Any) -> list[str]:
        if not isinstance(body, dict) or "input" not in body:
            raise missing("input")
        unknown = sorted(set(body) - {"input", "model"})
        if unknown:
            raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
        value = body["input"]
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value  # one result per string
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [text_of(value)]  # multimodal parts: one result for the whole input
        raise wrong_type("input", "a string or array", value)

    @staticmethod
    def _moderation_result(text: str, terms: list[str]) -> dict[str, Any]:
        flagged = any(term in text.lower() for term in terms)
        categories = {name: flagged and name == "violence" for name in MODERATION_CATEGORIES}
        scores = {name: 0.97 if hit else 0.0001 for name, hit in categories.items()}
        return {
            "flagged": flagged,
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
        }


class FakeOpenAICompatible(FakeOpenAI):
    """An OpenAI-compatible server such as vLLM: the same protocol, plus the sampling parameters vLLM
    adds to it (top_k among them), which OpenAI itself refuses."""

    provider = "openai_compatible"
    default_api_key = "sk-test-compatible"
    extra_params = frozenset({"top_k", "min_p", "repetition_penalty"})
