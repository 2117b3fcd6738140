"""The request pipeline, once for every operation and transport.

    answer = await run(context, ChatCompletion(call))                 # an answer, billed
    async with open_stream(context, ChatStreaming(call)) as stream:   # a stream, billed as it ends
        async for delta in stream: ...

Plan the candidates from the routing table, hold the worst case against the user's caps,
moderate the prompt, try the candidates with fallback and the circuit breaker, then meter
exactly once and return what was billed. Every outcome is decided here: SUCCEEDED (an
answer), BLOCKED (moderation or the provider's content policy; billed for what the provider
produced), FAILED (any error; billed for what a broken stream produced) or CANCELED (the
client left; billed likewise). A request refused before the hold (unknown model, unpriced
route, quota) writes no ledger row: nothing was attempted. Transports (HTTP consumers, the
WebSocket, Celery tasks) only parse their input, call these, and render the result;
admission (key, rate limit) comes first, in gateway.pipeline.admission.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, NoReturn, TypeVar

from billing.models import UsageRecord
from core.errors import CONTENT_POLICY_VIOLATION, DomainError
from gateway.errors import ApiError
from gateway.moderation.base import ContentBlocked
from gateway.moderation.pipeline import moderate_prompt
from gateway.pipeline.candidates import Attempt, Settled, plan_candidates, refusal_error, try_candidates
from gateway.pipeline.meter import Billed, Meter, RequestContext
from gateway.pipeline.operations import ChatStreaming, OpenedStream, Operation
from providers.clients.base import ChatDelta, ProviderError, Usage
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
    code = error.code if isinstance(error, ApiError | DomainError) else "internal_error"
    return (Status.BLOCKED if code == CONTENT_POLICY_VIOLATION else Status.FAILED), code


async def record_failure(meter: Meter, error: BaseException) -> None:
    """The one ledger row of a request that ended in error (a no-op when it was already billed)."""
    status, code = outcome_of(error)
    attempts = error.extra.get("attempts", []) if isinstance(error, ApiError) else []
    message = error.message if isinstance(error, ApiError | DomainError) else ""
    await meter.nothing_billed(status, code, attempts, message=message)


@dataclass
class Prepared(Generic[OperationT]):
    """A request past planning, the budget hold and moderation: ready for its provider call, now
    (run) or later in a worker (a media job keeps the hold and the moderated prompt meanwhile)."""

    operation: OperationT
    candidates: list[Candidate]
    meter: Meter


async def prepare(context: RequestContext, operation: OperationT) -> Prepared[OperationT]:
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
        return Prepared(moderated, candidates, meter)
    except BaseException as error:
        await record_failure(meter, error)
        raise


async def _bill_refusal(settled: Settled[R], operation: Operation[R], meter: Meter) -> NoReturn:
    """The provider answered (and charged) but declined the prompt: BLOCKED, billed, and refused."""
    usage = operation.usage_of(settled.result)
    await operation.discard(settled.result)
    await meter.bill(Status.BLOCKED, settled.candidate, usage, settled.attempts, error_code=CONTENT_POLICY_VIOLATION)
    raise refusal_error(settled.candidate.provider.name)


async def run(context: RequestContext, operation: Operation[R]) -> Answer[R]:
    """The operation's answer from the first candidate that gives one, billed; or the ApiError to answer."""
    if isinstance(operation, ChatStreaming):
        raise TypeError("a stream is opened with open_stream(), which meters it as it ends")
    return await finish(await prepare(context, operation))


async def finish(prepared: Prepared[Operation[R]]) -> Answer[R]:
    """A prepared request's provider call, with fallback, checked and billed exactly once."""
    operation, candidates, meter = prepared.operation, prepared.candidates, prepared.meter
    try:
        settled = await try_candidates(candidates, operation)
        if settled.refused:
            await _bill_refusal(settled, operation, meter)
        usage = operation.usage_of(settled.result)  # what the provider produced, whatever the check says
        try:
            result = await operation.checked(
                settled.result,
                route=settled.candidate.route,
                principal=meter.context.principal,
                request_id=meter.context.request_id,
            )
        except ContentBlocked as blocked:  # withheld, but produced (and charged) all the same
            await meter.bill(Status.BLOCKED, settled.candidate, usage, settled.attempts, error_code=blocked.code)
            raise
        billed = await meter.bill(Status.SUCCEEDED, settled.candidate, usage, settled.attempts)
    except BaseException as error:
        await record_failure(meter, error)
        raise
    return Answer(settled.candidate, result, billed.usage, billed.cost_usd, settled.attempts)


class StreamInterrupted(ApiError):
    """The provider's stream broke after output reached the client: no fallback now, the stream
    ends with this as its last event."""

    status, type, code = 502, "api_error", "stream_interrupted"


class MeteredStream:
    """A chat stream whose provider is fixed. Iterating it yields the deltas; its end bills the
    request (SUCCEEDED), and a provider breaking off bills it FAILED and raises StreamInterrupted.
    open_stream bills any other way out (CANCELED, FAILED) and closes the upstream response."""

    def __init__(self, settled: Settled[OpenedStream], operation: ChatStreaming, meter: Meter):
        self.candidate, self.attempts = settled.candidate, settled.attempts
        self.finish_reason = "stop"
        self.billed: Billed | None = None  # set once the ledger row is written
        self._opened, self._operation, self._meter = settled.result, operation, meter
        self._first: ChatDelta | None = settled.result.first
        self._reported: Usage | None = None
        self._chars = 0

    @property
    def usage(self) -> Usage:
        """What was produced so far: the provider's count, else an estimate from the text."""
        return self.billed.usage if self.billed else self._operation.usage_billed(self._reported, self._chars)

    @property
    def cost_usd(self) -> Decimal:
        return self.billed.cost_usd if self.billed else Decimal(0)

    def __aiter__(self) -> AsyncIterator[ChatDelta]:
        return self

    async def __anext__(self) -> ChatDelta:
        if self._first is not None:
            delta, self._first = self._first, None
        else:
            delta = await self._next_from_provider()
        self._chars += delta.produced_chars()
        self.finish_reason = delta.finish_reason or self.finish_reason
        self._reported = delta.usage or self._reported
        return delta

    async def _next_from_provider(self) -> ChatDelta:
        try:
            return await anext(self._opened.rest)
        except StopAsyncIteration:
            await self.bill(Status.SUCCEEDED)
            raise
        except ProviderError as error:
            logger.warning("stream from %s broke after it started: %s", error.provider, error)
            self._reported = error.usage or self._reported  # what it had counted before it broke
            await self.bill(Status.FAILED, StreamInterrupted.code)
            raise StreamInterrupted(f"The stream from {error.provider} broke off: {error.message}") from error

    async def bill(self, status: str, error_code: str = "") -> None:
        """Write the ledger row for what was produced (once: later calls change nothing)."""
        if self.billed is None:
            meter = self._meter
            self.billed = await meter.bill(status, self.candidate, self.usage, self.attempts, error_code=error_code)


@asynccontextmanager
async def open_stream(context: RequestContext, operation: ChatStreaming) -> AsyncIterator[MeteredStream]:
    """A stream from the first candidate that yields a first delta (a refusal there is BLOCKED), owned
    from its opening to its ledger row: however the block is left, the row is written once and the
    upstream response closed."""
    prepared = await prepare(context, operation)
    operation, candidates, meter = prepared.operation, prepared.candidates, prepared.meter
    try:
        settled = await try_candidates(candidates, operation)
        if settled.refused:
            await _bill_refusal(settled, operation, meter)
    except BaseException as error:
        await record_failure(meter, error)
        raise
    stream = MeteredStream(settled, operation, meter)
    try:
        yield stream
    except BaseException as error:  # left early: the client went away, or a bug while rendering
        status, code = outcome_of(error)
        await stream.bill(status, code)
        raise
    finally:
        await stream.bill(Status.CANCELED, "client_disconnected")  # left the block before the end
        await settled.result.aclose()
