"""Monthly caps without races: reserve the worst case before the provider call, settle
to the real usage after (in the ledger's transaction), release on failure.

Every change is one conditional UPDATE with F() expressions, so concurrent requests
cannot together go past a cap: a reservation only succeeds if, at the moment the
row is updated, spent + reserved + this request still fits under every cap.
Users without caps cost nothing here: no row, no query. On the event loop (PostgreSQL) the
same updates run as SQL on the async pool (abudget_reserve, abudget_release; the ledger settles
in the statement that writes its row), so a capped request holds no thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from itertools import chain
from typing import Any

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from billing.models import BudgetPeriod, UsageRecord
from core.caps import Caps
from core.errors import QuotaExceeded
from core.pg import execute, is_postgresql

ZERO = Decimal(0)


@dataclass(frozen=True)
class Amounts:
    cost_usd: Decimal = ZERO
    tokens: int = 0
    images: int = 0
    video_seconds: Decimal = ZERO


@dataclass(frozen=True)
class Units:
    """Amounts as the budget row counts them: exact integers."""

    e8_usd: int
    tokens: int
    images: int
    video_ms: int

    @classmethod
    def of(cls, amounts: Amounts) -> Units:
        return cls(
            int(amounts.cost_usd.scaleb(8).to_integral_value(ROUND_CEILING)),
            amounts.tokens,
            amounts.images,
            int((amounts.video_seconds * 1000).to_integral_value(ROUND_CEILING)),
        )


@dataclass(frozen=True)
class Reservation:
    user_id: int
    period: date
    amounts: Amounts


def period_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date().replace(day=1)


def _month_bounds(period: date) -> tuple[datetime, datetime]:
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    end = datetime(period.year + (period.month == 12), period.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def used_this_period(user_id: int, period: date) -> Amounts:
    """What the ledger says the user used in the period: the starting point of a budget row."""
    start, end = _month_bounds(period)
    totals = UsageRecord.objects.filter(user_id=user_id, created_at__gte=start, created_at__lt=end).aggregate(
        cost=Sum("cost_usd"),
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        images=Sum("images"),
        video=Sum("video_seconds"),
    )
    return Amounts(
        totals["cost"] or ZERO,
        (totals["input"] or 0) + (totals["output"] or 0),
        totals["images"] or 0,
        totals["video"] or ZERO,
    )


def _budget_row(user_id: int, period: date) -> int:
    row = BudgetPeriod.objects.filter(user_id=user_id, period=period).values_list("pk", flat=True).first()
    if row is not None:
        return row
    used = used_this_period(user_id, period)
    try:
        with transaction.atomic():
            units = Units.of(used)
            return BudgetPeriod.objects.create(
                user_id=user_id,
                period=period,
                spent_e8_usd=units.e8_usd,
                tokens_used=units.tokens,
                images_used=units.images,
                video_ms_used=units.video_ms,
            ).pk
    except IntegrityError:  # a concurrent request created it first
        return BudgetPeriod.objects.get(user_id=user_id, period=period).pk


def budget_resync(user_id: int) -> None:
    """Recount this month's use from the ledger (after an admin changes a user's caps: while the
    user had none, nothing was settled into the budget row). Holds in flight are kept."""
    period = period_of(timezone.now())
    units = Units.of(used_this_period(user_id, period))
    BudgetPeriod.objects.filter(user_id=user_id, period=period).update(
        spent_e8_usd=units.e8_usd, tokens_used=units.tokens, images_used=units.images, video_ms_used=units.video_ms
    )


# Each counter of a budget row: (Units field, used column, reserved column). The ORM updates below and
# their SQL twins for the event loop are both built from this.
_COUNTERS = (
    ("e8_usd", "spent_e8_usd", "reserved_e8_usd"),
    ("tokens", "tokens_used", "tokens_reserved"),
    ("images", "images_used", "images_reserved"),
    ("video_ms", "video_ms_used", "video_ms_reserved"),
)


def _limits(caps: Caps) -> list[int | None]:
    """Each counter's cap in the row's units, in _COUNTERS order; None where no cap is set."""
    limits = Units.of(
        Amounts(caps.spend_usd or ZERO, caps.tokens or 0, caps.images or 0, Decimal(caps.video_seconds or 0))
    )
    set_caps = (caps.spend_usd, caps.tokens, caps.images, caps.video_seconds)
    return [
        getattr(limits, unit) if cap is not None else None
        for (unit, _, _), cap in zip(_COUNTERS, set_caps, strict=True)
    ]


def _fits(caps: Caps, want: Units) -> Q:
    """The condition, evaluated by the database on the locked row, that this request still fits."""
    condition = Q()
    for (unit, used, reserved), limit in zip(_COUNTERS, _limits(caps), strict=True):
        if limit is not None:
            condition &= Q(**{f"{used}__lte": limit - getattr(want, unit) - F(reserved)})
    return condition


def _moved(held: Units, used: Units) -> dict[str, CombinedExpression]:
    """The UPDATE that turns a hold into use: reserved -= held, used += used, for every counter."""
    moves = {}
    for unit, used_column, reserved_column in _COUNTERS:
        moves[reserved_column] = F(reserved_column) - getattr(held, unit)
        moves[used_column] = F(used_column) + getattr(used, unit)
    return moves


def budget_reserve(*, user_id: int, caps: Caps | None, want: Amounts) -> Reservation | None:
    """Hold `want` against the caps, or raise QuotaExceeded. None when the user has no caps."""
    if caps is None:
        return None
    period = period_of(timezone.now())
    row = _budget_row(user_id, period)
    units = Units.of(want)
    nothing = Units(0, 0, 0, 0)
    # Reserving is the reverse move: held -= -want, used += 0.
    held = BudgetPeriod.objects.filter(Q(pk=row) & _fits(caps, units)).update(
        **_moved(Units(-units.e8_usd, -units.tokens, -units.images, -units.video_ms), nothing)
    )
    if not held:
        raise QuotaExceeded(
            f"This request could exceed your monthly quota ({_cap_text(caps)}); "
            f"it would need up to ${want.cost_usd} and {want.tokens} tokens."
        )
    return Reservation(user_id, period, want)


def _cap_text(caps: Caps) -> str:
    parts = [
        (caps.spend_usd, "USD {}"),
        (caps.tokens, "{} tokens"),
        (caps.images, "{} images"),
        (caps.video_seconds, "{} video seconds"),
    ]
    return ", ".join(fmt.format(cap) for cap, fmt in parts if cap is not None)


def budget_settle(reservation: Reservation | None, used: Amounts) -> None:
    """Turn the hold into what was really used. Call inside the ledger row's transaction."""
    if reservation is None:
        return
    BudgetPeriod.objects.filter(user_id=reservation.user_id, period=reservation.period).update(
        **_moved(Units.of(reservation.amounts), Units.of(used))
    )


def budget_release(reservation: Reservation | None) -> None:
    """Give the hold back: the request failed before anything billable happened."""
    budget_settle(reservation, Amounts())


# ---- on the event loop (PostgreSQL): the updates above as SQL on the async pool, no thread ----------
_BUDGET_ROW = f"UPDATE {BudgetPeriod._meta.db_table} SET {{moves}} WHERE user_id = %s AND period = %s"


def _hold_sql() -> str:
    """_fits and the reserving move of budget_reserve: every counter's hold grows by what is wanted,
    only if used + held + wanted stays within each cap that is set (a NULL cap is no cap)."""
    holds = ", ".join(f"{reserved} = {reserved} + %s" for _, _, reserved in _COUNTERS)
    fits = " AND ".join(f"(%s::bigint IS NULL OR {used} + {reserved} + %s <= %s)" for _, used, reserved in _COUNTERS)
    return _BUDGET_ROW.format(moves=holds) + f" AND {fits}"


def settle_sql(used_value: str = "%s") -> str:
    """_moved as SQL: every counter's hold shrinks by what was held and its use grows by used_value
    (a placeholder, or an expression around one: the ledger's settles only when its row was new)."""
    moves = ", ".join(
        f"{reserved} = {reserved} - %s, {used} = {used} + {used_value}" for _, used, reserved in _COUNTERS
    )
    return _BUDGET_ROW.format(moves=moves)


HOLD_SQL = _hold_sql()
SETTLE_SQL = settle_sql()


def _hold_params(user_id: int, period: date, caps: Caps, want: Units) -> list[Any]:
    wanted = [getattr(want, unit) for unit, _, _ in _COUNTERS]
    fits = []
    for (unit, _, _), limit in zip(_COUNTERS, _limits(caps), strict=True):
        fits += [limit, getattr(want, unit), limit]
    return [*wanted, user_id, period, *fits]


def settle_params(reservation: Reservation, used: Amounts) -> list[Any]:
    held, spent = Units.of(reservation.amounts), Units.of(used)
    moves = chain.from_iterable((getattr(held, unit), getattr(spent, unit)) for unit, _, _ in _COUNTERS)
    return [*moves, reservation.user_id, reservation.period]


async def abudget_reserve(*, user_id: int, caps: Caps | None, want: Amounts) -> Reservation | None:
    """budget_reserve for the event loop: on PostgreSQL, one conditional UPDATE on the async pool."""
    if caps is None:
        return None
    if is_postgresql():
        period = period_of(timezone.now())
        if await execute(HOLD_SQL, _hold_params(user_id, period, caps, Units.of(want))) == 1:
            return Reservation(user_id, period, want)
    # Not held on the loop: there is no budget row yet this month (the first request makes it from the
    # ledger), or a cap is reached. budget_reserve makes the row, or refuses: a thread, but only then.
    reservation: Reservation | None = await database_sync_to_async(budget_reserve)(
        user_id=user_id, caps=caps, want=want
    )
    return reservation


async def abudget_release(reservation: Reservation | None) -> None:
    """budget_release for the event loop."""
    if reservation is None:
        return
    if is_postgresql():
        await execute(SETTLE_SQL, settle_params(reservation, Amounts()))
    else:
        await database_sync_to_async(budget_release)(reservation)


def worst_case_tokens(prompt_bytes: int, max_tokens: int, messages: int) -> tuple[int, int]:
    """(input, output) token bounds: at most one token per UTF-8 byte, plus a few tokens of
    per-message framing; output is bounded by max_tokens."""
    return prompt_bytes + 8 * messages + 8, max_tokens


def estimate_tokens(chars: int) -> int:
    """A usage estimate when a provider never reported any (about four characters a token)."""
    return math.ceil(chars / 4)
