"""Writing the usage ledger: one row per request id, exactly once, with the budget settled in the
same transaction (so spent-this-month and the ledger can never disagree)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, connections, transaction
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from billing.budget import Amounts, Reservation, budget_release, budget_settle
from billing.models import UsageRecord
from core.pg import async_pool


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
    cache_write_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    video_seconds: Decimal = Decimal(0)
    usage_estimated: bool = False
    cost_usd: Decimal = Decimal(0)
    error_code: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
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


_INSERT_FIELDS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]


@functools.cache
def _insert_sql() -> str:
    """bulk_create(..., ignore_conflicts=True)'s statement, built once from the model itself."""
    query = InsertQuery(UsageRecord, on_conflict=OnConflict.IGNORE)
    query.insert_values(_INSERT_FIELDS, [UsageRecord(request_id="", user_id=0, model="", status="")])
    [(sql, _)] = query.get_compiler(using="default").as_sql()
    return str(sql)


def _insert_params(event: UsageEvent) -> list[Any]:
    """The row's values as Django would send them (JSON adapted, defaults applied)."""
    connection = connections["default"]
    row = UsageRecord(**event.__dict__)
    return [field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in _INSERT_FIELDS]


async def aledger_record_usage(event: UsageEvent, reservation: Reservation | None = None) -> None:
    """ledger_record_usage for the event loop: on PostgreSQL, a row with nothing to settle is
    inserted through the async pool, with no thread; everything else goes through the ORM."""
    pool = await async_pool() if reservation is None else None
    if pool is None:
        await database_sync_to_async(ledger_record_usage)(event, reservation)
        return
    async with pool.connection() as connection:  # commits when the block ends
        await connection.execute(_insert_sql(), _insert_params(event))
