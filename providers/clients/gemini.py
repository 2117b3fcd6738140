"""Gemini generateContent / streamGenerateContent.

The assistant role is "model", system text is `systemInstruction`, sampling settings
live in `generationConfig`, and a stream has no end marker: only a finishReason tells
a finished stream from a cut one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from core.errors import CONTENT_POLICY_VIOLATION
from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ProviderError,
    Usage,
)
from providers.clients.http_client import HttpProviderClient, error_object, retry_after_s, seconds, set_fields

# Anything else (OTHER, MALFORMED_FUNCTION_CALL, ...) still ended the answer: STOP.
FINISH_REASONS = {
    "STOP": STOP,
    "MAX_TOKENS": LENGTH,
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"), CONTENT_FILTER
    ),
}


def gemini_usage(metadata: dict[str, Any] | None) -> Usage:
    """Thinking is billed as output, so it counts in output_tokens too. Proto3 JSON leaves
    zero counts out: every field may be missing."""
    if not metadata:
        return Usage(estimated=True)
    thoughts = metadata.get("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=metadata.get("promptTokenCount") or 0,
        output_tokens=(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_input_tokens=metadata.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "", STOP)


def candidate_text(response: dict[str, Any]) -> tuple[str, str | None]:
    """Text of candidate 0, without thought summaries, and its finish reason if it has one.
    A stream chunk may carry no candidate at all (only usage)."""
    candidates = response.get("candidates") or [{}]
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text") or "" for part in parts if not part.get("thought"))
    return text, candidate.get("finishReason")


def response_result(response: dict[str, Any], model: str) -> ChatResult:
    if not response.get("candidates"):
        raise KeyError("candidates")
    text, reason = candidate_text(response)
    return ChatResult(
        content=text,
        finish_reason=finish_reason(reason),
        usage=gemini_usage(response.get("usageMetadata")),
        upstream_model=response.get("modelVersion") or model,
        upstream_id=response.get("responseId"),
    )


def error_details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    """google.rpc.Status details: ErrorInfo, RetryInfo, BadRequest."""
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def retry_info_delay(error: Mapping[str, Any]) -> float | None:
    """The RetryInfo detail ({"retryDelay": "34s"}): Gemini says how long to wait there, not in a header."""
    for detail in error_details(error):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return seconds(str(detail.get("retryDelay", "")).removesuffix("s"))
    return None


class GeminiClient(HttpProviderClient):
    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.provider.api_key}

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = super().status_error(status, body, headers)
        if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in error_details(error_object(body))):
            # Gemini answers a wrong key with 400: Pulse's own credentials, so another provider may serve.
            return replace(error, retryable=True, code="upstream_auth_error")
        return error

    def retry_delay(self, headers: Mapping[str, str], error: Mapping[str, Any]) -> float | None:
        from_headers = retry_after_s(headers)
        return from_headers if from_headers is not None else retry_info_delay(error)

    def url(self, model: str, action: str) -> str:
        # Routes may hold the resource name ("models/gemini-2.5-flash") or the bare id.
        return self.endpoint(f"/v1beta/models/{model.removeprefix('models/')}:{action}")

    @staticmethod
    def body(request: ChatRequest) -> dict[str, Any]:
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in request.dialogue
        ]
        body: dict[str, Any] = {"contents": contents}
        if request.system_text:
            body["systemInstruction"] = {"parts": [{"text": request.system_text}]}
        config = set_fields(
            temperature=request.temperature,
            maxOutputTokens=request.max_tokens,
            topP=request.top_p,
            stopSequences=list(request.stop),
        )
        if config:
            body["generationConfig"] = config
        return body

    def check_prompt_allowed(self, response: dict[str, Any]) -> None:
        """A blocked prompt is a 200 with promptFeedback.blockReason and no candidates. Another
        provider's filter may differ, but Pulse does not shop a refused prompt around."""
        reason = (response.get("promptFeedback") or {}).get("blockReason")
        if reason and not response.get("candidates"):
            raise self.error(
                f"the provider's safety filter blocked the prompt (blockReason {reason})",
                retryable=False,
                status=400,
                code=CONTENT_POLICY_VIOLATION,
            )

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        response = await self.post_json(self.url(model, "generateContent"), self.body(request))
        self.check_prompt_allowed(response)
        return self.parse(response_result, response, model)

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        url = self.url(model, "streamGenerateContent?alt=sse")
        reason, metadata = None, None
        async with aclosing(self.post_events(url, self.body(request))) as events:
            async for _event, data in events:
                chunk = self.decode(data)
                self.check_prompt_allowed(chunk)
                text, chunk_reason = self.parse(candidate_text, chunk)
                if text:
                    yield ChatDelta(content=text)
                reason = chunk_reason or reason
                # Each chunk's usageMetadata is the running total: keep the last, never add.
                metadata = chunk.get("usageMetadata") or metadata
        if reason is None:
            cut = self.stream_cut()
            # The running usageMetadata counts the prompt exactly; the output so far is marked estimated.
            cut.usage = replace(gemini_usage(metadata), estimated=True) if metadata else None
            raise cut
        yield ChatDelta(finish_reason=finish_reason(reason), usage=self.parse(gemini_usage, metadata))
