"""Group commit of the ledger: rows that finish together share one commit, none is lost, and one bad
row fails only its own request. PostgreSQL only: elsewhere rows go through the ORM one by one."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import psycopg
import pytest

from billing import ledger
from billing.budget import Amounts, budget_reserve
from billing.ledger import UsageEvent, aledger_record_usage
from billing.models import BudgetPeriod, UsageRecord
from core.caps import Caps
from core.pg import async_pool, close_async_pool, is_postgresql, serial_connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not is_postgresql(), reason="group commit is PostgreSQL's async path"),
]


def event(user_id: int, n: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req_group_{n}",
        user_id=user_id,
        api_key_id=None,
        model="gpt-4o",
        status="succeeded",
        cost_usd=Decimal("0.000001") * n,
    )


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every write that reached PostgreSQL (the real insert still runs)."""
    sizes: list[int] = []
    insert = ledger._insert_rows

    async def counted(rows):
        sizes.append(len(rows))
        await insert(rows)

    monkeypatch.setattr(ledger, "_insert_rows", counted)
    return sizes


def test_one_row_at_a_time_is_written_alone(user, batches):
    async def one_by_one():
        for n in range(3):
            await aledger_record_usage(event(user.pk, n))
        await close_async_pool()

    asyncio.run(one_by_one())

    assert batches == [1, 1, 1]
    assert UsageRecord.objects.count() == 3


def test_rows_finishing_together_share_commits_and_are_all_written(user, batches):
    async def together():
        await asyncio.gather(*(aledger_record_usage(event(user.pk, n)) for n in range(60)))
        await close_async_pool()

    asyncio.run(together())

    assert sum(batches) == 60 and len(batches) < 60 and max(batches) > 1
    assert UsageRecord.objects.count() == 60
    assert UsageRecord.objects.get(request_id="req_group_7").cost_usd == Decimal("0.000007")


def test_a_bad_row_fails_only_its_own_request(user, batches):
    async def with_a_bad_one():
        rows = [event(user.pk, n) for n in range(10)]
        rows[4] = event(user.pk + 10_000, 4)  # no such user: a foreign key violation
        results = await asyncio.gather(*(aledger_record_usage(row) for row in rows), return_exceptions=True)
        await close_async_pool()
        return results

    results = asyncio.run(with_a_bad_one())

    assert [isinstance(r, Exception) for r in results] == [n == 4 for n in range(10)]
    assert UsageRecord.objects.count() == 9


def test_a_caller_that_leaves_still_gets_its_row_written(user, batches):
    async def leave_early():
        await aledger_record_usage(event(user.pk, 0))  # the pool is open: the next rows queue at once
        first = asyncio.ensure_future(aledger_record_usage(event(user.pk, 1)))
        second = asyncio.ensure_future(aledger_record_usage(event(user.pk, 2)))
        await asyncio.sleep(0)
        second.cancel()  # its client went away while the row was queued
        await first
        with contextlib.suppress(asyncio.CancelledError):
            await second
        await close_async_pool()

    asyncio.run(leave_early())

    assert UsageRecord.objects.count() == 3


def test_a_request_id_already_written_is_skipped_and_the_rest_of_its_batch_written(user, batches):
    async def with_a_repeat():
        await aledger_record_usage(event(user.pk, 3))
        again = [event(user.pk, n) for n in range(6)]  # req_group_3 again, among new ones
        await asyncio.gather(*(aledger_record_usage(row) for row in again))
        await close_async_pool()

    asyncio.run(with_a_repeat())

    assert max(batches) > 1  # the repeat was in a batch
    assert UsageRecord.objects.count() == 6
    assert UsageRecord.objects.filter(request_id="req_group_3").count() == 1


def columns_but(*left_out: str) -> list[str]:
    return [f.attname for f in UsageRecord._meta.concrete_fields if f.attname not in left_out]


def every_field(user) -> dict:
    """A value for every UsageEvent field but request_id, none of them a default."""
    fields = {
        "user_id": user.pk,
        "api_key_id": None,
        "model": "claude-x",
        "status": "blocked",
        "endpoint": "/v1/messages",
        "route": "claude-*",
        "provider": "anthropic",
        "upstream_model": "claude-x-1",
        "modality": "chat",
        "input_tokens": 11,
        "output_tokens": 12,
        "cached_input_tokens": 3,
        "cache_write_input_tokens": 4,
        "cache_write_1h_input_tokens": 5,
        "reasoning_tokens": 6,
        "images": 1,
        "video_seconds": Decimal("1.500"),
        "usage_estimated": True,
        "cost_usd": Decimal("0.00012345"),
        "error_code": "content_policy_violation",
        "attempts": [{"provider": "openai", "error": "upstream_error", "status": 503}],
        "latency_ms": 42,
    }
    assert set(fields) | {"request_id"} == set(UsageEvent.__dataclass_fields__)  # every field is covered
    return fields


def test_a_row_written_on_the_loop_is_the_row_the_orm_writes(user, batches):
    """The async path builds its values from the event, not a model instance: every field must land
    in its column exactly as the ORM path (ledger_record_usage) puts it."""
    fields = every_field(user)
    caps = Caps(spend_usd=Decimal("1"))
    hold = budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("0.5")))

    async def write_on_the_loop():
        await aledger_record_usage(UsageEvent(request_id="req_loop", **fields))
        await aledger_record_usage(UsageEvent(request_id="req_capped", **fields), hold)  # settles in the INSERT
        await close_async_pool()

    asyncio.run(write_on_the_loop())
    ledger.ledger_record_usage(UsageEvent(request_id="req_orm", **fields))

    columns = columns_but("id", "request_id")
    rows = [UsageRecord.objects.values(*columns).get(request_id=r) for r in ("req_loop", "req_capped", "req_orm")]
    assert batches == [1]  # the capped row is not a group commit's
    assert rows[0].pop("created_at") <= rows[1].pop("created_at") <= rows[2].pop("created_at")
    assert rows[0] == rows[1] == rows[2] == {**fields, "user_id": user.pk}
    budget = BudgetPeriod.objects.get()
    assert (budget.spent_usd, budget.reserved_usd) == (fields["cost_usd"], 0)


def test_rows_written_in_a_batch_are_the_rows_the_orm_writes(user, batches):
    fields = every_field(user)

    async def write_together():
        await asyncio.gather(*(aledger_record_usage(UsageEvent(request_id=f"req_b{n}", **fields)) for n in range(5)))
        await close_async_pool()

    asyncio.run(write_together())
    ledger.ledger_record_usage(UsageEvent(request_id="req_orm", **fields))

    columns = columns_but("id", "request_id", "created_at")
    orm = UsageRecord.objects.values(*columns).get(request_id="req_orm")
    assert max(batches) > 1
    for n in range(5):
        assert UsageRecord.objects.values(*columns).get(request_id=f"req_b{n}") == orm


def test_the_writer_keeps_one_connection_and_replaces_it_when_it_breaks(user):
    """Batches share one checked-out connection (a checkout per batch cost as much as the INSERT). When
    that connection dies, the write on it fails, and the next one checks out a new connection."""

    async def writes() -> tuple[int, int, type[BaseException] | None, int]:
        for n in range(3):
            await aledger_record_usage(event(user.pk, n))
        pool = await async_pool()
        assert pool is not None
        checkouts = pool.get_stats()["requests_num"]
        async with serial_connection() as kept:
            backend = kept.info.backend_pid
        async with pool.connection() as other:  # the server ends the writer's session, as a restart would
            await other.execute("SELECT pg_terminate_backend(%s)", [backend])
        failed = None
        try:
            await aledger_record_usage(event(user.pk, 3))
        except Exception as exc:  # the row whose connection died is not acknowledged
            failed = type(exc)
        await aledger_record_usage(event(user.pk, 4))
        async with serial_connection() as replaced:
            new_backend = replaced.info.backend_pid
        await close_async_pool()
        return checkouts, backend, failed, new_backend

    checkouts, backend, failed, new_backend = asyncio.run(writes())

    assert checkouts == 1  # three writes, one checkout
    assert failed is not None and issubclass(failed, psycopg.OperationalError)
    assert new_backend != backend
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {f"req_group_{n}" for n in (0, 1, 2, 4)}
