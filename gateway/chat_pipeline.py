"""Chat with fallback: try each candidate in order until one answers.

A retryable failure (connect error, timeout, 408, 429, 5xx, 529, our own bad
provider credentials) before any byte reached the client moves on to the next
candidate; anything else is the client's answer. A provider that keeps failing
is skipped while its circuit breaker is open.

A provider's content-policy refusal (OpenAI content_filter, Anthropic refusal, Gemini
SAFETY or a blocked prompt) is answered as 400 content_policy_violation, like Pulse's own
moderation, unless the refusing candidate's route has fallback_on_refusal: then the
next candidate is tried (the breaker is not told: refusing is not failing).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from django.conf import settings

from core.principal import Principal
from gateway.chat_formats import ChatCall
from gateway.errors import ApiError, InvalidRequest, NotFound
from gateway.moderation.base import ContentBlocked
from gateway.moderation.pipeline import moderate_answer
from providers.breaker import breaker
from providers.clients import chat_client_for
from providers.clients.base import CONTENT_FILTER, ChatDelta, ChatRequest, ChatResult, ProviderError
from providers.routing import Candidate, RoutingTable

logger = logging.getLogger(__name__)
REFUSED = "content_policy_violation"


@dataclass
class Attempt:
    provider: str
    model: str
    code: str
    status: int | None = None
    message: str = ""

    def as_dict(self) -> dict:
        return {
            "provider": self.provider,
            "model": self.model,
            "code": self.code,
            "status": self.status,
            "message": self.message,
        }


@dataclass
class ChatOutcome:
    candidate: Candidate
    result: ChatResult
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class ChatStream:
    """A stream that has produced its first delta: from here on the provider is fixed."""

    candidate: Candidate
    first: ChatDelta
    rest: AsyncIterator[ChatDelta]
    attempts: list[Attempt] = field(default_factory=list)

    async def deltas(self) -> AsyncIterator[ChatDelta]:
        yield self.first
        async for delta in self.rest:
            yield delta

    async def aclose(self) -> None:
        await self.rest.aclose()


def plan_candidates(call: ChatCall, table: RoutingTable) -> list[Candidate]:
    """The candidates for a call, or the client error that explains why there are none."""
    for index, name in enumerate(call.fallbacks):
        if table.match(name) is None:
            raise InvalidRequest(
                f"Unknown fallback model {name!r}.", code="model_not_found", param=f"fallbacks.{index}"
            )
    route = table.match(call.model)
    if route is None or not route.enabled:
        raise NotFound(
            f"The model {call.model!r} does not exist or is not available.", code="model_not_found", param="model"
        )
    if route.modality != "chat":
        raise InvalidRequest(
            f"{call.model!r} is a {route.modality} model, not a chat model.", code="wrong_modality", param="model"
        )
    if not route.prices.covers("chat"):
        raise ApiError(
            f"The model {call.model!r} has no price set (route {route.name!r}): an admin must set its "
            "prices before it can be used.",
            status=403,
            type="permission_error",
            code="model_not_priced",
            param="model",
        )
    # A fallback without prices is skipped: nothing is ever billed at an unknown price.
    candidates = [c for c in table.candidates(call.model, call.fallbacks) if c.route.prices.covers("chat")]
    if not candidates:
        raise ApiError(
            f"No enabled provider serves {call.model!r}.", status=503, type="api_error", code="provider_unavailable"
        )
    return candidates


def request_for(call: ChatCall, candidate: Candidate) -> ChatRequest:
    """The request as sent to one candidate: the route's default max_tokens when the client gave none,
    so every call has a bounded cost (and Anthropic, which requires it, gets one)."""
    if call.request.max_tokens is not None:
        return call.request
    return replace(call.request, max_tokens=candidate.route.default_max_tokens)


def _attempt(candidate: Candidate, error: ProviderError) -> Attempt:
    return Attempt(candidate.provider.name, candidate.upstream_model, error.code, error.status, error.message[:300])


def refusal_error(provider: str) -> ApiError:
    return ApiError(
        f"The provider {provider} declined to answer this prompt (content policy).", code="content_policy_violation"
    )


def client_error(error: ProviderError, attempts: list[Attempt]) -> ApiError:
    """A non-retryable provider error, as the client's answer."""
    if error.code == "model_not_found":
        return NotFound(f"{error.provider}: {error.message}", code="model_not_found", param="model")
    status = error.status if error.status in (400, 413, 422) else 400
    return ApiError(
        f"{error.provider} rejected the request: {error.message}",
        status=status,
        code=error.code,
        extra={"attempts": [a.as_dict() for a in attempts]},
    )


def all_failed_error(attempts: list[Attempt]) -> ApiError:
    """Every candidate failed: 504 if they all timed out, 503 if any was overloaded or cooling down, else 502."""
    codes = {a.code for a in attempts}
    if codes == {"upstream_timeout"}:
        status, code = 504, "upstream_timeout"
    elif codes & {"upstream_overloaded", "upstream_rate_limited", "provider_cooling_down"}:
        status, code = 503, "providers_unavailable"
    else:
        status, code = 502, "upstream_error"
    tried = ", ".join(f"{a.provider}/{a.model} ({a.code})" for a in attempts)
    return ApiError(
        f"Every provider failed: {tried}.",
        status=status,
        type="api_error",
        code=code,
        extra={"attempts": [a.as_dict() for a in attempts]},
    )


async def _usable(candidates: list[Candidate], attempts: list[Attempt]) -> AsyncIterator[Candidate]:
    """The candidates whose circuit is closed; the others are recorded as skipped."""
    await breaker.refresh(c.provider.name for c in candidates)
    for candidate in candidates:
        if breaker.is_open(candidate.provider.name):
            attempts.append(
                Attempt(
                    candidate.provider.name,
                    candidate.upstream_model,
                    "provider_cooling_down",
                    message="skipped: failing recently",
                )
            )
            continue
        yield candidate


def exhausted_error(attempts: list[Attempt]) -> ApiError:
    """No candidate answered: a refusal among them is the answer (the prompt is the problem), else all_failed."""
    refusals = [attempt for attempt in attempts if attempt.code == REFUSED]
    return refusal_error(refusals[-1].provider) if refusals else all_failed_error(attempts)


def _refused(candidate: Candidate, attempts: list[Attempt]) -> None:
    """Record a refusal; it is the client's answer unless this route falls back on refusals."""
    attempts.append(
        Attempt(
            candidate.provider.name, candidate.upstream_model, REFUSED, message="declined the prompt (content policy)"
        )
    )
    if not candidate.route.fallback_on_refusal:
        raise refusal_error(candidate.provider.name)
    logger.info("%s refused the prompt; route %s falls back on refusals", candidate.provider.name, candidate.route.name)


async def _failed(candidate: Candidate, error: ProviderError, attempts: list[Attempt]) -> None:
    if error.code == REFUSED:  # e.g. Gemini's blocked prompt
        _refused(candidate, attempts)
        return
    attempts.append(_attempt(candidate, error))
    logger.warning("provider call failed: %s (%s, retryable=%s)", error, error.code, error.retryable)
    if error.retryable:
        await breaker.record_failure(candidate.provider.name)
    else:
        raise client_error(error, attempts)


async def _moderated(outcome: ChatOutcome, principal: Principal | None, request_id: str) -> ChatOutcome:
    """MODERATION_CHECK_RESPONSES: the answer through the moderation hooks before the client sees it."""
    result = outcome.result
    try:
        content = await moderate_answer(
            result.content, route=outcome.candidate.route, principal=principal, request_id=request_id
        )
    except ContentBlocked as blocked:
        blocked.outcome = outcome  # the provider did answer (and charge): the caller may bill it
        raise
    return outcome if content == result.content else replace(outcome, result=replace(result, content=content))


async def complete_chat(
    call: ChatCall, candidates: list[Candidate], *, principal: Principal | None = None, request_id: str = ""
) -> ChatOutcome:
    """The first candidate's answer; principal and request_id go into moderation events of the answer."""
    attempts: list[Attempt] = []
    async for candidate in _usable(candidates, attempts):
        client = chat_client_for(candidate.provider)
        try:
            result = await client.complete(request_for(call, candidate), model=candidate.upstream_model)
        except ProviderError as error:
            await _failed(candidate, error, attempts)
            continue
        await breaker.record_success(candidate.provider.name)
        outcome = ChatOutcome(candidate, result, attempts)
        if result.finish_reason == CONTENT_FILTER:
            try:
                _refused(candidate, attempts)
            except ApiError as refusal:
                refusal.outcome = outcome  # the provider answered (and charged): the caller bills it
                raise
            continue
        return await _moderated(outcome, principal, request_id) if settings.MODERATION_CHECK_RESPONSES else outcome
    raise exhausted_error(attempts)


async def open_chat_stream(call: ChatCall, candidates: list[Candidate]) -> ChatStream:
    """Start streaming from the first candidate that yields a first delta (nothing has reached the client yet)."""
    attempts: list[Attempt] = []
    async for candidate in _usable(candidates, attempts):
        deltas = chat_client_for(candidate.provider).stream(
            request_for(call, candidate), model=candidate.upstream_model
        )
        try:
            first = await anext(deltas)
        except ProviderError as error:
            await deltas.aclose()
            await _failed(candidate, error, attempts)
            continue
        except StopAsyncIteration:
            await _failed(
                candidate,
                ProviderError(
                    "the stream ended before any output", candidate.provider.name, True, code="upstream_stream_cut"
                ),
                attempts,
            )
            continue
        await breaker.record_success(candidate.provider.name)
        if first.finish_reason == CONTENT_FILTER and not first.content:
            await deltas.aclose()
            _refused(candidate, attempts)
            continue
        return ChatStream(candidate, first, deltas, attempts)
    raise exhausted_error(attempts)
