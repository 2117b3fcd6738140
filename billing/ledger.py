"""Writing the usage ledger: one row per request id, exactly once, with the budget settled in the
same transaction (so spent-this-month and the ledger can never disagree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction

from billing.budget import Amounts, Reservation, budget_release, budget_settle
from billing.models import UsageRecord


@dataclass(frozen=True)
class UsageEvent:
    request_id: str
    user_id: int
    api_key_id: int | None
    model: str
    status: str
    endpoint: str = ""
    route: str = ""
    provider: str = ""
    upstream_model: str = ""
    modality: str = "chat"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    video_seconds: Decimal = Decimal(0)
    usage_estimated: bool = False
    cost_usd: Decimal = Decimal(0)
    error_code: str = ""
    attempts: list[dict] = field(default_factory=list)
    latency_ms: int = 0

    @property
    def amounts(self) -> Amounts:
        return Amounts(self.cost_usd, self.input_tokens + self.output_tokens, self.images, self.video_seconds)


def ledger_record_usage(event: UsageEvent, reservation: Reservation | None = None) -> None:
    """Append the event and settle its reservation. The request id is unique: writing the same
    request again changes nothing (its hold is released), so a retried write never bills twice."""
    if reservation is None:
        # Nothing to settle: one INSERT ... ON CONFLICT DO NOTHING, a single round trip.
        UsageRecord.objects.bulk_create([UsageRecord(**event.__dict__)], ignore_conflicts=True)
        return
    with transaction.atomic():
        try:
            with transaction.atomic():
                UsageRecord.objects.create(**event.__dict__)
        except IntegrityError:
            budget_release(reservation)
            return
        budget_settle(reservation, event.amounts)


aledger_record_usage = database_sync_to_async(ledger_record_usage)
