"""The finance CSV: one row per ledger row, streamed in constant memory.

Columns, in this order (stable: a new column is only ever appended at the end):

    request_id           the request id (unique; one ledger row per request)
    created_at           when it was recorded, ISO-8601 UTC with microseconds and "Z", e.g. 2025-11-01T09:30:00.000000Z
    user                 the username of the key's owner
    api_key_prefix       the visible prefix of the API key used (empty if the key was deleted)
    endpoint             the API endpoint, e.g. chat.complete
    route                the route (name or pattern) that matched
    model                the public model name the client asked for
    provider             the provider that answered (or last failed)
    upstream_model       the provider's own model name
    modality             chat, image or video
    status               succeeded, failed, blocked or canceled
    input_tokens         integer
    output_tokens        integer
    total_tokens         input_tokens + output_tokens
    cached_input_tokens  integer, part of input_tokens: read from the provider's prompt cache
    cache_write_input_tokens     integer, part of input_tokens: written to the prompt cache
    cache_write_1h_input_tokens  integer, part of input_tokens: written to Anthropic's 1-hour cache
    reasoning_tokens     integer, part of output_tokens
    images               integer
    video_seconds        decimal, 3 places, e.g. 8.000
    cost_usd             the exact ledger Decimal, 8 places, never in exponent form, e.g. 0.00000123
    usage_estimated      true when the provider reported no usage and it was estimated, else false
    error_code           the error code of a failed request, else empty
    latency_ms           integer

UTF-8, comma-separated, CRLF line ends, a header row first. Rows are ordered by
(created_at, id), so the same filters always give the same file. A text cell that a
spreadsheet would run as a formula (starting with =, +, -, @, tab or carriage return)
is prefixed with a single quote; numeric columns are never altered.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from billing.models import UsageRecord
from billing.pricing import COST_QUANTUM

HEADER = (
    "request_id",
    "created_at",
    "user",
    "api_key_prefix",
    "endpoint",
    "route",
    "model",
    "provider",
    "upstream_model",
    "modality",
    "status",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
    "reasoning_tokens",
    "images",
    "video_seconds",
    "cost_usd",
    "usage_estimated",
    "error_code",
    "latency_ms",
)
# What usage_csv_row reads from the database, in its order (total_tokens is computed).
_FIELDS = (
    "request_id",
    "created_at",
    "user__username",
    "api_key__prefix",
    "endpoint",
    "route",
    "model",
    "provider",
    "upstream_model",
    "modality",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
    "reasoning_tokens",
    "images",
    "video_seconds",
    "cost_usd",
    "usage_estimated",
    "error_code",
    "latency_ms",
)

VIDEO_SECONDS_PLACES = Decimal("0.001")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 64 * 1024  # rows are sent in chunks of about this size, not one socket write per row
DB_CHUNK_ROWS = 2000


def csv_text(value: str | None) -> str:
    """A text cell that a spreadsheet will show as text, never evaluate as a formula."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def csv_timestamp(value: dt.datetime) -> str:
    if value.utcoffset():
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def csv_decimal(value: Decimal, places: Decimal) -> str:
    # "f": str(Decimal("0.00000012")) would be "1.2E-7", which is exact but not what finance expects.
    return f"{Decimal(value).quantize(places):f}"


def usage_csv_row(values: tuple[Any, ...]) -> list[str | int]:
    """One ledger row (the values of _FIELDS) as the CSV's cells."""
    (
        request_id,
        created_at,
        user,
        api_key_prefix,
        endpoint,
        route,
        model,
        provider,
        upstream_model,
        modality,
        status,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        cache_write_1h_input_tokens,
        reasoning_tokens,
        images,
        video_seconds,
        cost_usd,
        usage_estimated,
        error_code,
        latency_ms,
    ) = values
    return [
        csv_text(request_id),
        csv_timestamp(created_at),
        csv_text(user),
        csv_text(api_key_prefix),
        csv_text(endpoint),
        csv_text(route),
        csv_text(model),
        csv_text(provider),
        csv_text(upstream_model),
        csv_text(modality),
        csv_text(status),
        input_tokens,
        output_tokens,
        input_tokens + output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        cache_write_1h_input_tokens,
        reasoning_tokens,
        images,
        csv_decimal(video_seconds, VIDEO_SECONDS_PLACES),
        csv_decimal(cost_usd, COST_QUANTUM),
        "true" if usage_estimated else "false",
        csv_text(error_code),
        latency_ms,
    ]


class _Line:
    """A file-like object whose write() hands back what it was given: csv.writer formats one row at a time."""

    def write(self, value: str) -> str:
        return value


def _read_snapshot(using: str) -> AbstractContextManager[None]:
    """On PostgreSQL, a transaction around the export. Outside one, Django declares its server-side
    cursor WITH HOLD, and PostgreSQL then materialises the whole result (a million rows: over a
    second and a temporary file) before the first row is sent; inside one, rows stream as they are
    read. Not on SQLite: there an open transaction would hold a write lock if the settings asked
    for IMMEDIATE transactions, and its cursor streams anyway."""
    return transaction.atomic(using=using) if connections[using].vendor == "postgresql" else nullcontext()


def usage_csv_chunks(records: QuerySet[UsageRecord]) -> Generator[bytes, None, None]:
    """The CSV of records as byte chunks of about CHUNK_BYTES, reading the database DB_CHUNK_ROWS at a time
    (a server-side cursor on PostgreSQL), so memory stays flat however many rows there are."""
    writer = csv.writer(_Line())
    yield writer.writerow(HEADER).encode()
    with _read_snapshot(records.db):
        rows = records.order_by("created_at", "id").values_list(*_FIELDS).iterator(chunk_size=DB_CHUNK_ROWS)
        lines, size = [], 0
        for values in rows:
            line = writer.writerow(usage_csv_row(values))
            lines.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                yield "".join(lines).encode()
                lines, size = [], 0
        if lines:
            yield "".join(lines).encode()


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _async_chunks(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """chunks, each pulled in the request's sync thread (where its database connection lives)."""
    pull = sync_to_async(_next_chunk, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks)) is not None:
            yield chunk
    finally:  # also on client disconnect: release the server-side cursor
        await sync_to_async(chunks.close, thread_sensitive=True)()


def usage_csv_response(request: HttpRequest, records: QuerySet[UsageRecord], *, filename: str) -> StreamingHttpResponse:
    """A streamed CSV download of records.

    Served over ASGI, a StreamingHttpResponse reads a synchronous iterator into a list before
    sending anything, so there the chunks are handed over as an asynchronous iterator instead.
    """
    chunks = usage_csv_chunks(records)
    content: Iterable[bytes] | AsyncIterator[bytes] = (
        _async_chunks(chunks) if isinstance(getattr(request, "_request", request), ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def usage_csv_filename(date_from: dt.date | None = None, date_to: dt.date | None = None) -> str:
    if date_from and date_to:
        return f"pulse-usage_{date_from:%Y-%m-%d}_{date_to:%Y-%m-%d}.csv"
    return f"pulse-usage_{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%SZ}.csv"
