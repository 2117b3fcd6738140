"""Group commit of the ledger: rows that finish together share one commit, none is lost, and one bad
row fails only its own request. PostgreSQL only: elsewhere rows go through the ORM one by one."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest

from billing import ledger
from billing.ledger import UsageEvent, aledger_record_usage
from billing.models import UsageRecord
from core.pg import close_async_pool, is_postgresql

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
