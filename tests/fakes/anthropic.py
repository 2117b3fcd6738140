"""Fake Anthropic Messages API: `POST /v1/messages`, plain and streamed.

Speaks the wire protocol in /work/shared/PROVIDERS.md and is strict where the real API
is: `anthropic-version` and `max_tokens` are required, there is no "system" role
inside `messages`, temperature is 0..1 (not OpenAI's 0..2) and unknown top-level
fields are rejected, so an OpenAI-shaped request leaking through a gateway fails here.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    Fault,
    Received,
    count_words,
    new_id,
)

# fmt: off
PARAMS = {
    "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
    "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
    "mcp_servers", "context_management",
}
BLOCK_TYPES = {
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "server_tool_use", "web_search_tool_result",
}
# fmt: on

# status -> (error type, message)
ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class Invalid(Exception):
    """A 400 invalid_request_error; the message names the field like the real API."""


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def check_blocks(where: str, blocks: list[Any]) -> None:
    for i, block in enumerate(blocks):
        tag = block.get("type") if isinstance(block, dict) else None
        if tag not in BLOCK_TYPES:
            raise Invalid(f"{where}.{i}: Input tag '{tag}' found using 'type' does not match any of the expected tags")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise Invalid(f"{where}.{i}.text: Field required")
        if block["type"] == "text" and not block["text"]:
            raise Invalid(f"{where}: text content blocks must be non-empty")


def check_messages(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("There was an error parsing the body")
    unknown = sorted(set(body) - PARAMS)
    if unknown:
        raise Invalid(f"{unknown[0]}: Extra inputs are not permitted")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise Invalid(f"{field}: Field required")
    if not isinstance(body["model"], str):
        raise Invalid("model: Input should be a valid string")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise Invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise Invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise Invalid("messages: Input should be a valid list")
    if not messages:
        raise Invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        check_message(i, message, last=i == len(messages) - 1)
    system = body.get("system")
    if isinstance(system, list):
        check_blocks("system", system)
    elif system is not None and not isinstance(system, str):
        raise Invalid("system: Input should be a valid string or a list of text blocks")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or isinstance(temperature, bool)):
        raise Invalid("temperature: Input should be a valid number")
    if temperature is not None and not 0 <= temperature <= 1:
        raise Invalid("temperature: range: 0..1")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Invalid("stream: Input should be a valid boolean")
    return body


def check_message(i: int, message: Any, last: bool) -> None:
    if not isinstance(message, dict):
        raise Invalid(f"messages.{i}: Input should be a valid dictionary")
    role = message.get("role")
    if role == "system":
        # The real API's own wording: system text is the top-level field.
        raise Invalid(
            'messages: Unexpected role "system". The Messages API accepts a '
            'top-level `system` parameter, not "system" as an input message role.'
        )
    if role not in ("user", "assistant"):
        raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise Invalid(f"messages.{i}.content: Field required")
    content = message["content"]
    if isinstance(content, list):
        check_blocks(f"messages.{i}.content", content)
    elif not isinstance(content, str):
        raise Invalid(f"messages.{i}.content: Input should be a valid string or list")
    if not content and not (last and role == "assistant"):
        raise Invalid(
            f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
        )


def event(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"


class FakeAnthropic(FakeProvider):
    provider = "anthropic"
    default_api_key = "sk-ant-test"
    url_prefix = ""  # ANTHROPIC_BASE_URL has no /v1
    stop_reason = "end_turn"
    tool_reason = "tool_use"
    length_reason = "max_tokens"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.endpoint(self._messages)),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    # ---- errors and auth ---------------------------------------------------------

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        request_id = new_id("req_")
        if body is None:
            kind, message = ERRORS.get(status, ("api_error", f"HTTP {status}"))
            body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        defaults = {"request-id": request_id}
        if status == 429:
            defaults["retry-after"] = "1"
        return web.json_response(body, status=status, headers={**defaults, **(headers or {})})

    def invalid(self, message: str, status: int = 400) -> web.Response:
        kind = ERRORS[status][0]
        return self.error_response(
            status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")}
        )

    def auth_error(self, received: Received) -> web.Response | None:
        # The API takes the key as x-api-key or (as the current SDK sends it) Bearer.
        key = received.headers.get("x-api-key")
        auth = received.headers.get("authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth[7:].strip()
        if not key:
            return self.invalid("x-api-key header is required", 401)
        if key != self.api_key:
            return self.invalid("invalid x-api-key", 401)
        if "anthropic-version" not in received.headers:
            return self.invalid("anthropic-version: header is required")
        return None

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.invalid("Not Found", 404)

    # ---- messages ----------------------------------------------------------------

    async def _messages(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        try:
            body = check_messages(received.json)
        except Invalid as exc:
            return self.invalid(str(exc))
        words = count_words(text_of(body.get("system"))) + sum(
            count_words(text_of(m["content"])) for m in body["messages"]
        )
        answer = self.answer(words, body["max_tokens"])
        message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"]}
        headers = {"request-id": new_id("req_")}
        if not body.get("stream"):
            message |= {
                "content": [{"type": "text", "text": answer.text}],
                "stop_reason": answer.finish_reason,
                "stop_sequence": None,
                "usage": self._usage(answer, answer.output_tokens + answer.counts.reasoning),
            }
            return web.json_response(message, headers=headers)
        response = await self.open_stream(request, headers)
        await self._stream(request, response, message, answer, fault)
        return response

    @staticmethod
    def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
        """input_tokens counts only the prompt tokens neither read from nor written to the cache;
        thinking is billed as output, inside output_tokens."""
        counts = answer.counts
        written = counts.cache_write + counts.cache_write_1h
        return {
            "input_tokens": answer.input_tokens - counts.cached - written,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": counts.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": counts.cache_write,
                "ephemeral_1h_input_tokens": counts.cache_write_1h,
            },
        }

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        message: dict[str, Any],
        answer: Answer,
        fault: Fault | None,
    ) -> None:
        # message_start reports output_tokens 1, like the real API: a client that ADDS the
        # message_delta figure to it, instead of taking it as the total, is off by one.
        start = message | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(answer, min(1, answer.output_tokens)),
        }
        await self.send(response, event("message_start", {"message": start}))
        await self.send(
            response, event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        )
        await self.send(response, event("ping", {}))
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'event: content_block_delta\ndata: {"type": "conte\n\n')
            return
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        for piece in answer.pieces[:limit]:
            await self.send(
                response, event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            )
        if fault is not None and fault.kind == "cut":
            self.cut(request)
            return
        if fault is not None and fault.kind == "stream_error":
            await self.send(response, event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
            return
        await self.send(response, event("content_block_stop", {"index": 0}))
        await self.send(
            response,
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": answer.finish_reason, "stop_sequence": None},
                    "usage": {"output_tokens": answer.output_tokens + answer.counts.reasoning},
                },
            ),
        )
        await self.send(response, event("message_stop", {}))
