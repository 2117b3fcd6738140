"""The Messages API request: its fields, the two serializers, and the normalised ChatRequest.

CountTokensRequest takes the prompt (messages, system, tools, tool_choice, thinking, output_config,
cache_control) and MessagesRequest adds how to answer it (max_tokens, sampling, stop sequences,
stream, metadata). Fields Anthropic serves on its own servers are refused by name, unknown ones
too; chat_request turns the validated data into the ChatRequest every provider client takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from rest_framework import serializers

from gateway.chat_formats import HotPathSerializer
from gateway.chat_parts import invalid
from gateway.messages.content import (
    AnthropicMessages,
    AnthropicSystem,
    _object,
    _only,
    _string,
    cache_control_of,
    cache_control_value,
)
from providers.clients.base import ChatRequest, Tool, ToolChoice

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MIN_THINKING_BUDGET = 1024
TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}


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
