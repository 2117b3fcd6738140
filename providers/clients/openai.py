"""OpenAI chat completions, also spoken by OpenAI-compatible servers (vLLM, Ollama, ...).

Pulse's normalised request is already OpenAI-shaped, so the translation is thin; what
differs between `openai` and `openai_compatible` is the name of the token limit and how
complete the usage report is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp

from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    TOOL_CALLS,
    ChatDelta,
    ChatRequest,
    ChatResult,
    Usage,
)
from providers.clients.http_client import HttpProviderClient, error_object, set_fields

FINISH_REASONS = {
    "stop": STOP,
    "length": LENGTH,
    "content_filter": CONTENT_FILTER,
    "tool_calls": TOOL_CALLS,
    "function_call": TOOL_CALLS,  # the legacy name of tool_calls
}
DONE = "[DONE]"


def openai_usage(usage: dict[str, Any] | None) -> Usage:
    """prompt_tokens already includes the cached ones and completion_tokens the reasoning
    ones. Compatible servers often leave the *_details objects out, or null."""
    if not usage:
        return Usage(estimated=True)  # a server that reports nothing: the gateway estimates
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=prompt_details.get("cached_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "", STOP)


def completion_result(completion: dict[str, Any], model: str) -> ChatResult:
    choice = completion["choices"][0]
    return ChatResult(
        content=choice["message"].get("content") or "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=openai_usage(completion.get("usage")),
        upstream_model=completion.get("model") or model,
        upstream_id=completion.get("id"),
    )


def read_chunk(chunk: dict[str, Any]) -> tuple[str, str | None, Usage | None]:
    """(text, raw finish reason, usage) of one chunk; the usage chunk has `choices: []`."""
    choices = chunk.get("choices") or []
    choice = choices[0] if choices else {}
    text = (choice.get("delta") or {}).get("content") or ""
    usage = openai_usage(chunk["usage"]) if chunk.get("usage") else None
    return text, choice.get("finish_reason"), usage


class OpenAIClient(HttpProviderClient):
    # Current OpenAI models reject max_tokens; vLLM and Ollama only know max_tokens.
    token_limit_field = "max_completion_tokens"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider.api_key}"}

    @property
    def url(self) -> str:
        return self.endpoint("/chat/completions")  # base_url already ends in /v1

    def body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            **set_fields(temperature=request.temperature, top_p=request.top_p, stop=list(request.stop)),
            **set_fields(**{self.token_limit_field: request.max_tokens}),
        }

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        completion = await self.post_json(self.url, self.body(request, model))
        return self.parse(completion_result, completion, model)

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        # Without include_usage a stream carries no usage at all, and Pulse meters every stream.
        body = self.body(request, model) | {"stream": True, "stream_options": {"include_usage": True}}
        finish, usage = STOP, Usage(estimated=True)
        async with aclosing(self.post_events(self.url, body)) as events:
            async for _event, data in events:
                if data == DONE:
                    yield ChatDelta(finish_reason=finish, usage=usage)
                    return
                chunk = self.decode(data)
                if "error" in chunk:
                    raise self.stream_error(error_object(chunk))
                text, reason, chunk_usage = self.parse(read_chunk, chunk)
                if text:
                    yield ChatDelta(content=text)
                finish = finish_reason(reason) if reason else finish
                usage = chunk_usage or usage
        raise self.stream_cut()

    async def moderate(self, texts: list[str], *, model: str, timeout_s: float) -> list[dict[str, Any]]:
        """POST /moderations: one result object per text, in order."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        body = await self.post_json(self.endpoint("/moderations"), {"input": texts, "model": model}, timeout=timeout)
        return self.parse(moderation_results, body, len(texts))


class OpenAICompatibleClient(OpenAIClient):
    """vLLM, Ollama, LiteLLM and other servers that speak the chat completions protocol."""

    token_limit_field = "max_tokens"


def moderation_results(body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    results = body["results"]
    if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"expected {count} results")
    return results
