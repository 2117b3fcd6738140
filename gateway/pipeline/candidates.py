"""Planning the candidates for a request, and trying them in order until one answers.

A retryable failure (connect error, timeout, 408, 429, 5xx, 529, our own bad provider
credentials) before any byte reached the client moves on to the next candidate; anything
else is the client's answer. A provider that keeps failing is skipped while its circuit
breaker is open.

A provider's content-policy refusal (OpenAI content_filter, Anthropic refusal, Gemini
SAFETY or a blocked prompt) ends the loop as a refused result, which the pipeline bills
and answers as 400 content_policy_violation, like Pulse's own moderation; unless the
refusing candidate's route has fallback_on_refusal: then the next candidate is tried (the
breaker is not told: refusing is not failing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.errors import CONTENT_POLICY_VIOLATION
from gateway.errors import ApiError, InvalidRequest, NotFound
from gateway.pipeline.operations import Operation
from providers.breaker import breaker
from providers.clients.base import UNSUPPORTED_CAPABILITY, ProviderError
from providers.routing import Candidate, RoutingTable

logger = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass
class Attempt:
    provider: str
    model: str
    code: str
    status: int | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "code": self.code,
            "status": self.status,
            "message": self.message,
        }


@dataclass
class Settled(Generic[R]):
    """The candidate that answered, its result, and what was tried before it. refused: the
    provider declined the prompt (content policy) and the route does not fall back on that."""

    candidate: Candidate
    result: R
    attempts: list[Attempt] = field(default_factory=list)
    refused: bool = False


def plan_candidates(operation: Operation[Any], table: RoutingTable) -> list[Candidate]:
    """The candidates for an operation, or the client error that explains why there are none."""
    model, modality = operation.model, operation.modality
    for index, name in enumerate(operation.fallbacks):
        if table.match(name) is None:
            raise InvalidRequest(
                f"Unknown fallback model {name!r}.", code="model_not_found", param=f"fallbacks.{index}"
            )
    route = table.match(model)
    if route is None or not route.enabled:
        raise NotFound(
            f"The model {model!r} does not exist or is not available.", code="model_not_found", param="model"
        )
    if route.modality != modality:
        raise InvalidRequest(
            f"{model!r} is a {route.modality} model, not a {modality} model.", code="wrong_modality", param="model"
        )
    if not route.prices.covers(modality):
        raise ApiError(
            f"The model {model!r} has no price set (route {route.name!r}): an admin must set its "
            "prices before it can be used.",
            status=403,
            type="permission_error",
            code="model_not_priced",
            param="model",
        )
    # A fallback without prices is skipped: nothing is ever billed at an unknown price.
    candidates = [c for c in table.candidates(model, operation.fallbacks, modality) if c.route.prices.covers(modality)]
    if not candidates:
        raise ApiError(
            f"No enabled provider serves {model!r}.", status=503, type="api_error", code="provider_unavailable"
        )
    return able_candidates(operation, candidates)


def able_candidates(operation: Operation[Any], candidates: list[Candidate]) -> list[Candidate]:
    """The candidates whose provider can do everything the request asks (a fallback that cannot is
    skipped); when none can, the client's error names the first field the first candidate cannot honour."""
    refusals = [operation.unsupported(candidate) for candidate in candidates]
    able = [candidate for candidate, refusal in zip(candidates, refusals, strict=True) if refusal is None]
    if able:
        return able
    first = refusals[0]
    assert first is not None
    provider = candidates[0].provider.name
    raise InvalidRequest(
        f"{first.param}: {first.message} (provider {provider})", code="unsupported_parameter", param=first.param
    )


def refusal_error(provider: str) -> ApiError:
    return ApiError(
        f"The provider {provider} declined to answer this prompt (content policy).", code=CONTENT_POLICY_VIOLATION
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


def exhausted_error(attempts: list[Attempt]) -> ApiError:
    """No candidate answered: a refusal among them is the answer (the prompt is the problem), else all_failed."""
    refusals = [attempt for attempt in attempts if attempt.code == CONTENT_POLICY_VIOLATION]
    return refusal_error(refusals[-1].provider) if refusals else all_failed_error(attempts)


def _cooling_down(candidate: Candidate, attempts: list[Attempt]) -> bool:
    """Whether the candidate's circuit is open; if so it is recorded as skipped. Asked as each candidate's
    turn comes (a failure of an earlier one may have just opened its provider's circuit)."""
    if not breaker.is_open(candidate.provider.name):
        return False
    attempts.append(
        Attempt(
            candidate.provider.name,
            candidate.upstream_model,
            "provider_cooling_down",
            message="skipped: failing recently",
        )
    )
    return True


def _record_refusal(candidate: Candidate, attempts: list[Attempt]) -> bool:
    """Record a refusal; True when it is the client's answer (the route does not fall back on refusals)."""
    attempts.append(
        Attempt(
            candidate.provider.name,
            candidate.upstream_model,
            CONTENT_POLICY_VIOLATION,
            message="declined the prompt (content policy)",
        )
    )
    if candidate.route.fallback_on_refusal:
        logger.info(
            "%s refused the prompt; route %s falls back on refusals", candidate.provider.name, candidate.route.name
        )
        return False
    return True


async def _failed(candidate: Candidate, error: ProviderError, attempts: list[Attempt]) -> None:
    """Record a failed call; raise the client's error unless another candidate may be tried."""
    if error.code == CONTENT_POLICY_VIOLATION:  # e.g. Gemini's blocked prompt: nothing was produced
        if _record_refusal(candidate, attempts):
            raise refusal_error(candidate.provider.name)
        return
    attempts.append(
        Attempt(candidate.provider.name, candidate.upstream_model, error.code, error.status, error.message[:300])
    )
    logger.warning("provider call failed: %s (%s, retryable=%s)", error, error.code, error.retryable)
    if not error.retryable:
        raise client_error(error, attempts)
    if error.code != UNSUPPORTED_CAPABILITY:  # a route set up wrong is not a provider failing
        await breaker.record_failure(candidate.provider.name)


async def try_candidates(candidates: list[Candidate], operation: Operation[R]) -> Settled[R]:
    """The first candidate's answer to the operation, in order, with fallback and the circuit breaker."""
    attempts: list[Attempt] = []
    # A plain loop, not an async generator of the usable candidates: the early return would leave such a
    # generator unfinished, and the event loop then spends a task (and a wake-up) on closing it.
    await breaker.refresh(c.provider.name for c in candidates)
    for candidate in candidates:
        if _cooling_down(candidate, attempts):
            continue
        try:
            result = await operation.call(candidate)
        except ProviderError as error:
            await _failed(candidate, error, attempts)
            continue
        try:
            await breaker.record_success(candidate.provider.name)
            if not operation.refused(result):
                return Settled(candidate, result, attempts)
            if _record_refusal(candidate, attempts):
                return Settled(candidate, result, attempts, refused=True)
        except BaseException:  # canceled meanwhile: nobody will use (or close) the result
            await operation.discard(result)
            raise
        await operation.discard(result)
    raise exhausted_error(attempts)
