"""Cost arithmetic and the budget service, on the database itself."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import budget
from billing.budget import Amounts, budget_release, budget_reserve, budget_settle
from billing.ledger import UsageEvent
from billing.models import BudgetPeriod, UsageRecord
from billing.pricing import chat_cost, dearest_chat_usage, image_cost, video_cost
from core.caps import Caps
from core.errors import QuotaExceeded
from core.pg import is_postgresql
from gateway.errors import as_api_error
from providers.clients.base import Usage
from providers.routing import Prices

PRICES = Prices(Decimal("3"), Decimal("15"), Decimal("0.039"), Decimal("0.4"))


def usage_event(user, request_id: str, **fields) -> UsageEvent:
    """A succeeded gpt-4o request of user's, with fields (amounts, attempts) on top."""
    return UsageEvent(
        request_id=request_id, user_id=user.pk, api_key_id=None, model="gpt-4o", status="succeeded", **fields
    )


@pytest.fixture
def reserves_in_a_thread(monkeypatch) -> list[Amounts]:
    """What each hold that fell back to budget_reserve (the ORM, in a thread) wanted; the call goes on."""
    wanted: list[Amounts] = []

    def counted(**kwargs):
        wanted.append(kwargs["want"])
        return budget_reserve(**kwargs)

    monkeypatch.setattr(budget, "budget_reserve", counted)
    return wanted


def test_cost_per_modality_is_exact():
    assert chat_cost(Usage(1_234_567, 89), PRICES) == Decimal("3.70503600")  # 3.703701 + 0.001335
    assert chat_cost(Usage(1, 0), PRICES) == Decimal("0.00000300")
    assert chat_cost(Usage(1, 1), Prices(Decimal("0.15"), Decimal("0.6"))) == Decimal("0.00000075")
    assert image_cost(4, PRICES) == Decimal("0.156")
    assert video_cost(Decimal(8), PRICES) == Decimal("3.2")


def test_every_token_kind_is_billed_at_its_own_rate():
    claude = Prices(
        Decimal("3"),
        Decimal("15"),
        cached_input_usd_per_mtok=Decimal("0.3"),
        cache_write_usd_per_mtok=Decimal("3.75"),
        cache_write_1h_usd_per_mtok=Decimal("6"),
    )
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1000,
        cached_input_tokens=500_000,
        cache_write_tokens=200_000,
        cache_write_1h_tokens=100_000,
    )
    # 200k plain x $3 + 500k read x $0.30 + 200k written x $3.75 + 100k written for 1 h x $6 + 1k out x $15
    assert chat_cost(usage, claude) == Decimal("2.11500000")
    # A route with no cache prices bills those tokens at the input price, as before.
    assert chat_cost(usage, Prices(Decimal("3"), Decimal("15"))) == Decimal("3.01500000")


def test_the_worst_case_of_a_prompt_is_the_dearest_kind_of_input_token():
    claude = Prices(
        Decimal("3"), Decimal("15"), cache_write_usd_per_mtok=Decimal("3.75"), cache_write_1h_usd_per_mtok=Decimal("6")
    )
    held = dearest_chat_usage(1000, 100, claude)
    assert held == Usage(1000, 100, cache_write_1h_tokens=1000)
    assert chat_cost(held, claude) == Decimal("0.00750000")  # 1,000 x $6 + 100 x $15, per million
    gpt = Prices(Decimal("2.5"), Decimal("10"), cached_input_usd_per_mtok=Decimal("1.25"))
    assert dearest_chat_usage(1000, 100, gpt) == Usage(1000, 100)  # reading the cache only ever costs less


def test_half_of_the_smallest_unit_rounds_half_up():
    assert chat_cost(Usage(1, 0), Prices(Decimal("0.005"), Decimal(0))) == Decimal("0.00000001")


@pytest.mark.django_db
def test_reserve_settle_and_release_move_the_counters(user):
    caps = Caps(spend_usd=Decimal("1"), tokens=1000)
    hold = budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("0.6"), 600))
    row = BudgetPeriod.objects.get()
    assert (row.reserved_usd, row.tokens_reserved) == (Decimal("0.6"), 600)

    with pytest.raises(QuotaExceeded) as refused:
        budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("0.5"), 10))
    answered = as_api_error(refused.value)  # the domain error as the API answers it
    assert answered.status == 429 and answered.headers == {"x-should-retry": "false"}

    budget_settle(hold, Amounts(Decimal("0.25"), 300))
    row.refresh_from_db()
    assert (row.spent_usd, row.reserved_usd, row.tokens_used, row.tokens_reserved) == (Decimal("0.25"), 0, 300, 0)

    second = budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("0.5"), 10))
    budget_release(second)
    row.refresh_from_db()
    assert (row.spent_usd, row.reserved_usd) == (Decimal("0.25"), 0)


@pytest.mark.django_db
def test_token_cap_alone_refuses(user):
    with pytest.raises(QuotaExceeded):
        budget_reserve(user_id=user.pk, caps=Caps(tokens=100), want=Amounts(Decimal(0), 101))


@pytest.mark.django_db
def test_a_cap_set_mid_month_counts_what_was_already_spent(user):
    UsageRecord.objects.create(
        request_id="earlier",
        user=user,
        model="gpt-4o",
        status="succeeded",
        cost_usd=Decimal("0.9"),
        input_tokens=10,
        output_tokens=5,
    )
    UsageRecord.objects.create(
        request_id="last-month",
        user=user,
        model="gpt-4o",
        status="succeeded",
        cost_usd=Decimal("50"),
        created_at=timezone.now() - timedelta(days=40),
    )

    with pytest.raises(QuotaExceeded):
        budget_reserve(user_id=user.pk, caps=Caps(spend_usd=Decimal("1")), want=Amounts(Decimal("0.2"), 1))
    assert BudgetPeriod.objects.get().spent_usd == Decimal("0.9")


def test_users_without_caps_cost_no_query():
    assert budget_reserve(user_id=1, caps=None, want=Amounts(Decimal("9"), 9)) is None


@pytest.mark.django_db
def test_ledger_rows_cannot_be_updated(user):
    row = UsageRecord.objects.create(request_id="r1", user=user, model="m", status="succeeded")
    row.cost_usd = Decimal("0")
    with pytest.raises(ValueError, match="append-only"):
        row.save()


@pytest.mark.django_db
def test_recording_the_same_request_twice_writes_and_settles_once(user):
    from billing.ledger import ledger_record_usage

    caps = Caps(spend_usd=Decimal("10"))
    event = usage_event(user, "req_once", cost_usd=Decimal("1.5"), input_tokens=3)
    first_hold = budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("2"), 10))
    second_hold = budget_reserve(user_id=user.pk, caps=caps, want=Amounts(Decimal("2"), 10))

    ledger_record_usage(event, first_hold)
    ledger_record_usage(event, second_hold)
    ledger_record_usage(event)

    assert UsageRecord.objects.filter(request_id="req_once").count() == 1
    row = BudgetPeriod.objects.get()
    assert (row.spent_usd, row.reserved_usd) == (Decimal("1.5"), 0)


@pytest.mark.django_db(transaction=True)
def test_the_event_loop_ledger_write_records_once(user):
    import asyncio

    from billing.ledger import aledger_record_usage
    from core.pg import close_async_pool

    event = usage_event(user, "req_async", cost_usd=Decimal("0.00000123"), attempts=[{"provider": "openai"}])

    async def write_twice():
        await aledger_record_usage(event)
        await aledger_record_usage(event)
        await close_async_pool()

    asyncio.run(write_twice())

    [row] = UsageRecord.objects.filter(request_id="req_async")
    assert (row.cost_usd, row.attempts, row.modality) == (Decimal("0.00000123"), [{"provider": "openai"}], "chat")


def test_an_unpriced_route_cannot_be_billed():
    with pytest.raises(ValueError):
        chat_cost(Usage(1, 1), Prices(input_usd_per_mtok=Decimal(1)))


@pytest.mark.django_db
def test_caps_set_again_recount_what_was_spent_while_uncapped(user, django_capture_on_commit_callbacks):
    from billing.models import UserLimits

    with django_capture_on_commit_callbacks(execute=True):
        limits = UserLimits.objects.create(user=user, monthly_spend_cap_usd=Decimal("1"))
    budget_reserve(user_id=user.pk, caps=Caps(spend_usd=Decimal("1")), want=Amounts(Decimal("0.1"), 1))
    with django_capture_on_commit_callbacks(execute=True):
        limits.monthly_spend_cap_usd = None
        limits.save()
    UsageRecord.objects.create(
        request_id="while-uncapped", user=user, model="gpt-4o", status="succeeded", cost_usd=Decimal("0.95")
    )
    with django_capture_on_commit_callbacks(execute=True):
        limits.monthly_spend_cap_usd = Decimal("1")
        limits.save()

    assert BudgetPeriod.objects.get().spent_usd == Decimal("0.95")
    with pytest.raises(QuotaExceeded):
        budget_reserve(user_id=user.pk, caps=Caps(spend_usd=Decimal("1")), want=Amounts(Decimal("0.1"), 1))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not is_postgresql(), reason="the event loop's budget SQL is PostgreSQL's async path")
def test_holds_and_settlements_on_the_event_loop_need_no_thread(user, reserves_in_a_thread):
    """Once the month's budget row exists, holds, releases and the ledger's settlement run as SQL on the
    async pool; only a refusal goes to the ORM (in a thread), to make sure of it."""
    import asyncio

    from billing.budget import abudget_release, abudget_reserve
    from billing.ledger import aledger_record_usage
    from core.pg import close_async_pool

    caps = Caps(spend_usd=Decimal("1"), tokens=1000)
    budget_reserve(user_id=user.pk, caps=caps, want=Amounts())  # the month's row, made once
    event = usage_event(user, "req_loop_settle", cost_usd=Decimal("0.25"), input_tokens=200, output_tokens=100)

    async def on_the_loop():
        want = Amounts(Decimal("0.3"), 300)
        holds = await asyncio.gather(
            *(abudget_reserve(user_id=user.pk, caps=caps, want=want) for _ in range(5)), return_exceptions=True
        )
        held = [h for h in holds if isinstance(h, budget.Reservation)]
        assert len(held) == 3 and sum(isinstance(h, QuotaExceeded) for h in holds) == 2  # 3 x 0.3 fit in 1
        await aledger_record_usage(event, held[0])  # 0.25 and 300 tokens used
        await aledger_record_usage(event, held[1])  # the same request again: its hold only released
        await abudget_release(held[2])
        await close_async_pool()

    asyncio.run(on_the_loop())

    assert len(reserves_in_a_thread) == 2  # the two refusals, and nothing else
    row = BudgetPeriod.objects.get()
    assert UsageRecord.objects.filter(request_id="req_loop_settle").count() == 1
    assert (row.spent_usd, row.tokens_used) == (Decimal("0.25"), 300)
    assert (row.reserved_usd, row.tokens_reserved) == (Decimal(0), 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not is_postgresql(), reason="the event loop's budget SQL is PostgreSQL's async path")
def test_the_loop_holds_exactly_what_the_orm_holds(user, reserves_in_a_thread):
    """Every cap kind, at its exact edge: the SQL hold takes exactly the cap, on the loop, and one unit
    more is refused (budget_reserve, in a thread, makes sure of a refusal)."""
    import asyncio

    from billing.budget import abudget_reserve
    from core.pg import close_async_pool

    # Every want is exactly its one cap, and large in the units left uncapped (no cap is no limit).
    cases = [
        (Caps(spend_usd=Decimal("0.00000010")), Amounts(Decimal("0.00000010"), 10**9, 10**6, Decimal(10**6))),
        (Caps(tokens=10), Amounts(Decimal(10**6), 10, 10**6, Decimal(10**6))),
        (Caps(images=2), Amounts(Decimal(10**6), 10**9, 2, Decimal(10**6))),
        (Caps(video_seconds=8), Amounts(Decimal(10**6), 10**9, 10**6, Decimal("8"))),
    ]

    async def reserve_twice(caps, want):
        held = await abudget_reserve(user_id=user.pk, caps=caps, want=want)
        one_more = Amounts(Decimal("0.00000001"), 1, 1, Decimal("0.001"))
        with pytest.raises(QuotaExceeded):
            await abudget_reserve(user_id=user.pk, caps=caps, want=one_more)
        await close_async_pool()
        return held

    for caps, want in cases:
        BudgetPeriod.objects.all().delete()
        budget_reserve(user_id=user.pk, caps=caps, want=Amounts())  # the month's row
        reserves_in_a_thread.clear()
        assert asyncio.run(reserve_twice(caps, want)) is not None
        assert len(reserves_in_a_thread) == 1, caps  # only the refusal
