"""The request pipeline, once for every operation and transport.

    answer = await run(context, ChatCompletion(call))          # an answer, billed
    stream = await open_stream(context, ChatStreaming(call))   # a stream, billed as it ends

Plan the candidates from the routing table, hold the worst case against the user's caps,
moderate the prompt, try the candidates with fallback and the circuit breaker, then meter
exactly once and return what was billed. Every outcome is decided here: SUCCEEDED (an
answer), BLOCKED (moderation or the provider's content policy; billed for what the provider
produced), FAILED (any error; billed for what a broken stream produced) or CANCELED (the
client left). Transports (HTTP consumers, the WebSocket, Celery tasks) only parse their
input, call these, and render the result; admission (key, rate limit) comes first, in
gateway.pipeline.admission.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

from django.conf import settings

from billing.models import UsageRecord
from core.errors import CONTENT_POLICY_VIOLATION, DomainError
from gateway.errors import ApiError, as_api_error
from gateway.moderation.base import ContentBlocked
from gateway.moderation.pipeline import moderate_answer, moderate_prompt
from gateway.pipeline.candidates import Attempt, Settled, plan_candidates, refusal_error, try_candidates
from gateway.pipeline.meter import Billed, Meter, RequestContext
from gateway.pipeline.operations import ChatStreaming, OpenedStream, Operation
from providers.clients.base import ChatDelta, ChatResult, ProviderError, Usage
from providers.routing import Candidate, arouting_table

Status = UsageRecord.Status
logger = logging.getLogger(__name__)
R = TypeVar("R")
OperationT = TypeVar("OperationT", bound=Operation[Any])


@dataclass(frozen=True)
class Answer(Generic[R]):
    """A provider's answer, billed: the result (as moderated), the usage and cost the ledger holds."""

    candidate: Candidate
    result: R
    usage: Usage
    cost_usd: Decimal
    attempts: list[Attempt]


def outcome_of(error: BaseException) -> tuple[str, str]:
    """(ledger status, error code) of a request that ended in error."""
    if isinstance(error, asyncio.CancelledError):
        return Status.CANCELED, "client_disconnected"
    code = as_api_error(error).code if isinstance(error, ApiError | DomainError) else "internal_error"
    return (Status.BLOCKED if code == CONTENT_POLICY_VIOLATION else Status.FAILED), code


async def _record_failure(meter: Meter, error: BaseException) -> None:
    """The one ledger row of a request that ended in error (a no-op when it was already billed)."""
    status, code = outcome_of(error)
    attempts = error.extra.get("attempts", []) if isinstance(error, ApiError) else []
    await meter.nothing_billed(status, code, attempts)


async def _prepared(context: RequestContext, operation: OperationT) -> tuple[OperationT, list[Candidate], Meter]:
    """Plan, hold the worst case, moderate. A failure after the hold is metered here."""
    table = await arouting_table()
    candidates = plan_candidates(operation, table)
    meter = Meter(context, operation, candidates)
    await meter.reserve()
    try:
        # The requested route decides (the first candidate may be a fallback when its provider is off).
        route = table.match(operation.model)
        moderated = await moderate_prompt(
            operation, route=route, principal=context.principal, request_id=context.request_id
        )
        return moderated, candidates, meter
    except BaseException as error:
        await _record_failure(meter, error)
        raise


async def _checked_answer(candidate: Candidate, result: R, context: RequestContext) -> R:
    """MODERATION_CHECK_RESPONSES: a chat answer through the moderation hooks before the client sees it."""
    assert isinstance(result, ChatResult)  # only chat answers are checked
    content = await moderate_answer(
        result.content, route=candidate.route, principal=context.principal, request_id=context.request_id
    )
    return result if content == result.content else replace(result, content=content)


async def _refused(settled: Settled[R], operation: Operation[R], meter: Meter) -> NoReturn:
    """The provider answered (and charged) but declined the prompt: BLOCKED, billed, and refused."""
    usage = operation.usage_of(settled.result)
    await operation.discard(settled.result)
    await meter.bill(Status.BLOCKED, settled.candidate, usage, settled.attempts, error_code=CONTENT_POLICY_VIOLATION)
    raise refusal_error(settled.candidate.provider.name)


async def run(context: RequestContext, operation: Operation[R]) -> Answer[R]:
    """The operation's answer from the first candidate that gives one, billed; or the ApiError to answer."""
    operation, candidates, meter = await _prepared(context, operation)
    try:
        settled = await try_candidates(candidates, operation)
        if settled.refused:
            await _refused(settled, operation, meter)
        usage = operation.usage_of(settled.result)
        result = settled.result
        if settings.MODERATION_CHECK_RESPONSES and isinstance(result, ChatResult):
            try:
                result = await _checked_answer(settled.candidate, result, context)
            except ContentBlocked as blocked:  # withheld, but produced (and charged) all the same
                await meter.bill(Status.BLOCKED, settled.candidate, usage, settled.attempts, error_code=blocked.code)
                raise
        billed = await meter.bill(Status.SUCCEEDED, settled.candidate, usage, settled.attempts)
    except BaseException as error:
        await _record_failure(meter, error)
        raise
    return Answer(settled.candidate, result, billed.usage, billed.cost_usd, settled.attempts)


class StreamInterrupted(ApiError):
    """The provider's stream broke after output reached the client: no fallback now, the stream
    ends with this as its last event."""

    status, type, code = 502, "api_error", "stream_interrupted"


class MeteredStream:
    """A chat stream whose provider is fixed, metered exactly once: when it ends (SUCCEEDED), when the
    provider breaks off (FAILED, then StreamInterrupted), or when the transport leaves the block
    early (CANCELED, e.g. the client disconnected). Use as `async with stream: async for delta in stream`."""

    def __init__(self, settled: Settled[OpenedStream], operation: ChatStreaming, meter: Meter):
        self.candidate, self.attempts = settled.candidate, settled.attempts
        self.finish_reason = "stop"
        self.billed: Billed | None = None  # set when the stream has ended
        self._opened, self._operation, self._meter = settled.result, operation, meter
        self._deltas = self._opened.deltas()
        self._reported: Usage | None = None
        self._chars = 0

    @property
    def usage(self) -> Usage:
        return self.billed.usage if self.billed else self._operation.usage_billed(self._reported, self._chars)

    @property
    def cost_usd(self) -> Decimal:
        return self.billed.cost_usd if self.billed else Decimal(0)

    def __aiter__(self) -> AsyncIterator[ChatDelta]:
        return self

    async def __anext__(self) -> ChatDelta:
        try:
            delta = await anext(self._deltas)
        except StopAsyncIteration:
            self.billed = await self._bill(Status.SUCCEEDED)
            raise
        except ProviderError as error:
            logger.warning("stream from %s broke after it started: %s", error.provider, error)
            self.billed = await self._bill(Status.FAILED, StreamInterrupted.code)
            raise StreamInterrupted(f"The stream from {error.provider} broke off: {error.message}") from error
        self._chars += len(delta.content)
        self.finish_reason = delta.finish_reason or self.finish_reason
        self._reported = delta.usage or self._reported
        return delta

    async def _bill(self, status: str, error_code: str = "") -> Billed:
        return await self._meter.bill(status, self.candidate, self.usage, self.attempts, error_code=error_code)

    async def __aenter__(self) -> MeteredStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self.billed is None:  # left before the end: bill what was produced
                status, code = outcome_of(error) if error is not None else (Status.CANCELED, "client_disconnected")
                self.billed = await self._bill(status, code)
        finally:
            await self._opened.aclose()


async def open_stream(context: RequestContext, operation: ChatStreaming) -> MeteredStream:
    """A stream from the first candidate that yields a first delta; a refusal there is BLOCKED."""
    operation, candidates, meter = await _prepared(context, operation)
    try:
        settled = await try_candidates(candidates, operation)
        if settled.refused:
            await _refused(settled, operation, meter)
    except BaseException as error:
        await _record_failure(meter, error)
        raise
    return MeteredStream(settled, operation, meter)
