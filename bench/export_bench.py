"""Finance CSV benchmark: a million ledger rows exported through the real view, in constant memory.

    .venv/bin/python bench/export_bench.py [--rows 1000000] [--reuse]

Runs against DATABASE_URL. Unset, it uses a SQLite file of its own (var/export_bench.sqlite3), never
the development database. For PostgreSQL give it a database of its own as well, e.g.

    psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE pulse_bench'
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pulse_bench .venv/bin/python bench/export_bench.py

Steps:
  1. migrate, then (unless --reuse finds them) replace the bench rows: one INSERT ... SELECT
     generate_series on PostgreSQL, bulk_create in batches elsewhere. Seeding runs in a child
     process, so the memory it takes does not count against the export.
  2. export GET /v1/usage/export.csv?user=* (staff key, every row) through Django's WSGI handler
     and its ASGI handler (django.test.Client / AsyncClient: the real URLconf, middleware, auth
     and view), reading the streamed body to the end; reports seconds, rows/s, time to the first
     rows, the growth of the process's peak RSS, and in a second run tracemalloc's peak.
  3. checks that the CSV's row count and cost sum equal /v1/usage's totals, and times
     /v1/usage, the admin changelist and the admin dashboard on the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pulse.settings")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'export_bench.sqlite3'}")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # the host django.test's clients send

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402

from billing.models import UsageRecord  # noqa: E402
from gateway.keys import api_key_create  # noqa: E402

PREFIX = "bench-"
USERS = 50
DAYS = 30
MODELS = (
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-sonnet-4", "anthropic"),
    ("gemini-2.5-flash", "gemini"),
    ("nano-banana", "gemini"),
)
BATCH = 10_000


def bench_users() -> list[int]:
    User = get_user_model()
    ids = []
    for n in range(USERS):
        user, _ = User.objects.get_or_create(username=f"{PREFIX}user-{n:02d}")
        ids.append(user.pk)
    return ids


def time_window() -> tuple[dt.datetime, float]:
    """The rows are spread evenly over the last DAYS days up to the start of this hour."""
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return end - dt.timedelta(days=DAYS), DAYS * 86400 * 1_000_000


def seed_postgresql(rows: int, user_ids: list[int]) -> None:
    start, span_us = time_window()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {UsageRecord._meta.db_table} (request_id, created_at, user_id, api_key_id, endpoint, route,
                model, provider, upstream_model, modality, input_tokens, output_tokens, cached_input_tokens,
                reasoning_tokens, images, video_seconds, usage_estimated, cost_usd, status, error_code, attempts,
                latency_ms)
            SELECT %s || g, %s::timestamptz + (g::bigint * %s / %s) * interval '1 microsecond',
                (%s::bigint[])[1 + g %% %s], NULL, 'chat.complete', 'default', m.model, m.provider, m.model, 'chat',
                100 + g %% 900, 20 + g %% 300, g %% 64, 0, 0, 0, g %% 97 = 0, (g %% 100000)::numeric / 100000000,
                CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN g %% 50 = 0 THEN 'upstream_timeout' ELSE '' END, '[]'::jsonb, 200 + g %% 1000
            FROM generate_series(0, %s - 1) AS g
            JOIN (SELECT * FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(model, provider, i)) AS m
              ON m.i = 1 + g %% %s
            """,
            [
                PREFIX,
                start,
                span_us,
                rows,
                user_ids,
                len(user_ids),
                rows,
                [m for m, _ in MODELS],
                [p for _, p in MODELS],
                len(MODELS),
            ],
        )
        cursor.execute(f"ANALYZE {UsageRecord._meta.db_table}")


def seed_in_batches(rows: int, user_ids: list[int]) -> None:
    start, span_us = time_window()
    for first in range(0, rows, BATCH):
        batch = []
        for g in range(first, min(first + BATCH, rows)):
            model, provider = MODELS[g % len(MODELS)]
            failed = g % 50 == 0
            batch.append(
                UsageRecord(
                    request_id=f"{PREFIX}{g}",
                    created_at=start + dt.timedelta(microseconds=g * span_us // rows),
                    user_id=user_ids[g % len(user_ids)],
                    endpoint="chat.complete",
                    route="default",
                    model=model,
                    provider=provider,
                    upstream_model=model,
                    input_tokens=100 + g % 900,
                    output_tokens=20 + g % 300,
                    cached_input_tokens=g % 64,
                    usage_estimated=g % 97 == 0,
                    cost_usd=Decimal(g % 100000).scaleb(-8),
                    status="failed" if failed else "succeeded",
                    error_code="upstream_timeout" if failed else "",
                    latency_ms=200 + g % 1000,
                )
            )
        UsageRecord.objects.bulk_create(batch)


def seed(rows: int) -> None:
    started = time.perf_counter()
    UsageRecord.objects.filter(request_id__startswith=PREFIX).delete()
    user_ids = bench_users()
    if connection.vendor == "postgresql":
        seed_postgresql(rows, user_ids)
    else:
        seed_in_batches(rows, user_ids)
    print(f"seeded {rows:,} rows in {time.perf_counter() - started:.1f} s ({connection.vendor})")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def export_query(*, empty: bool = False) -> dict[str, str]:
    if empty:  # a day without rows: warms up imports, URL resolving and the connection
        return {"user": "*", "from": "2000-01-01", "to": "2000-01-01"}
    start, _ = time_window()
    return {"user": "*", "from": f"{start:%Y-%m-%d}", "to": f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"}


def headers(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


def run_wsgi(raw_key: str, sink, *, empty: bool = False) -> tuple[float, int, int]:
    """(seconds to the first rows, bytes, rows) of one export through Django's WSGI handler."""
    started = time.perf_counter()
    response = Client().get("/v1/usage/export.csv", export_query(empty=empty), headers=headers(raw_key))
    assert response.status_code == 200, response.status_code
    first, size, lines = None, 0, 0
    for chunk in response.streaming_content:
        if lines:  # the header is sent before the query runs: time the first rows
            first = first or time.perf_counter() - started
        size += len(chunk)
        lines += chunk.count(b"\n")
        sink(chunk)
    response.close()
    return first, size, lines - 1


def run_asgi(raw_key: str, sink, *, empty: bool = False) -> tuple[float, int, int]:
    """The same through Django's ASGI handler (the streamed body is an async iterator there)."""

    async def export() -> tuple[float, int, int]:
        started = time.perf_counter()
        response = await AsyncClient().get("/v1/usage/export.csv", export_query(empty=empty), headers=headers(raw_key))
        assert response.status_code == 200, response.status_code
        first, size, lines = None, 0, 0
        async for chunk in response.streaming_content:
            if lines:
                first = first or time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
            sink(chunk)
        return first, size, lines - 1

    return asyncio.run(export())


def measure(name: str, run, raw_key: str) -> None:
    run(raw_key, lambda chunk: None, empty=True)
    rss_before = maxrss_mb()
    started = time.perf_counter()
    first, size, rows = run(raw_key, lambda chunk: None)
    elapsed = time.perf_counter() - started
    rss_growth = maxrss_mb() - rss_before

    tracemalloc.start()
    run(raw_key, lambda chunk: None)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        f"{name}: {rows:,} rows, {size / 2**20:.0f} MiB of CSV in {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s, "
        f"first rows after {first * 1000:.0f} ms); peak RSS grew {rss_growth:.1f} MiB; "
        f"tracemalloc peak {peak:.1f} MiB (second run)"
    )


def verify(raw_key: str) -> None:
    """The CSV's rows and cost sum against /v1/usage's totals for the same query."""
    buffer = io.BytesIO()
    run_wsgi(raw_key, buffer.write)
    exported = list(csv.DictReader(io.StringIO(buffer.getvalue().decode())))
    cost = sum(Decimal(row["cost_usd"]) for row in exported)
    started = time.perf_counter()
    totals = Client().get("/v1/usage", {**export_query(), "group_by": "day,model"}, headers=headers(raw_key))
    usage_seconds = time.perf_counter() - started
    totals = totals.json()["totals"]
    assert len(exported) == totals["requests"], (len(exported), totals["requests"])
    assert f"{cost:.8f}" == totals["cost_usd"], (cost, totals["cost_usd"])
    print(
        f"check: CSV rows {len(exported):,} and cost sum ${cost} equal /v1/usage totals "
        f"(which took {usage_seconds * 1000:.0f} ms, grouped by day and model)"
    )


def time_admin_pages() -> None:
    User = get_user_model()
    staff = User.objects.get(username=f"{PREFIX}staff")
    client = Client()
    client.force_login(staff)
    for label, url in (
        ("admin changelist", "/admin/billing/usagerecord/"),
        ("admin changelist, filtered", "/admin/billing/usagerecord/?status__exact=failed"),
        ("admin dashboard, last 30 days", "/admin/billing/usagerecord/dashboard/"),
    ):
        started = time.perf_counter()
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        print(f"{label}: {(time.perf_counter() - started) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep the bench rows if there are --rows of them")
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.seed_only:
        seed(args.rows)
        return
    call_command("migrate", verbosity=0)
    have = UsageRecord.objects.filter(request_id__startswith=PREFIX).count()
    if not (args.reuse and have == args.rows):
        connections.close_all()
        subprocess.run([sys.executable, __file__, "--seed-only", "--rows", str(args.rows)], check=True)
    staff, _ = get_user_model().objects.get_or_create(
        username=f"{PREFIX}staff", defaults={"is_staff": True, "is_superuser": True}
    )
    raw_key = api_key_create(user=staff, name="export bench")[1]

    measure("WSGI export", run_wsgi, raw_key)
    measure("ASGI export", run_asgi, raw_key)
    verify(raw_key)
    time_admin_pages()


if __name__ == "__main__":
    main()
