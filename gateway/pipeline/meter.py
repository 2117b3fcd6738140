"""Metering one request: the budget hold before the provider call, one ledger row after.

Every request that got as far as the hold ends in exactly one of succeeded / failed /
blocked / canceled, each writing the ledger row (zero cost unless something billable was
produced) and settling or releasing the hold, before the client is told the outcome. A
request refused before the hold (unknown model, unpriced route, over quota) writes none.
What is billed, and the worst case held, come from the operation: tokens for chat,
images for image generation, seconds for video.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billing.budget import Amounts, Reservation, abudget_release, abudget_reserve
from billing.ledger import UsageEvent, aledger_record_usage
from billing.models import UsageRecord
from billing.pricing import usage_cost
from core.principal import Principal
from gateway.pipeline.candidates import Attempt
from gateway.pipeline.operations import Operation
from providers.clients.base import Usage
from providers.routing import Candidate

Status = UsageRecord.Status
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Who asks, under which request id, through which endpoint (the ledger row's identity)."""

    principal: Principal
    request_id: str
    endpoint: str


@dataclass(frozen=True)
class Billed:
    """What the ledger recorded for a request: the usage (the provider's, or an estimate) and its cost."""

    usage: Usage
    cost_usd: Decimal


def amounts_of(usage: Usage, cost: Decimal) -> Amounts:
    return Amounts(cost, usage.total_tokens, usage.images, usage.video_seconds)


class Meter:
    def __init__(self, context: RequestContext, operation: Operation[Any], candidates: list[Candidate]):
        self.context, self.operation, self.candidates = context, operation, candidates
        self.started = time.perf_counter()
        self.reservation: Reservation | None = None
        self.recorded = False

    def worst_case(self) -> Amounts:
        """The most this operation can cost on any of its candidates."""
        bounds = []
        for candidate in self.candidates:
            usage = self.operation.worst_case(candidate)
            bounds.append(amounts_of(usage, usage_cost(usage, candidate.route.prices, self.operation.modality)))
        return Amounts(
            max(b.cost_usd for b in bounds),
            max(b.tokens for b in bounds),
            max(b.images for b in bounds),
            max(b.video_seconds for b in bounds),
        )

    async def reserve(self) -> None:
        """Hold the worst case against the user's caps (QuotaExceeded if it does not fit)."""
        caps = self.context.principal.caps
        if caps is None:
            return
        reserving = asyncio.ensure_future(
            abudget_reserve(user_id=self.context.principal.user_id, caps=caps, want=self.worst_case())
        )
        try:
            self.reservation = await asyncio.shield(reserving)
        except asyncio.CancelledError:
            # The client left while the hold was being made: it finishes regardless, so give it back.
            held = await asyncio.gather(reserving, return_exceptions=True)
            if isinstance(held[0], Reservation):
                await abudget_release(held[0])
            raise

    async def bill(
        self, status: str, candidate: Candidate, usage: Usage, attempts: Sequence[Attempt], *, error_code: str = ""
    ) -> Billed:
        """Record what a provider produced, at the candidate route's prices. Returns what was billed
        (the client is shown the same)."""
        cost = usage_cost(usage, candidate.route.prices, self.operation.modality)
        tried = [attempt.as_dict() for attempt in attempts]
        await self._record(status, candidate=candidate, usage=usage, cost=cost, attempts=tried, error_code=error_code)
        return Billed(usage, cost)

    async def nothing_billed(
        self, status: str, error_code: str, attempts: Sequence[dict[str, Any]] = (), *, message: str = ""
    ) -> None:
        """Record a request that produced nothing billable (failed, blocked before a provider, canceled).
        message: the error's text, for meters that keep it (a job's); the ledger keeps the code."""
        await self._record(status, error_code=error_code, attempts=list(attempts))

    def write(self, event: UsageEvent, reservation: Reservation | None) -> Awaitable[None]:
        """Append the ledger row and settle the hold (a media job's meter also finishes the job there)."""
        return aledger_record_usage(event, reservation)

    async def _record(
        self,
        status: str,
        *,
        candidate: Candidate | None = None,
        usage: Usage | None = None,
        cost: Decimal = Decimal(0),
        attempts: list[dict[str, Any]],
        error_code: str = "",
    ) -> None:
        if self.recorded:
            return
        self.recorded = True
        route = candidate.route if candidate else (self.candidates[0].route if self.candidates else None)
        usage = usage or Usage()
        principal = self.context.principal
        event = UsageEvent(
            request_id=self.context.request_id,
            user_id=principal.user_id,
            api_key_id=principal.key_id,
            model=self.operation.model,
            status=status,
            endpoint=self.context.endpoint,
            route=route.name if route else "",
            provider=candidate.provider.name if candidate else "",
            upstream_model=candidate.upstream_model if candidate else "",
            modality=self.operation.modality,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_input_tokens=usage.cache_write_tokens,
            cache_write_1h_input_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            images=usage.images,
            video_seconds=usage.video_seconds,
            usage_estimated=usage.estimated,
            cost_usd=cost,
            error_code=error_code,
            attempts=attempts,
            latency_ms=int((time.perf_counter() - self.started) * 1000),
        )
        reservation, self.reservation = self.reservation, None
        try:
            # Shielded: a client leaving while the row is written must not cancel the write.
            await asyncio.shield(self.write(event, reservation))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("ledger write failed; event for reconciliation: %r", event)
            if reservation is not None:
                await abudget_release(reservation)
            raise
