"""Anthropic content blocks and turns, parsed into ChatMessages: the `messages` and `system` fields.

Text, base64 and URL images, tool_use, tool_result (with is_error) and signed or redacted thinking
blocks become the normalised types of providers.clients.base. A user turn's tool results become tool
messages ahead of the rest, which is split after each cache breakpoint; an assistant turn is one
message. The small checks here (an object, a string, only known fields) name the path of what they
refuse, and request.py uses them for the other fields.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from rest_framework import serializers

from gateway.chat_parts import IMAGE_TYPES, invalid
from providers.clients.base import ChatImage, ChatMessage, Reasoning, ToolCall

Path = list[str | int]
CACHE_TTLS = ("5m", "1h")


# ---------------------------------------------------------------- small checks
def _object(value: Any, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object")
    return value


def _string(value: Any, path: Path) -> str:
    if not isinstance(value, str):
        raise invalid(path, "must be a string")
    return value


def _only(value: dict[str, Any], fields: frozenset[str], path: Path) -> None:
    """Refuse a field this object does not have, naming it, as the API does."""
    for name in value:
        if name not in fields:
            raise invalid([*path, name], "is not a field Pulse knows here (check its spelling)")


def cache_control_of(block: dict[str, Any], path: Path) -> dict[str, Any] | None:
    return cache_control_value(block.get("cache_control"), [*path, "cache_control"])


def cache_control_value(value: Any, path: Path) -> dict[str, Any] | None:
    if value is None:
        return None
    control = _object(value, path)
    if control.get("type") != "ephemeral" or control.get("ttl", "5m") not in CACHE_TTLS:
        raise invalid(path, 'must be {"type": "ephemeral"} with an optional ttl of 5m or 1h')
    return control


def joined(texts: list[str]) -> str:
    # Separate blocks stay separate lines for providers that take one string (and for moderation).
    return "\n".join(text for text in texts if text)


# ---------------------------------------------------------------- content blocks
TEXT_FIELDS = frozenset({"type", "text", "cache_control", "citations"})
IMAGE_FIELDS = frozenset({"type", "source", "cache_control"})
TOOL_USE_FIELDS = frozenset({"type", "id", "name", "input", "cache_control"})
TOOL_RESULT_FIELDS = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
THINKING_FIELDS = frozenset({"type", "thinking", "signature", "cache_control"})
REDACTED_FIELDS = frozenset({"type", "data", "cache_control"})


def text_of(block: dict[str, Any], path: Path) -> str:
    _only(block, TEXT_FIELDS, path)
    if block.get("citations"):
        raise invalid([*path, "citations"], "citations are not supported by this gateway")
    return _string(block.get("text"), [*path, "text"])


def image_of(block: dict[str, Any], path: Path) -> ChatImage:
    """A base64 image (decoded here, so a bad one is refused before any provider sees it) or an
    http(s) URL (passed on, or fetched by Pulse for providers that need the bytes)."""
    _only(block, IMAGE_FIELDS, path)
    at = [*path, "source"]
    source = _object(block.get("source"), at)
    if source.get("type") == "url":
        url = _string(source.get("url"), [*at, "url"])
        if not url.startswith(("https://", "http://")):
            raise invalid([*at, "url"], "must be an http(s) URL")
        return ChatImage(url=url)
    if source.get("type") != "base64":
        raise invalid([*at, "type"], 'must be "base64" or "url"')
    media_type = source.get("media_type")
    if media_type not in IMAGE_TYPES:
        raise invalid([*at, "media_type"], f"must be one of {', '.join(sorted(IMAGE_TYPES))}")
    try:
        data = base64.b64decode(_string(source.get("data"), [*at, "data"]), validate=True)
    except (binascii.Error, ValueError):
        raise invalid([*at, "data"], "is not valid base64") from None
    if not data:
        raise invalid([*at, "data"], "the image is empty")
    return ChatImage(content_type=media_type, data=data)


def piece_of(block: dict[str, Any], path: Path) -> str | ChatImage:
    """A text or image block: what user turns and tool results hold."""
    kind = block.get("type")
    if kind == "text":
        return text_of(block, path)
    if kind == "image":
        return image_of(block, path)
    raise invalid([*path, "type"], f"{kind!r} blocks are not supported here (only text and image)")


def content_message(role: str, pieces: list[str | ChatImage], **fields: Any) -> ChatMessage:
    """Text and images as one message: parts keep the blocks apart when there is more than one."""
    text = joined([piece for piece in pieces if isinstance(piece, str)])
    parts = tuple(pieces) if len(pieces) > 1 or any(isinstance(p, ChatImage) for p in pieces) else ()
    return ChatMessage(role, text, parts, **fields)


def tool_result_of(block: dict[str, Any], path: Path, called: set[str]) -> ChatMessage:
    _only(block, TOOL_RESULT_FIELDS, path)
    call_id = _string(block.get("tool_use_id"), [*path, "tool_use_id"])
    if call_id not in called:
        raise invalid([*path, "tool_use_id"], f"answers no tool_use of an earlier assistant message: {call_id}")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise invalid([*path, "is_error"], "must be a boolean")
    content, cache_control = block.get("content"), cache_control_of(block, path)
    pieces: list[str | ChatImage] = []
    if isinstance(content, str):
        pieces = [content]
    elif isinstance(content, list):
        for index, raw in enumerate(content):
            inner = _object(raw, [*path, "content", index])
            pieces.append(piece_of(inner, [*path, "content", index]))
            cache_control = cache_control_of(inner, [*path, "content", index]) or cache_control
    elif content is not None:
        raise invalid([*path, "content"], "must be a string or a list of text and image blocks")
    return content_message("tool", pieces, tool_call_id=call_id, is_error=is_error, cache_control=cache_control)


def tool_use_of(block: dict[str, Any], path: Path) -> ToolCall:
    _only(block, TOOL_USE_FIELDS, path)
    arguments = _object(block.get("input"), [*path, "input"])
    call_id = _string(block.get("id"), [*path, "id"])
    return ToolCall(call_id, _string(block.get("name"), [*path, "name"]), json.dumps(arguments))


def reasoning_of(block: dict[str, Any], path: Path) -> Reasoning:
    if block["type"] == "redacted_thinking":
        _only(block, REDACTED_FIELDS, path)
        return Reasoning(_string(block.get("data"), [*path, "data"]), redacted=True)
    _only(block, THINKING_FIELDS, path)
    signature = _string(block.get("signature"), [*path, "signature"])
    return Reasoning(_string(block.get("thinking"), [*path, "thinking"]), signature=signature)


# ---------------------------------------------------------------- turns
def blocks_of(content: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        raise invalid(path, "must be a string or a non-empty list of content blocks")
    return [_object(block, [*path, index]) for index, block in enumerate(content)]


def user_turn(content: Any, path: Path, called: set[str]) -> list[ChatMessage]:
    """Tool results first (one tool message each), then the rest, split after each cache breakpoint."""
    if isinstance(content, str):
        return [ChatMessage("user", content)]
    results: list[ChatMessage] = []
    turn: list[ChatMessage] = []
    pieces: list[str | ChatImage] = []
    for index, block in enumerate(blocks_of(content, path)):
        at = [*path, index]
        if block.get("type") == "tool_result":
            results.append(tool_result_of(block, at, called))
            continue
        pieces.append(piece_of(block, at))
        if (cache_control := cache_control_of(block, at)) is not None:
            turn.append(content_message("user", pieces, cache_control=cache_control))
            pieces = []
    if pieces:
        turn.append(content_message("user", pieces))
    return results + turn


def assistant_turn(content: Any, path: Path, called: set[str]) -> ChatMessage:
    if isinstance(content, str):
        return ChatMessage("assistant", content)
    if content == []:  # an empty final turn for the model to continue
        return ChatMessage("assistant", "")
    texts: list[str] = []
    calls: list[ToolCall] = []
    reasoning: list[Reasoning] = []
    cache_control = None
    for index, block in enumerate(blocks_of(content, path)):
        at, kind = [*path, index], block.get("type")
        if kind == "text":
            texts.append(text_of(block, at))
        elif kind == "tool_use":
            calls.append(tool_use_of(block, at))
        elif kind in ("thinking", "redacted_thinking"):
            reasoning.append(reasoning_of(block, at))
        else:
            raise invalid([*at, "type"], f"{kind!r} blocks are not supported in assistant turns")
        cache_control = cache_control_of(block, at) or cache_control
    called.update(call.id for call in calls)
    return ChatMessage(
        "assistant", joined(texts), tool_calls=tuple(calls), reasoning=tuple(reasoning), cache_control=cache_control
    )


class AnthropicMessages(serializers.Field):
    """The conversation, in Anthropic's shapes, as ChatMessages."""

    def to_internal_value(self, data: Any) -> tuple[ChatMessage, ...]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("must be a non-empty list of messages")
        called: set[str] = set()  # tool_use ids so far: a tool_result must answer one
        messages: list[ChatMessage] = []
        for index, raw in enumerate(data):
            message = _object(raw, [index])
            _only(message, frozenset({"role", "content"}), [index])
            if "content" not in message:
                raise invalid([index, "content"], "This field is required.")
            role, content = message.get("role"), message["content"]
            if role == "user":
                messages += user_turn(content, [index, "content"], called)
            elif role == "assistant":
                messages.append(assistant_turn(content, [index, "content"], called))
            else:
                raise invalid([index, "role"], 'must be "user" or "assistant"')
        return tuple(messages)

    def to_representation(self, value: Any) -> Any:
        return value


class AnthropicSystem(serializers.Field):
    """System text: a string, or text blocks (one system message each, so each keeps its breakpoint)."""

    def to_internal_value(self, data: Any) -> tuple[ChatMessage, ...]:
        if isinstance(data, str):
            return (ChatMessage("system", data),) if data else ()
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a string or a list of text blocks")
        messages = []
        for index, raw in enumerate(data):
            block = _object(raw, [index])
            if block.get("type") != "text":
                raise invalid([index, "type"], 'system blocks must be "text"')
            cache_control = cache_control_of(block, [index])
            messages.append(ChatMessage("system", text_of(block, [index]), cache_control=cache_control))
        return tuple(messages)

    def to_representation(self, value: Any) -> Any:
        return value
