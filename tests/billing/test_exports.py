"""The finance CSV: exact columns and values, streamed, safe in spreadsheets, and equal to /v1/usage."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import warnings
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.http import StreamingHttpResponse
from django.test import AsyncClient

from billing import exports
from billing.models import UsageRecord
from tests.helpers import at, ledger_row

pytestmark = pytest.mark.django_db
HEADER = [
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
]
MARCH = {"from": "2025-03-01", "to": "2025-03-31"}


def rows_of(response) -> list[dict]:
    assert response.status_code == 200, response.content if not response.streaming else ""
    return list(csv.DictReader(io.StringIO(response.getvalue().decode())))


def test_header_and_a_full_row_are_exactly_as_documented(api, api_key, user):
    ledger_row(
        user,
        at("2025-03-05T09:30:01.250000"),
        request_id="req_full",
        api_key=api_key[0],
        endpoint="chat.complete",
        route="gpt-*",
        model="gpt-4o",
        provider="openai",
        upstream_model="gpt-4o-2024-08-06",
        modality="chat",
        status="failed",
        input_tokens=1200,
        output_tokens=345,
        cached_input_tokens=700,
        cache_write_input_tokens=200,
        cache_write_1h_input_tokens=100,
        reasoning_tokens=40,
        images=0,
        video_seconds=Decimal("0"),
        cost="0.00000123",
        usage_estimated=True,
        error_code="upstream_timeout",
        latency_ms=812,
    )

    response = api.get("/v1/usage/export.csv", MARCH)
    lines = response.getvalue().decode().splitlines()

    assert lines[0] == ",".join(HEADER)
    assert next(csv.reader(lines[1:])) == [
        "req_full",
        "2025-03-05T09:30:01.250000Z",
        "alice",
        api_key[0].prefix,
        "chat.complete",
        "gpt-*",
        "gpt-4o",
        "openai",
        "gpt-4o-2024-08-06",
        "chat",
        "failed",
        "1200",
        "345",
        "1545",
        "700",
        "200",
        "100",
        "40",
        "0",
        "0.000",
        "0.00000123",
        "true",
        "upstream_timeout",
        "812",
    ]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="pulse-usage_2025-03-01_2025-03-31.csv"'


def test_timestamps_are_iso_8601_utc_with_z(api, user):
    moment = dt.datetime(2025, 3, 5, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # 04:30 UTC next day
    ledger_row(user, moment)

    [row] = rows_of(api.get("/v1/usage/export.csv", MARCH))

    assert row["created_at"] == "2025-03-06T04:30:00.000000Z"
    assert dt.datetime.fromisoformat(row["created_at"]) == moment


@pytest.mark.parametrize(
    "cost, shown",
    [
        ("0.00000123", "0.00000123"),
        ("0.00000001", "0.00000001"),  # str(Decimal) would say 1E-8
        ("0", "0.00000000"),
        ("12345.6789", "12345.67890000"),
        ("-0.5", "-0.50000000"),  # a correction row
    ],
)
def test_costs_are_the_exact_decimal(api, user, cost, shown):
    ledger_row(user, at("2025-03-05T10:00:00"), cost=cost)

    [row] = rows_of(api.get("/v1/usage/export.csv", MARCH))

    assert row["cost_usd"] == shown
    assert Decimal(row["cost_usd"]) == Decimal(cost)


@pytest.fixture
def varied_ledger(user, bob, staff_user):
    costs = ["0.00000123", "0.1", "0.2", "0.30000001", "1.99999999", "0.00000007", "12.5", "0.33333333"]
    for index, cost in enumerate(costs):
        owner = (user, bob, staff_user)[index % 3]
        ledger_row(
            owner,
            at(f"2025-03-{1 + index:02d}T{index:02d}:15:00"),
            cost=cost,
            model=("a", "b")[index % 2],
            provider=("openai", "anthropic")[index % 2],
            input_tokens=index * 7,
            output_tokens=index,
            images=index % 2,
            video_seconds=Decimal(index) / 8,
        )
    ledger_row(user, at("2025-04-01T00:00:00"), cost="1000")  # outside the range


def csv_totals(rows: list[dict]) -> dict:
    return {
        "requests": len(rows),
        "input_tokens": sum(int(r["input_tokens"]) for r in rows),
        "output_tokens": sum(int(r["output_tokens"]) for r in rows),
        "total_tokens": sum(int(r["total_tokens"]) for r in rows),
        "images": sum(int(r["images"]) for r in rows),
        "video_seconds": f"{sum(Decimal(r['video_seconds']) for r in rows):.3f}",
        "cost_usd": f"{sum(Decimal(r['cost_usd']) for r in rows):.8f}",
    }


@pytest.mark.parametrize(
    "who, params",
    [
        ("alice", {}),
        ("staff", {"user": "alice"}),
        ("staff", {"user": "*"}),
        ("staff", {"user": "*", "model": "a"}),
        ("staff", {"user": "bob", "provider": "anthropic"}),
    ],
)
def test_csv_totals_equal_the_usage_api_totals_for_the_same_filters(api, staff_api, varied_ledger, who, params):
    client = {"alice": api, "staff": staff_api}[who]
    query = {**MARCH, **params}

    rows = rows_of(client.get("/v1/usage/export.csv", query))
    totals = client.get("/v1/usage", query).json()["totals"]

    assert rows and csv_totals(rows) == totals


def test_staff_export_everyone_by_default(staff_api, varied_ledger):
    rows = rows_of(staff_api.get("/v1/usage/export.csv", MARCH))

    assert {row["user"] for row in rows} == {"alice", "bob", "root-admin"}
    assert csv_totals(rows) == staff_api.get("/v1/usage", {**MARCH, "user": "*"}).json()["totals"]


def test_rows_are_ordered_by_time_then_id(api, user):
    same_moment = at("2025-03-02T00:00:00")
    later, first, second = (
        ledger_row(user, at("2025-03-03T00:00:00")),
        ledger_row(user, same_moment),
        ledger_row(user, same_moment),
    )

    rows = rows_of(api.get("/v1/usage/export.csv", MARCH))

    assert [row["request_id"] for row in rows] == [first.request_id, second.request_id, later.request_id]


def test_the_response_streams_in_chunks(api, user, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_BYTES", 200)
    for day in range(1, 21):
        ledger_row(user, at(f"2025-03-{day:02d}T12:00:00"))

    response = api.get("/v1/usage/export.csv", MARCH)
    chunks = list(response.streaming_content)

    assert isinstance(response, StreamingHttpResponse)
    assert len(chunks) > 5
    assert len(list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))) == 20


async def test_over_asgi_the_csv_streams_from_an_async_iterator(transactional_db, user, api_key):
    await sync_to_async(ledger_row)(user, at("2025-03-05T10:00:00"), cost="0.00000123")
    client = AsyncClient()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Django warns when it must buffer a sync iterator for ASGI
            response = await client.get(
                "/v1/usage/export.csv", MARCH, headers={"Authorization": f"Bearer {api_key[1]}"}
            )
            assert response.status_code == 200, response.content
            assert response.is_async
            content = b"".join([chunk async for chunk in response.streaming_content]).decode()
    finally:
        # The view ran in asgiref's thread, whose connection the test client never returns to the pool.
        await sync_to_async(connections.close_all)()

    [row] = list(csv.DictReader(io.StringIO(content)))
    assert row["cost_usd"] == "0.00000123" and row["user"] == "alice"


def test_text_cells_cannot_run_as_spreadsheet_formulas(api, user):
    ledger_row(
        user,
        at("2025-03-05T10:00:00"),
        request_id="-2+3",
        model='=HYPERLINK("http://x")',
        route="+cmd|' /C calc'!A0",
        upstream_model="@SUM(A1:A9)",
        error_code="\tx",
        endpoint="safe=ok",
        cost="-0.25",
    )

    [row] = rows_of(api.get("/v1/usage/export.csv", MARCH))

    assert row["request_id"] == "'-2+3"
    assert row["model"] == '\'=HYPERLINK("http://x")'
    assert row["route"] == "'+cmd|' /C calc'!A0"
    assert row["upstream_model"] == "'@SUM(A1:A9)"
    assert row["error_code"] == "'\tx"
    assert row["endpoint"] == "safe=ok"
    assert row["cost_usd"] == "-0.25000000"  # numbers are never altered


def test_admin_action_exports_the_selected_rows(client, staff_user, user):
    chosen = [
        ledger_row(user, at("2025-03-05T10:00:00"), cost="0.00000123"),
        ledger_row(user, at("2025-03-06T10:00:00"), cost="2"),
    ]
    ledger_row(user, at("2025-03-07T10:00:00"))
    client.force_login(staff_user)

    response = client.post(
        "/admin/billing/usagerecord/", {"action": "export_csv", "_selected_action": [row.pk for row in chosen]}
    )

    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Disposition"].startswith('attachment; filename="pulse-usage_')
    rows = rows_of(response)
    assert [row["request_id"] for row in rows] == [row.request_id for row in chosen]
    assert [row["cost_usd"] for row in rows] == ["0.00000123", "2.00000000"]


def test_admin_export_link_exports_what_the_changelist_filters(client, staff_user, user):
    ledger_row(user, at("2025-03-05T10:00:00"), status=UsageRecord.Status.FAILED, model="gpt-4o")
    ledger_row(user, at("2025-03-05T11:00:00"), status=UsageRecord.Status.SUCCEEDED, model="gpt-4o")
    ledger_row(user, at("2025-03-05T12:00:00"), status=UsageRecord.Status.FAILED, model="claude")
    client.force_login(staff_user)

    changelist = client.get("/admin/billing/usagerecord/?status__exact=failed&q=gpt").content.decode()
    link = html.unescape(re.search(r'id="export-filtered-csv" href="([^"]+)"', changelist)[1])
    rows = rows_of(client.get(link))

    assert link.startswith("/admin/billing/usagerecord/export.csv?")
    assert [(row["status"], row["model"]) for row in rows] == [("failed", "gpt-4o")]
