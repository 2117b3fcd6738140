"""A Messages API answer in Anthropic's shapes: content blocks, stop reason, usage and errors.

Shared by the whole answer (AnthropicDialect.answer) and the stream (AnthropicStream): the message's
id and head, thinking, text and tool_use blocks, Anthropic's stop reason for a normalised finish
reason, usage with input_tokens net of cache reads and writes, and the error envelope with
Anthropic's error type for each status.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.chat_formats import Answered
from gateway.errors import ApiError
from providers.clients.base import CONTENT_FILTER, LENGTH, TOOL_CALLS, ChatResult, Reasoning, Usage

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


def error_envelope(error: ApiError) -> dict[str, Any]:
    """Anthropic's envelope, its error type by status; Pulse's code and param ride along inside."""
    kind = ERROR_TYPES.get(error.status) or ("api_error" if error.status >= 500 else "invalid_request_error")
    detail = {"type": kind, "message": error.message, "code": error.code, "param": error.param, **error.extra}
    return {"type": "error", "error": detail}
