"""Metering one chat request: the budget hold before the provider call, one ledger row after.

Every path through a request ends in exactly one of succeeded / failed / blocked /
canceled, each writing the ledger row (zero cost unless something billable was
produced) and settling or releasing the hold, before the client is told the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from channels.db import database_sync_to_async

from billing.budget import Amounts, Reservation, budget_release, budget_reserve, estimate_tokens, worst_case_tokens
from billing.ledger import UsageEvent, aledger_record_usage
from billing.models import UsageRecord
from billing.pricing import chat_cost
from core.principal import Principal
from gateway.chat_formats import ChatCall
from gateway.errors import ApiError
from providers.clients.base import Usage
from providers.routing import Candidate

Status = UsageRecord.Status
logger = logging.getLogger(__name__)


def worst_case(call: ChatCall, candidates: list[Candidate]) -> Amounts:
    """The most this call can cost on any of its candidates."""
    # UTF-8 bytes, not characters: an emoji or a rare CJK character can be several tokens, but no
    # tokenizer makes more tokens than bytes.
    chars = sum(len(m.content.encode()) for m in call.request.messages)
    bounds = []
    for candidate in candidates:
        max_tokens = call.request.max_tokens or candidate.route.default_max_tokens
        input_tokens, output_tokens = worst_case_tokens(chars, max_tokens, len(call.request.messages))
        usage = Usage(input_tokens, output_tokens)
        bounds.append((chat_cost(usage, candidate.route.prices), usage.total_tokens))
    return Amounts(max(cost for cost, _ in bounds), max(tokens for _, tokens in bounds))


class ChatMeter:
    def __init__(
        self, *, principal: Principal, request_id: str, endpoint: str, call: ChatCall, candidates: list[Candidate]
    ):
        self.principal, self.request_id, self.endpoint = principal, request_id, endpoint
        self.call, self.candidates = call, candidates
        self.started = time.perf_counter()
        self.reservation: Reservation | None = None
        self.recorded = False

    async def reserve(self) -> None:
        """Hold the worst case against the user's caps (QuotaExceeded if it does not fit)."""
        if self.principal.caps is not None:
            self.reservation = await database_sync_to_async(budget_reserve)(
                user_id=self.principal.user_id, caps=self.principal.caps, want=worst_case(self.call, self.candidates)
            )

    async def succeeded(
        self,
        candidate: Candidate,
        usage: Usage | None,
        attempts: list[dict],
        *,
        output_chars: int,
        status: str = Status.SUCCEEDED,
        error_code: str = "",
    ) -> tuple[Decimal, Usage]:
        """Record what a provider produced; usage it never reported is estimated and marked so.
        Returns the cost and the usage billed (the client is shown the same)."""
        usage = self._or_estimate(usage, output_chars)
        cost = chat_cost(usage, candidate.route.prices)
        await self._record(
            status, candidate=candidate, usage=usage, cost=cost, attempts=attempts, error_code=error_code
        )
        return cost, usage

    def _or_estimate(self, usage: Usage | None, output_chars: int) -> Usage:
        """The provider's usage; when it reported none (None, or the clients' Usage(estimated=True)),
        an estimate from the text."""
        if usage is not None and not usage.estimated:
            return usage
        prompt_chars = sum(len(m.content) for m in self.call.request.messages)
        return Usage(estimate_tokens(prompt_chars), estimate_tokens(output_chars), estimated=True)

    async def failed(self, error: ApiError, status: str = Status.FAILED) -> None:
        await self._record(status, error_code=error.code, attempts=error.extra.get("attempts", []))

    async def canceled(self) -> None:
        await self._record(Status.CANCELED, error_code="client_disconnected")

    async def _record(
        self,
        status: str,
        *,
        candidate: Candidate | None = None,
        usage: Usage | None = None,
        cost: Decimal = Decimal(0),
        attempts: list[dict] = (),
        error_code: str = "",
    ) -> None:
        if self.recorded:
            return
        self.recorded = True
        route = candidate.route if candidate else (self.candidates[0].route if self.candidates else None)
        usage = usage or Usage()
        event = UsageEvent(
            request_id=self.request_id,
            user_id=self.principal.user_id,
            api_key_id=self.principal.key_id,
            model=self.call.model,
            status=status,
            endpoint=self.endpoint,
            route=route.name if route else "",
            provider=candidate.provider.name if candidate else "",
            upstream_model=candidate.upstream_model if candidate else "",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_estimated=usage.estimated,
            cost_usd=cost,
            error_code=error_code,
            attempts=list(attempts),
            latency_ms=int((time.perf_counter() - self.started) * 1000),
        )
        reservation, self.reservation = self.reservation, None
        try:
            # Shielded: a client leaving while the row is written must not cancel the write.
            await asyncio.shield(aledger_record_usage(event, reservation))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("ledger write failed; event for reconciliation: %r", event)
            if reservation is not None:
                await database_sync_to_async(budget_release)(reservation)
            raise
