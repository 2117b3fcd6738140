"""What the fake OpenAI API checks of a chat completion request, as the real API checks it.

check_chat refuses unknown arguments, bad types and values, and stream_options without stream; it
checks messages (roles, content parts, image URLs and data URLs by their bytes), the tool calls of
assistant turns and the tool messages that must answer them, tools and tool_choice, response
formats, sampling and log probability settings. Each refusal is an Invalid worded like the API's.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .common import Invalid, check_bool, check_number, missing, object_field, quoted, string_field, text_of, wrong_type

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
