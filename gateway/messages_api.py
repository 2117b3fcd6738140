"""The Anthropic Messages API, served: `POST /v1/messages` and `POST /v1/messages/count_tokens`, so
the official Anthropic SDKs and Claude Code work with base_url=<pulse>, on any provider.

A request parses into the normalised types (providers.clients.base) and runs through the one
pipeline like every chat request; the Anthropic client sends it back out in Anthropic's own shapes,
so a Claude round trip keeps what Claude Code relies on: signed thinking, tool loops, images and
cache breakpoints. OpenAI and Gemini get the same conversation through their own clients.

The normalised form decides a few things. A user turn's tool_result blocks become tool messages
(each its own ChatMessage), followed by a user message with the turn's other content. A cache
breakpoint belongs to a message's last block: a user turn is split after each block that carries
one, so each breakpoint stays where the client put it; an assistant turn keeps its breakpoint on its
last block (thinking, text and calls cannot be split apart), so there it may move later.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar

from rest_framework import serializers

from core.observability import REQUEST_ID_HEADER
from gateway.chat_formats import Answered, ChatCall, Dialect, HotPathSerializer, StreamRenderer, sse, validated
from gateway.chat_parts import IMAGE_TYPES, invalid
from gateway.consumers import ChatConsumer, JsonApiConsumer
from gateway.errors import ApiError, InvalidRequest
from gateway.moderation.pipeline import moderate_prompt
from gateway.pipeline import admit, plan_candidates, try_candidates
from gateway.pipeline.operations import ChatOperation
from providers.clients import client_for
from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    TOOL_CALLS,
    ChatDelta,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ProviderClient,
    Reasoning,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from providers.routing import Candidate, arouting_table

Path = list[str | int]
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MIN_THINKING_BUDGET = 1024
CACHE_TTLS = ("5m", "1h")
TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}


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


# ---------------------------------------------------------------- tools
TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control", "strict"})
# A hint about how finely the tool's input streams: every provider streams calls its own way.
IGNORED_TOOL_FIELDS = frozenset({"eager_input_streaming"})


def tool_of(raw: Any, index: int) -> Tool:
    tool = _object(raw, [index])
    kind = tool.get("type")
    if kind not in (None, "custom"):  # web_search_20250305, bash_20250124, text_editor_...: run by Anthropic
        raise invalid(
            [index, "type"],
            f"{tool.get('name', kind)!r} ({kind}) is an Anthropic server tool, which Pulse does not serve: "
            "only client tools (name, description, input_schema) work on every provider",
        )
    _only({k: v for k, v in tool.items() if k not in IGNORED_TOOL_FIELDS}, TOOL_FIELDS, [index])
    name = _string(tool.get("name"), [index, "name"])
    if not TOOL_NAME.match(name):
        raise invalid([index, "name"], "must be 1-128 letters, digits, underscores or dashes")
    schema = _object(tool.get("input_schema"), [index, "input_schema"])
    if schema.get("type") != "object":
        raise invalid([index, "input_schema", "type"], 'must be "object"')
    strict = tool.get("strict", False)
    if not isinstance(strict, bool):
        raise invalid([index, "strict"], "must be a boolean")
    description = _string(tool.get("description", ""), [index, "description"])
    return Tool(name, description, schema, strict, cache_control_of(tool, [index]))


class AnthropicTools(serializers.Field):
    def to_internal_value(self, data: Any) -> tuple[Tool, ...]:
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list of tools")
        tools = tuple(tool_of(raw, index) for index, raw in enumerate(data))
        names = [tool.name for tool in tools]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise invalid([index, "name"], f"two tools are named {name!r}")
        return tools

    def to_representation(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class ToolUse:
    """Anthropic's tool_choice: the choice, and whether one call at most is wanted."""

    choice: ToolChoice
    single_call: bool


class AnthropicToolChoice(serializers.Field):
    def to_internal_value(self, data: Any) -> ToolUse:
        choice = _object(data, [])
        _only(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), [])
        mode = TOOL_CHOICES.get(str(choice.get("type")))
        if mode is None:
            raise invalid(["type"], 'must be "auto", "any", "tool" or "none"')
        name = _string(choice.get("name"), ["name"]) if mode == "tool" else None
        single = choice.get("disable_parallel_tool_use", False)
        if not isinstance(single, bool):
            raise invalid(["disable_parallel_tool_use"], "must be a boolean")
        return ToolUse(ToolChoice(mode, name), single)

    def to_representation(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Thinking:
    """What the request asks of thinking: a budget in tokens (enabled), or leave it to the model
    (adaptive: Claude Code's default, its depth from output_config.effort)."""

    budget: int | None = None
    adaptive: bool = False


class ThinkingField(serializers.Field):
    """{"type": "enabled", "budget_tokens": N}, {"type": "adaptive"} or {"type": "disabled"} (no thinking)."""

    def to_internal_value(self, data: Any) -> Thinking:
        thinking = _object(data, [])
        kind = thinking.get("type")
        if kind == "disabled":
            _only(thinking, frozenset({"type"}), [])
            return Thinking()
        if kind == "adaptive":
            # display (summarized or omitted thinking) has no counterpart elsewhere; some Claude Code
            # versions send a budget_tokens of 0 along, which adaptive thinking does not read.
            _only(thinking, frozenset({"type", "display", "budget_tokens"}), [])
            return Thinking(adaptive=True)
        if kind != "enabled":
            raise invalid(["type"], 'must be "enabled" (with budget_tokens), "adaptive" or "disabled"')
        _only(thinking, frozenset({"type", "budget_tokens"}), [])
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < MIN_THINKING_BUDGET:
            raise invalid(["budget_tokens"], f"must be an integer of at least {MIN_THINKING_BUDGET}")
        return Thinking(budget)

    def to_representation(self, value: Any) -> Any:
        return value


# Anthropic's effort levels on Pulse's reasoning_effort scale, which tops out at high.
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


class OutputConfigField(serializers.Field):
    """output_config.effort: how hard the model works. Structured output (format) is not taken here."""

    def to_internal_value(self, data: Any) -> str | None:
        config = _object(data, [])
        if config.get("format") is not None:
            raise invalid(["format"], "is not supported by this gateway (use a tool for structured output)")
        _only(config, frozenset({"effort", "format"}), [])
        effort = config.get("effort")
        if effort is not None and effort not in EFFORTS:
            raise invalid(["effort"], f"must be one of {', '.join(EFFORTS)}")
        return EFFORTS.get(effort) if effort else None

    def to_representation(self, value: Any) -> Any:
        return value


class CacheControlField(serializers.Field):
    """The top-level cache_control: a breakpoint on the request's last block."""

    def to_internal_value(self, data: Any) -> dict[str, Any] | None:
        return cache_control_value(data, [])

    def to_representation(self, value: Any) -> Any:
        return value


class MetadataField(serializers.Field):
    """metadata.user_id: the end user, passed on for the provider's abuse monitoring."""

    def to_internal_value(self, data: Any) -> str | None:
        metadata = _object(data, [])
        _only(metadata, frozenset({"user_id"}), [])
        user = metadata.get("user_id")
        return None if user is None else _string(user, ["user_id"])[:256]

    def to_representation(self, value: Any) -> Any:
        return value


# ---------------------------------------------------------------- the request
class CountTokensRequest(HotPathSerializer):
    """What /v1/messages/count_tokens takes: the prompt alone. Unknown fields are refused, naming them."""

    model = serializers.CharField(max_length=200)
    messages = AnthropicMessages()
    system = AnthropicSystem(required=False)
    tools = AnthropicTools(required=False)
    tool_choice = AnthropicToolChoice(required=False)
    thinking = ThinkingField(required=False)
    output_config = OutputConfigField(required=False)
    cache_control = CacheControlField(required=False, allow_null=True)

    # Fields of the real API that need Anthropic's own servers (code containers, MCP connections) or
    # that Pulse does not translate: refused by name rather than ignored.
    UNSUPPORTED: ClassVar[frozenset[str]] = frozenset(
        {"container", "mcp_servers", "diagnostics", "speed", "inference_geo"}
    )
    # Accepted and not passed on. service_tier is about the caller's capacity at Anthropic, and Pulse's
    # account is the one upstream. context_management asks Anthropic to prune old tool results and
    # thinking server-side; Claude Code always sends it and cannot be told not to, so refusing it would
    # shut Claude Code out: the conversation goes as the client sent it, which answers the same and
    # may cost more prompt tokens.
    IGNORED: ClassVar[frozenset[str]] = frozenset({"service_tier", "context_management"})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name in self.initial_data:
            if name in self.UNSUPPORTED:
                raise serializers.ValidationError({name: "is not supported by this gateway"})
            if name not in self.fields and name not in self.IGNORED:
                raise serializers.ValidationError({name: "is not a field this endpoint takes (check its spelling)"})
        if (tool_use := attrs.get("tool_choice")) is not None:
            check_tool_choice(tool_use.choice, attrs.get("tools", ()))
        return attrs


def check_tool_choice(choice: ToolChoice, tools: tuple[Tool, ...]) -> None:
    if not tools and choice.mode != "none":
        raise invalid(["tool_choice"], "needs tools: there is nothing to call")
    if choice.mode == "tool" and choice.name not in {tool.name for tool in tools}:
        raise invalid(["tool_choice", "name"], f"names no tool in tools: {choice.name}")


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages: the prompt, and how to answer it."""

    max_tokens = serializers.IntegerField(min_value=1)
    temperature = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    top_k = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    stop_sequences = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), required=False, allow_empty=True
    )
    stream = serializers.BooleanField(required=False, default=False)
    metadata = MetadataField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        budget = attrs.get("thinking", Thinking()).budget
        if budget is not None and budget >= attrs["max_tokens"]:
            raise invalid(["thinking", "budget_tokens"], "must be less than max_tokens")
        return attrs


def chat_request(data: dict[str, Any]) -> ChatRequest:
    """The normalised request: system messages first, then the conversation."""
    messages = data.get("system", ()) + data["messages"]
    if (cache_control := data.get("cache_control")) is not None and not messages[-1].cache_control:
        # The top-level breakpoint marks the last block of the request, which is the last message's.
        messages = (*messages[:-1], replace(messages[-1], cache_control=cache_control))
    tool_use: ToolUse | None = data.get("tool_choice")
    thinking: Thinking = data.get("thinking", Thinking())
    return ChatRequest(
        messages=messages,
        max_tokens=data.get("max_tokens"),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        top_k=data.get("top_k"),
        stop=tuple(data.get("stop_sequences", ())),
        tools=data.get("tools", ()),
        tool_choice=tool_use.choice if tool_use else None,
        parallel_tool_calls=False if tool_use and tool_use.single_call else None,
        thinking_budget=thinking.budget,
        # An effort says how much adaptive thinking to do; with a budget, or no thinking, it is not passed on.
        reasoning_effort=data.get("output_config") if thinking.adaptive else None,
        user=data.get("metadata"),
    )


# ---------------------------------------------------------------- the answer
STOP_REASONS = {LENGTH: "max_tokens", TOOL_CALLS: "tool_use", CONTENT_FILTER: "refusal"}
# Anthropic's error type for each status, as its SDKs and Claude Code read them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def stop_reason(finish_reason: str, called: bool) -> str:
    """Anthropic's stop reason. "stop" covers both a natural end and a stop sequence in the normalised
    form, so stop_sequence is never told apart: end_turn. An answer that calls tools ends in tool_use
    even where a provider says "stop" with its calls."""
    if called and finish_reason != LENGTH:
        return "tool_use"
    return STOP_REASONS.get(finish_reason, "end_turn")


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's input_tokens leaves out the cache reads and writes that Pulse's input_tokens includes."""
    written = usage.cache_write_tokens + usage.cache_write_1h_tokens
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_input_tokens - written),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic gives; text that is no JSON object (a model elsewhere
    cut off mid-call) is kept under "arguments" rather than lost."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def thinking_block(reasoning: Reasoning) -> dict[str, Any]:
    # Thinking from a provider that does not sign it gets an empty signature: Pulse drops unsigned
    # thinking when the conversation goes back to Claude, which would refuse it.
    if reasoning.redacted:
        return {"type": "redacted_thinking", "data": reasoning.text}
    return {"type": "thinking", "thinking": reasoning.text, "signature": reasoning.signature or ""}


def content_blocks(result: ChatResult) -> list[dict[str, Any]]:
    blocks = [thinking_block(reasoning) for reasoning in result.reasoning]
    if result.content:
        blocks.append({"type": "text", "text": result.content})
    for call in result.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)})
    return blocks


def message_id(answered: Answered) -> str:
    return "msg_" + answered.request_id.removeprefix("req_")  # the ledger's request id, recognisable


def message_head(answered: Answered) -> dict[str, Any]:
    return {"id": message_id(answered), "type": "message", "role": "assistant", "model": answered.model}


EMPTY_BLOCKS: dict[str, dict[str, Any]] = {
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
    "text": {"type": "text", "text": ""},
}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return sse({"type": name, **payload}, name)


class AnthropicStream(StreamRenderer):
    """Anthropic's named events: message_start, then each content block as content_block_start, its
    deltas and content_block_stop (indexes counting up, one block open at a time: thinking closes
    before text opens, text before a tool_use), then message_delta and message_stop.

    The normalised stream reports usage only at its end, so message_start says 0 input tokens and
    message_delta carries the whole usage (input and cache counts too: the SDK takes them from there)."""

    def __init__(self, answered: Answered, include_usage: bool):
        super().__init__(answered, include_usage)
        self.next_index = 0
        self.open_index: int | None = None
        self.open_kind: str | None = None  # "thinking" | "text" | "tool_use"
        self.call_blocks: dict[int, int] = {}  # a tool call's index -> its block's index

    def start(self) -> bytes:
        message = message_head(self.answered) | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(Usage()),
        }
        return event("message_start", {"message": message})

    def delta(self, delta: ChatDelta) -> bytes:
        frames = b""
        if delta.redacted_reasoning:  # a whole block: opened and closed at once
            frames += self._open("redacted_thinking", {"type": "redacted_thinking", "data": delta.redacted_reasoning})
            frames += self._close()
        if delta.reasoning:
            frames += self._into("thinking") + self._piece({"type": "thinking_delta", "thinking": delta.reasoning})
        if delta.reasoning_signature:
            # The signature seals its thinking block: more thinking after it is a new block.
            frames += self._into("thinking")
            frames += self._piece({"type": "signature_delta", "signature": delta.reasoning_signature}) + self._close()
        if delta.content:
            frames += self._into("text") + self._piece({"type": "text_delta", "text": delta.content})
        for piece in delta.tool_calls:
            frames += self._tool_piece(piece)
        return frames

    def end(self, finish_reason: str, usage: Usage, cost_usd: Decimal) -> bytes:
        reason = stop_reason(finish_reason, bool(self.call_blocks))
        message_delta = {"delta": {"stop_reason": reason, "stop_sequence": None}, "usage": usage_json(usage)}
        return self._close() + event("message_delta", message_delta) + event("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        return event("error", {"error": AnthropicDialect.error_body(error)["error"]})

    # --- blocks ---------------------------------------------------------------------------
    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        frames = self._close()
        self.open_index, self.open_kind = self.next_index, kind
        self.next_index += 1
        return frames + event("content_block_start", {"index": self.open_index, "content_block": block})

    def _close(self) -> bytes:
        if self.open_index is None:
            return b""
        index, self.open_index, self.open_kind = self.open_index, None, None
        return event("content_block_stop", {"index": index})

    def _into(self, kind: str) -> bytes:
        """Open a block of this kind unless one is open already."""
        if self.open_kind == kind:
            return b""
        return self._open(kind, EMPTY_BLOCKS[kind])

    def _piece(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        return event("content_block_delta", {"index": self.open_index if index is None else index, "delta": delta})

    def _tool_piece(self, piece: ToolCallDelta) -> bytes:
        frames = b""
        if piece.index not in self.call_blocks:  # a call's first piece: its id and name
            call_id = piece.id or f"toolu_{uuid.uuid4().hex[:24]}"
            block = {"type": "tool_use", "id": call_id, "name": piece.name or "", "input": {}}
            frames += self._open("tool_use", block)
            self.call_blocks[piece.index] = self.next_index - 1
        if piece.arguments:
            # Providers stream one call after another; a piece of an earlier call still names its own block.
            partial = {"type": "input_json_delta", "partial_json": piece.arguments}
            frames += self._piece(partial, self.call_blocks[piece.index])
        return frames


class AnthropicDialect(Dialect):
    renderer = AnthropicStream

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = validated(MessagesRequest(data=payload))
        metadata = payload.get("metadata") or {}
        return ChatCall(data["model"], chat_request(data), stream=data["stream"], metadata=metadata)

    @staticmethod
    def parse_count(payload: Any) -> ChatCall:
        data = validated(CountTokensRequest(data=payload))
        return ChatCall(data["model"], chat_request(data))

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        return message_head(answered) | {
            "content": content_blocks(result),
            "stop_reason": stop_reason(result.finish_reason, bool(result.tool_calls)),
            "stop_sequence": None,
            "usage": usage_json(usage),
        }

    @staticmethod
    def error_body(error: ApiError) -> dict[str, Any]:
        """Anthropic's envelope, its error type by status; Pulse's code and param ride along inside."""
        kind = ERROR_TYPES.get(error.status) or ("api_error" if error.status >= 500 else "invalid_request_error")
        detail = {"type": kind, "message": error.message, "code": error.code, "param": error.param, **error.extra}
        return {"type": "error", "error": detail}


# ---------------------------------------------------------------- the endpoints
class MessagesConsumer(ChatConsumer):
    """POST /v1/messages: the Anthropic Messages API, for the official Anthropic SDKs and Claude Code."""

    dialect = AnthropicDialect
    path = "/v1/messages"

    def _begin(self) -> None:
        super()._begin()
        # The Anthropic SDKs read the request id from request-id (error.request_id, message._request_id).
        self.common_headers["request-id"] = self.common_headers[REQUEST_ID_HEADER]


@dataclass(frozen=True)
class TokenCounting(ChatOperation[int]):
    """Counting a prompt's input tokens at the provider. Nothing is generated, so nothing is billed,
    held against the budget or written to the ledger."""

    async def call(self, candidate: Candidate) -> int:
        client = client_for(candidate.provider)
        return await client.count_tokens(self.request_for(candidate), model=candidate.upstream_model)

    def unsupported(self, candidate: Candidate) -> None:
        # The generation limits (max_tokens above the thinking budget, sampling) bind no count.
        return None

    def usage_of(self, result: int) -> Usage:
        return Usage()


def counts_tokens(candidate: Candidate) -> bool:
    """Whether the candidate's client implements count_tokens (the base class only refuses)."""
    return type(client_for(candidate.provider)).count_tokens is not ProviderClient.count_tokens


class CountTokensConsumer(JsonApiConsumer):
    """POST /v1/messages/count_tokens: {"input_tokens": N} from the model's provider (Anthropic and
    Gemini count; others answer 400).

    Admitted (key, rate limit) and moderated like any request, since the prompt reaches a provider
    (and the count is then of the prompt a generation would send, redactions included). It holds no
    budget and makes no ledger row: nothing is generated, and providers do not charge for counting."""

    path = "/v1/messages/count_tokens"

    async def _handle(self, body: bytes) -> int:
        self._require_post()
        admission = await admit(self.headers)
        self.common_headers.update(admission.headers)
        counting = TokenCounting(AnthropicDialect.parse_count(self._json(body)))
        table = await arouting_table()
        planned = plan_candidates(counting, table)
        candidates = [candidate for candidate in planned if counts_tokens(candidate)]
        if not candidates:
            raise InvalidRequest(
                f"Counting tokens is not supported for this model's provider ({planned[0].provider.kind}).",
                code="unsupported_capability",
                param="model",
            )
        route, principal = table.match(counting.model), admission.principal
        counting = await moderate_prompt(counting, route=route, principal=principal, request_id=self.request_id)
        settled = await try_candidates(candidates, counting)
        answered_by = settled.candidate
        headers = {"X-Pulse-Provider": answered_by.provider.name, "X-Pulse-Model": answered_by.upstream_model}
        await self._send_json(200, {"input_tokens": settled.result}, headers)
        return 200

    async def _send_error(self, error: ApiError) -> None:
        await self._send_json(error.status, AnthropicDialect.error_body(error), error.headers)


MESSAGES_CONSUMERS: tuple[type[JsonApiConsumer], ...] = (MessagesConsumer, CountTokensConsumer)
