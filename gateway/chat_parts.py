"""The pieces of a chat request in OpenAI's shapes, which both Pulse's own format and OpenAI's take:
messages with text and image parts, assistant tool calls and tool results, tool definitions, the
tool choice and the response format. Each DRF field checks its piece and turns it into Pulse's
normalised types (providers.clients.base); an error names the exact param, as a dotted path.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from rest_framework import serializers

from providers.clients.base import ChatImage, ChatMessage, ResponseFormat, Tool, ToolCall, ToolChoice

ROLES = ("system", "developer", "user", "assistant", "tool")
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_DETAILS = ("auto", "low", "high")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)
MAX_TOOLS = 128


def invalid(path: list[str | int], message: str) -> serializers.ValidationError:
    """An error at a nested path (first_validation_error turns it into "a.0.b")."""
    detail: Any = [message]
    for key in reversed(path):
        detail = {str(key): detail}
    return serializers.ValidationError(detail)


def _object(value: Any, path: list[str | int]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object")
    return value


def _string(value: Any, path: list[str | int], *, blank: bool = True) -> str:
    if not isinstance(value, str) or (not blank and not value):
        raise invalid(path, "must be a non-empty string" if not blank else "must be a string")
    return value


# ---------------------------------------------------------------- content
def image_of(part: dict[str, Any], path: list[str | int]) -> ChatImage:
    """An image_url part: an http(s) URL (passed on, or fetched for providers that need bytes) or a
    data: URL (decoded here, so a bad one is refused before any provider sees it)."""
    image_url = part.get("image_url")
    if isinstance(image_url, str):  # a shorthand some clients send
        image_url = {"url": image_url}
    image_url = _object(image_url, [*path, "image_url"])
    url = _string(image_url.get("url"), [*path, "image_url", "url"], blank=False)
    detail = image_url.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise invalid([*path, "image_url", "detail"], f"must be one of {', '.join(IMAGE_DETAILS)}")
    if url.startswith("data:"):
        return _data_image(url, detail, [*path, "image_url", "url"])
    if not url.startswith(("https://", "http://")):
        raise invalid([*path, "image_url", "url"], "must be an http(s) URL or a data:image/...;base64, URL")
    return ChatImage(url=url, detail=detail)


def _data_image(url: str, detail: str | None, path: list[str | int]) -> ChatImage:
    match = DATA_URL.match(url)
    if match is None:
        raise invalid(path, "a data URL must be data:<image type>;base64,<data>")
    content_type = match["type"].lower()
    if content_type not in IMAGE_TYPES:
        raise invalid(path, f"images must be one of {', '.join(sorted(IMAGE_TYPES))}, not {content_type}")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid(path, "the data URL is not valid base64") from None
    if not data:
        raise invalid(path, "the image is empty")
    return ChatImage(content_type=content_type, data=data, detail=detail)


def content_of(value: Any, path: list[str | int], *, images: bool) -> tuple[str, tuple[str | ChatImage, ...]]:
    """(text, parts) of a message's content: a string, or a list of text (and, where allowed, image)
    parts. parts is () unless there is an image: the text then says it all."""
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, list):
        raise invalid(path, "must be a string or a list of content parts")
    parts: list[str | ChatImage] = []
    for index, raw in enumerate(value):
        part = _object(raw, [*path, index])
        kind = part.get("type")
        if kind in ("text", "refusal"):
            field = "text" if kind == "text" else "refusal"
            parts.append(_string(part.get(field), [*path, index, field]))
        elif kind == "image_url" and images:
            parts.append(image_of(part, [*path, index]))
        else:
            allowed = "text and image_url" if images else "text"
            raise invalid([*path, index, "type"], f"{kind!r} parts are not supported here (only {allowed})")
    text = "".join(part for part in parts if isinstance(part, str))
    has_image = any(isinstance(part, ChatImage) for part in parts)
    return text, (tuple(parts) if has_image else ())


# ---------------------------------------------------------------- tool calls
def arguments_of(value: Any, path: list[str | int]) -> str:
    """A call's arguments: JSON text holding an object (the providers that take an object get it parsed)."""
    text = _string(value, path)
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        raise invalid(path, "must be a JSON object, as text") from None
    if not isinstance(parsed, dict):
        raise invalid(path, "must be a JSON object, as text")
    return text or "{}"


def tool_calls_of(value: Any, path: list[str | int]) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(path, "must be a list of tool calls")
    calls = []
    for index, raw in enumerate(value):
        call = _object(raw, [*path, index])
        if call.get("type", "function") != "function":
            raise invalid([*path, index, "type"], "only function tool calls are supported")
        function = _object(call.get("function"), [*path, index, "function"])
        calls.append(
            ToolCall(
                id=_string(call.get("id"), [*path, index, "id"], blank=False),
                name=_string(function.get("name"), [*path, index, "function", "name"], blank=False),
                arguments=arguments_of(function.get("arguments", "{}"), [*path, index, "function", "arguments"]),
            )
        )
    return tuple(calls)


# ---------------------------------------------------------------- messages
class Messages(serializers.Field):
    """The conversation, in OpenAI's message shapes, as ChatMessages (developer is system)."""

    def to_internal_value(self, data: Any) -> tuple[ChatMessage, ...]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("must be a non-empty list of messages")
        messages = tuple(self.message(raw, index) for index, raw in enumerate(data))
        check_conversation(messages)
        return messages

    def to_representation(self, value: Any) -> Any:
        return value

    @staticmethod
    def message(raw: Any, index: int) -> ChatMessage:
        message = _object(raw, [index])
        role = message.get("role")
        if role not in ROLES:
            raise invalid([index, "role"], f"must be one of {', '.join(ROLES)}")
        if role != "assistant" and "content" not in message:
            raise invalid([index, "content"], "This field is required.")
        text, parts = content_of(message.get("content"), [index, "content"], images=role == "user")
        if role == "tool":
            call_id = _string(message.get("tool_call_id"), [index, "tool_call_id"], blank=False)
            return ChatMessage("tool", text, tool_call_id=call_id)
        calls = tool_calls_of(message.get("tool_calls"), [index, "tool_calls"]) if role == "assistant" else ()
        if role == "assistant" and message.get("content") is None and not calls:
            raise invalid([index, "content"], "is required unless the message has tool_calls")
        return ChatMessage("system" if role == "developer" else role, text, parts, tool_calls=calls)


def check_conversation(messages: tuple[ChatMessage, ...]) -> None:
    """A conversation providers will take: a turn besides system text, and every tool result answering
    a call an earlier assistant turn made."""
    if all(message.role == "system" for message in messages):
        raise serializers.ValidationError("at least one user or assistant message is required")
    called: set[str] = set()
    for index, message in enumerate(messages):
        called.update(call.id for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise invalid(
                [index, "tool_call_id"], f"answers no tool call of an earlier assistant message: {message.tool_call_id}"
            )


# ---------------------------------------------------------------- tools
class Tools(serializers.Field):
    def to_internal_value(self, data: Any) -> tuple[Tool, ...]:
        if not isinstance(data, list) or len(data) > MAX_TOOLS:
            raise serializers.ValidationError(f"must be a list of at most {MAX_TOOLS} tools")
        tools = tuple(self.tool(raw, index) for index, raw in enumerate(data))
        names = [tool.name for tool in tools]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise invalid([index, "function", "name"], f"two tools are named {name!r}")
        return tools

    def to_representation(self, value: Any) -> Any:
        return value

    @staticmethod
    def tool(raw: Any, index: int) -> Tool:
        tool = _object(raw, [index])
        if tool.get("type") != "function":
            raise invalid([index, "type"], "only function tools are supported")
        function = _object(tool.get("function"), [index, "function"])
        name = _string(function.get("name"), [index, "function", "name"], blank=False)
        if not FUNCTION_NAME.match(name):
            raise invalid([index, "function", "name"], "must be 1-64 letters, digits, underscores or dashes")
        parameters = function.get("parameters")
        if parameters is not None:
            parameters = _object(parameters, [index, "function", "parameters"])
            if parameters.get("type", "object") != "object":
                raise invalid([index, "function", "parameters", "type"], "a function's parameters must be an object")
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid([index, "function", "strict"], "must be a boolean")
        description = _string(function.get("description", ""), [index, "function", "description"])
        return Tool(name, description, parameters, bool(strict))


class ToolChoiceField(serializers.Field):
    def to_internal_value(self, data: Any) -> ToolChoice:
        if data in ("auto", "none", "required"):
            return ToolChoice(data)
        if isinstance(data, dict) and data.get("type") == "function":
            function = _object(data.get("function"), ["function"])
            return ToolChoice("tool", _string(function.get("name"), ["function", "name"], blank=False))
        raise serializers.ValidationError('must be "auto", "none", "required" or {"type": "function", ...}')

    def to_representation(self, value: Any) -> Any:
        return value


class ResponseFormatField(serializers.Field):
    """text (the default: None), json_object, or json_schema with a named object schema."""

    def to_internal_value(self, data: Any) -> ResponseFormat | None:
        kind = _object(data, []).get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return ResponseFormat("json_object")
        if kind != "json_schema":
            raise invalid(["type"], 'must be "text", "json_object" or "json_schema"')
        spec = _object(data.get("json_schema"), ["json_schema"])
        name = _string(spec.get("name"), ["json_schema", "name"], blank=False)
        if not FUNCTION_NAME.match(name):
            raise invalid(["json_schema", "name"], "must be 1-64 letters, digits, underscores or dashes")
        schema = _object(spec.get("schema", {"type": "object"}), ["json_schema", "schema"])
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid(["json_schema", "strict"], "must be a boolean")
        return ResponseFormat("json_schema", schema, name, bool(strict))

    def to_representation(self, value: Any) -> Any:
        return value


def check_tool_choice(tools: tuple[Tool, ...], choice: ToolChoice | None) -> None:
    if choice is None:
        return
    if not tools and choice.mode != "none":
        raise invalid(["tool_choice"], "needs tools: there is nothing to call")
    if choice.mode == "tool" and choice.name not in {tool.name for tool in tools}:
        raise invalid(["tool_choice", "function", "name"], f"names no tool in tools: {choice.name}")
