"""Anthropic Messages API.

Differs from OpenAI's shape in three ways that matter here: system text is a top-level
field (no system role in `messages`), max_tokens is required, and a stream is a series
of named events whose usage is spread over message_start and message_delta.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    TOOL_CALLS,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ProviderError,
    Usage,
)
from providers.clients.http_client import HttpProviderClient, error_object, set_fields

ANTHROPIC_VERSION = "2023-06-01"
# The gateway normally fills max_tokens from the route; the API refuses a request without it.
DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {
    "end_turn": STOP,
    "stop_sequence": STOP,
    "pause_turn": STOP,
    "max_tokens": LENGTH,
    "model_context_window_exceeded": LENGTH,
    "tool_use": TOOL_CALLS,
    "refusal": CONTENT_FILTER,
}
# Error events that blame the request itself; any other (overloaded_error, api_error)
# is the provider's trouble, so another candidate may answer.
REQUEST_ERROR_TYPES = frozenset({"invalid_request_error", "request_too_large"})


def anthropic_usage(counts: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens leaves out the prompt tokens written to and read from the
    cache. Pulse's input_tokens is the whole prompt, as OpenAI and Gemini count it, with the
    cache reads and writes among them, each priced apart. counts is a flat usage object
    (counts_of): the cache_creation breakdown says which writes went to the 1-hour cache; the
    rest are 5-minute writes."""
    written = counts.get("cache_creation_input_tokens") or 0
    written_1h = min(counts.get("ephemeral_1h_input_tokens") or 0, written)
    read = counts.get("cache_read_input_tokens") or 0
    return Usage(
        input_tokens=counts["input_tokens"] + written + read,
        output_tokens=counts.get("output_tokens") or 0,
        cached_input_tokens=read,
        cache_write_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
    )


def stop_reason(value: str | None) -> str:
    return STOP_REASONS.get(value or "", STOP)


def message_result(message: dict[str, Any], model: str) -> ChatResult:
    return ChatResult(
        content="".join(block["text"] for block in message["content"] if block.get("type") == "text"),
        finish_reason=stop_reason(message.get("stop_reason")),
        usage=anthropic_usage(counts_of(message["usage"])),
        upstream_model=message.get("model") or model,
        upstream_id=message.get("id"),
    )


def counts_of(usage: dict[str, Any]) -> dict[str, int]:
    """The token counts of a usage object, flat: the cache_creation breakdown's counts join the rest
    (it also holds names and other nested objects, which are left out)."""
    counts = {name: value for name, value in usage.items() if isinstance(value, int)}
    breakdown = usage.get("cache_creation")
    if isinstance(breakdown, dict):
        counts |= {name: value for name, value in breakdown.items() if isinstance(value, int)}
    return counts


@dataclass
class MessageStream:
    """What a stream has told so far, event by event."""

    counts: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None

    def read(self, kind: str | None, event: dict[str, Any]) -> str:
        """Take in one event; returns the text it adds ("" for most)."""
        if kind == "message_start":
            self.counts.update(counts_of(event["message"]["usage"]))
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason") or self.stop_reason
            # usage.output_tokens here is the running total, not an increment: replace, never add.
            self.counts.update(counts_of(event.get("usage") or {}))
        elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            return str(event["delta"]["text"])
        return ""  # ping, content_block_start/stop, and thinking or tool-input deltas

    def final(self) -> ChatDelta:
        return ChatDelta(finish_reason=stop_reason(self.stop_reason), usage=anthropic_usage(self.counts))

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

    def body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        max_tokens = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
        return {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.dialogue],
            **set_fields(
                system=request.system_text,
                temperature=request.temperature,
                top_p=request.top_p,
                stop_sequences=list(request.stop),
            ),
        }

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        message = await self.post_json(self.url, self.body(request, model))
        return self.parse(message_result, message, model)

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        state, body = MessageStream(), self.body(request, model) | {"stream": True}
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
                    text = self.parse(state.read, kind, event)
                    if text:
                        yield ChatDelta(content=text)
            raise self.stream_cut()  # the connection closed before message_stop
        except ProviderError as failure:
            failure.usage = failure.usage or state.so_far()  # the prompt counts message_start gave
            raise
