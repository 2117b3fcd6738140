"""Writing the usage ledger: one row per request id, exactly once, with the budget settled in the
same transaction (so spent-this-month and the ledger can never disagree)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from billing.budget import Amounts, Reservation, budget_release, budget_settle, settle_params, settle_sql
from billing.models import UsageRecord
from core.batching import Coalescer
from core.loops import PerLoop
from core.pg import execute, is_postgresql, serial_connection
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


# Columns whose Python values psycopg sends as they are (an event's str, int, bool, datetime): Django's
# preparation would only check and re-wrap them. Any other column (the amounts, whose Decimals Django
# checks and rounds to the column; the JSON attempts) is prepared by its field, exactly as the ORM does.
_PLAIN = (models.CharField, models.IntegerField, models.BooleanField, models.DateTimeField)
_PREPARED = [None if isinstance(field, (*_PLAIN, models.ForeignKey)) else field for field in _INSERT_FIELDS]


def _insert_params(event: UsageEvent) -> list[Any]:
    """The row's values (JSON adapted, defaults applied), straight from the event: a model instance
    would cost as much again (UsageEvent's fields are the model's attnames)."""
    connection = _prep_connection()
    values = event.__dict__
    row = [values[field.attname] if field.attname in values else field.get_default() for field in _INSERT_FIELDS]
    return [
        value if prep is None else prep.get_db_prep_save(value, connection)
        for value, prep in zip(row, _PREPARED, strict=True)
    ]


def aledger_record_usage(event: UsageEvent, reservation: Reservation | None = None) -> Awaitable[None]:
    """ledger_record_usage for the event loop, begun now; awaiting it returns once the row is committed
    (the client is answered only after that). On PostgreSQL through the async pool, with no thread: a
    row with nothing to settle is queued at once for a commit shared with the rows that finish while the
    previous write is in flight (group commit), and its future returned, so shielding it from a client
    who leaves (gateway.pipeline.meter) makes no task; a capped user's row goes alone, with its
    settlement in the same statement. Elsewhere (SQLite) through the ORM."""
    if not is_postgresql():
        written: Awaitable[None] = database_sync_to_async(ledger_record_usage)(event, reservation)
        return written
    if reservation is None:
        return _group_commits.get().enqueue(_insert_params(event))
    return _insert_and_settle(_insert_params(event), reservation, event.amounts)


@functools.cache
def _insert_and_settle_sql() -> str:
    """The row and its budget settlement as one statement, so atomic with no transaction to open: the
    hold becomes what was used, or is only released when the request id was already written."""
    used_if_new = "(CASE WHEN EXISTS (SELECT FROM inserted) THEN %s ELSE 0 END)"
    return f"WITH inserted AS ({_insert_sql()} RETURNING 1) {settle_sql(used_if_new)}"


async def _insert_and_settle(row: list[Any], reservation: Reservation, used: Amounts) -> None:
    await execute(_insert_and_settle_sql(), [*row, *settle_params(reservation, used)])


MAX_BATCH = 256  # rows per commit


async def _write_rows(rows: list[list[Any]]) -> list[Exception | None]:
    """One transaction and one commit for the batch; each row's outcome. If the batch fails, its rows
    are written one by one: one bad row must not fail the requests of the others."""
    try:
        await _insert_rows(rows)
        return [None] * len(rows)
    except Exception as exc:
        if len(rows) == 1:
            return [exc]
    return [(await _write_rows([row]))[0] for row in rows]


@functools.cache
def _copy_sql() -> str:
    quote = _prep_connection().ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in _INSERT_FIELDS)
    return f"COPY {quote(UsageRecord._meta.db_table)} ({columns}) FROM STDIN"


async def _insert_rows(rows: list[list[Any]]) -> None:
    # An autocommit connection that the group commit keeps (one batch is written at a time).
    async with serial_connection() as connection:
        if len(rows) == 1:
            # One round trip: no BEGIN, no COMMIT; prepared, so only the values cross the wire.
            await connection.execute(_insert_sql(), rows[0], prepare=True)
            return
        # A batch is one COPY: one statement, so atomic with no BEGIN or COMMIT to send, and about half
        # the client CPU of an executemany in a transaction (each round trip costs 100 µs or more of
        # CPU on a VM). COPY has no ON CONFLICT: a request id already written fails the batch, and
        # _write_rows then writes its rows one by one, that one skipped as the INSERT skips it.
        async with connection.cursor() as cursor, cursor.copy(_copy_sql()) as copy:
            for row in rows:
                await copy.write_row(row)


# One writer per event loop (Coalescer: a lone row is written at once; rows that finish during a
# write wait for it to end and go together).
_group_commits: PerLoop[Coalescer[list[Any], None]] = PerLoop(lambda: Coalescer(_write_rows, max_batch=MAX_BATCH))


@drain_on_shutdown
async def flush_ledger() -> None:
    """Write the rows still queued for a group commit before the pool closes (their requests are
    waiting for them); a capped user's row is a core.pg.execute, which core.pg's own drain awaits."""
    writer = _group_commits.pop()
    if writer is not None:
        await writer.idle()
