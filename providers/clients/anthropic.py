"""Anthropic Messages API.

Differs from OpenAI's shape in ways that matter here: system text is a top-level field (no system
role in `messages`), max_tokens is required, content is a list of typed blocks (thinking, text,
images, tool_use) where every tool result goes back in the one user message after the call, and
a stream is a series of named events whose usage is spread over message_start and message_delta.
The chat translation (content blocks, tools, thinking, structured output, usage) is in
anthropic_chat.py; MessageStream, here with the client's stream loop, reads a stream event by event.

Pulse also serves this API itself, translating to the normalised form and back through here, so
what Claude Code sends (signed thinking, tool loops, cache breakpoints, images) is carried exactly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from providers.clients.anthropic_chat import (
    UNSUPPORTED_CHECKS,
    answer_tool,
    anthropic_usage,
    counts_of,
    max_tokens_of,
    message_result,
    stop_reason,
    system_field,
    thinking_field,
    tool_choice_field,
    tools_field,
    wire_messages,
)
from providers.clients.base import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    ProviderError,
    ToolCallDelta,
    Unsupported,
    Usage,
)
from providers.clients.http_client import HttpProviderClient, error_object, set_fields

# anthropic_usage and counts_of are imported from here by the tests that check Anthropic's usage.
__all__ = ["AnthropicClient", "anthropic_usage", "counts_of"]

ANTHROPIC_VERSION = "2023-06-01"
# Error events that blame the request itself; any other (overloaded_error, api_error)
# is the provider's trouble, so another candidate may answer.
REQUEST_ERROR_TYPES = frozenset({"invalid_request_error", "request_too_large"})
# The fields /v1/messages/count_tokens takes: the prompt, without max_tokens, sampling or metadata.
COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


@dataclass
class MessageStream:
    """What a stream has told so far, event by event."""

    answered_by: str | None = None  # the structured-output tool, whose input streams as the answer's text
    counts: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    tool_calls: dict[int, int] = field(default_factory=dict)  # content block index -> tool call index
    answer_blocks: set[int] = field(default_factory=set)

    def read(self, kind: str | None, event: dict[str, Any]) -> ChatDelta | None:
        """Take in one event; returns the piece of answer it carries, if any."""
        if kind == "message_start":
            self.counts.update(counts_of(event["message"]["usage"]))
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason") or self.stop_reason
            # usage.output_tokens here is the running total, not an increment: replace, never add.
            self.counts.update(counts_of(event.get("usage") or {}))
        elif kind == "content_block_start":
            return self.block_start(event["index"], event["content_block"])
        elif kind == "content_block_delta":
            return self.block_delta(event["index"], event["delta"])
        # ping and content_block_stop carry nothing.
        return None

    def block_start(self, index: int, block: dict[str, Any]) -> ChatDelta | None:
        if block["type"] == "redacted_thinking":  # complete in its start: sent back as it came
            return ChatDelta(redacted_reasoning=str(block["data"]))
        if block["type"] != "tool_use":
            return None
        if block["name"] == self.answered_by:
            self.answer_blocks.add(index)
            return None
        self.tool_calls[index] = call = len(self.tool_calls)
        return ChatDelta(tool_calls=(ToolCallDelta(call, id=block["id"], name=block["name"]),))

    def block_delta(self, index: int, delta: dict[str, Any]) -> ChatDelta | None:
        kind = delta["type"]
        if kind == "text_delta" and delta["text"]:
            return ChatDelta(content=delta["text"])
        if kind == "thinking_delta" and delta["thinking"]:
            return ChatDelta(reasoning=delta["thinking"])
        if kind == "signature_delta":
            return ChatDelta(reasoning_signature=delta["signature"])
        if kind == "input_json_delta" and delta["partial_json"]:
            return self.tool_input_delta(index, delta["partial_json"])
        return None

    def tool_input_delta(self, index: int, partial_json: str) -> ChatDelta | None:
        if index in self.answer_blocks:
            return ChatDelta(content=partial_json)
        if index in self.tool_calls:
            return ChatDelta(tool_calls=(ToolCallDelta(self.tool_calls[index], arguments=partial_json),))
        return None

    def final(self) -> ChatDelta:
        finish = stop_reason(self.stop_reason, answered_by_tool=bool(self.answer_blocks))
        return ChatDelta(finish_reason=finish, usage=anthropic_usage(self.counts))

    def so_far(self) -> Usage | None:
        """What a stream that broke off had reported: message_start's prompt counts are exact, its
        output count is not (marked estimated). None before message_start."""
        if "input_tokens" not in self.counts:
            return None
        return replace(anthropic_usage(self.counts), estimated=True)


class AnthropicClient(HttpProviderClient):
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.provider.api_key, "anthropic-version": ANTHROPIC_VERSION}

    @property
    def url(self) -> str:
        return self.endpoint("/v1/messages")

    def unsupported_param(self, request: ChatRequest, *, model: str) -> Unsupported | None:
        return next((found for check in UNSUPPORTED_CHECKS if (found := check(request)) is not None), None)

    def body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        """The request as Anthropic takes it; `seed` has no equivalent and is dropped (OpenAI's own is
        best effort only)."""
        return {
            "model": model,
            "max_tokens": max_tokens_of(request),
            "messages": wire_messages(request.dialogue),
            **set_fields(
                system=system_field(request),
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                stop_sequences=list(request.stop),
                tools=tools_field(request),
                tool_choice=tool_choice_field(request),
                thinking=thinking_field(request),
                metadata={"user_id": request.user} if request.user else None,
            ),
        }

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        message = await self.post_json(self.url, self.body(request, model))
        return self.parse(message_result, message, model, answer_tool(request))

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        state, body = MessageStream(answer_tool(request)), self.body(request, model) | {"stream": True}
        try:
            async with aclosing(self.post_events(self.url, body)) as events:
                async for name, data in events:
                    event = self.decode(data)
                    kind = name or event.get("type")
                    if kind == "error":
                        error = error_object(event)
                        raise self.stream_error(error, retryable=error.get("type") not in REQUEST_ERROR_TYPES)
                    if kind == "message_stop":
                        yield self.parse(state.final)
                        return
                    piece = self.parse(state.read, kind, event)
                    if piece is not None:
                        yield piece
            raise self.stream_cut()  # the connection closed before message_stop
        except ProviderError as failure:
            failure.usage = failure.usage or state.so_far()  # the prompt counts message_start gave
            raise

    async def count_tokens(self, request: ChatRequest, *, model: str) -> int:
        body = self.body(request, model)
        counted = {name: body[name] for name in COUNTED_FIELDS if name in body}
        answer = await self.post_json(self.endpoint("/v1/messages/count_tokens"), counted)
        return self.parse(lambda tokens: int(tokens["input_tokens"]), answer)
