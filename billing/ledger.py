"""Writing the usage ledger: one row per request id, exactly once, with the budget settled in the
same transaction (so spent-this-month and the ledger can never disagree)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from billing.budget import Amounts, Reservation, budget_release, budget_settle
from billing.models import UsageRecord
from core.loops import PerLoop
from core.pg import async_pool
from core.shutdown import drain_on_shutdown


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


@functools.cache
def _prep_connection() -> BaseDatabaseWrapper:
    """A connection wrapper for preparing values only (never connected). connections["default"]
    would make a new wrapper per request in async code (a context-local), each one cyclic garbage."""
    return connections.create_connection("default")


def _insert_params(event: UsageEvent) -> list[Any]:
    """The row's values as Django would send them (JSON adapted, defaults applied). Straight from the
    event: a model instance would cost as much again (UsageEvent's fields are the model's attnames)."""
    connection = _prep_connection()
    values = event.__dict__
    return [
        field.get_db_prep_save(values[field.attname] if field.attname in values else field.get_default(), connection)
        for field in _INSERT_FIELDS
    ]


async def aledger_record_usage(event: UsageEvent, reservation: Reservation | None = None) -> None:
    """ledger_record_usage for the event loop: on PostgreSQL, a row with nothing to settle is
    inserted through the async pool, with no thread, sharing a commit with the rows that finish
    while the previous write is in flight (group commit); everything else goes through the ORM.
    Returns once the row is committed: the client is answered only after that."""
    if reservation is None and await async_pool() is not None:
        await _writers.get().write(_insert_params(event))
        return
    await database_sync_to_async(ledger_record_usage)(event, reservation)


class GroupCommit:
    """One writer per event loop. A row that arrives while no write is in flight is written at once,
    alone (one request at a time costs what a single INSERT does); rows that arrive during a write
    wait for it to end and then go together, one transaction and one commit for the batch. No timer:
    batching comes from the time a commit takes, never from waiting for company."""

    MAX_BATCH = 256

    def __init__(self) -> None:
        self.pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self.writing: asyncio.Task[None] | None = None

    async def write(self, params: list[Any]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((params, future))
        if self.writing is None:
            # A task of its own: a caller that is canceled (its client left) must not cancel the
            # write of everyone else's rows, nor its own, which is queued and will be written.
            self.writing = asyncio.get_running_loop().create_task(self._drain())
        await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.MAX_BATCH], self.pending[self.MAX_BATCH :]
                await self._write_batch(batch)
        finally:
            self.writing = None

    async def _write_batch(self, batch: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        try:
            await _insert_rows([params for params, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One bad row must not fail the others: write them one by one, each with its own answer.
            for single in batch:
                await self._write_batch([single])
            return
        for _, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller is gone (shielded, so the future itself is never canceled)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def _insert_rows(rows: list[list[Any]]) -> None:
    pool = await async_pool()
    assert pool is not None
    async with pool.connection() as connection:  # an autocommit connection (core.pg)
        if len(rows) == 1:
            await connection.execute(_insert_sql(), rows[0])  # one round trip: no BEGIN, no COMMIT
            return
        async with connection.transaction(), connection.cursor() as cursor:
            await cursor.executemany(_insert_sql(), rows)  # pipelined, one commit for the batch


_writers: PerLoop[GroupCommit] = PerLoop(GroupCommit)


@drain_on_shutdown
async def flush_ledger() -> None:
    """Write the rows still queued before the pool closes (their requests are waiting for them)."""
    writer = _writers.pop()
    if writer is not None and writer.writing is not None:
        await writer.writing
