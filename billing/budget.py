"""Monthly caps without races: reserve the worst case before the provider call, settle
to the real usage after (in the ledger's transaction), release on failure.

Every change is one conditional UPDATE with F() expressions, so concurrent requests
cannot together go past a cap: a reservation only succeeds if, at the moment the
row is updated, spent + reserved + this request still fits under every cap.
Users without caps cost nothing here: no row, no query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from billing.models import BudgetPeriod, UsageRecord
from core.caps import Caps
from core.errors import QuotaExceeded

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


def _fits(caps: Caps, want: Units) -> Q:
    """The condition, evaluated by the database on the locked row, that this request still fits."""
    limits = Units.of(
        Amounts(caps.spend_usd or ZERO, caps.tokens or 0, caps.images or 0, Decimal(caps.video_seconds or 0))
    )
    condition = Q()
    checks = (
        (caps.spend_usd, "e8_usd", "spent_e8_usd", "reserved_e8_usd"),
        (caps.tokens, "tokens", "tokens_used", "tokens_reserved"),
        (caps.images, "images", "images_used", "images_reserved"),
        (caps.video_seconds, "video_ms", "video_ms_used", "video_ms_reserved"),
    )
    for cap, unit, used, reserved in checks:
        if cap is not None:
            condition &= Q(**{f"{used}__lte": getattr(limits, unit) - getattr(want, unit) - F(reserved)})
    return condition


def _moved(held: Units, used: Units) -> dict[str, CombinedExpression]:
    """The UPDATE that turns a hold into use: reserved -= held, used += used, for every counter."""
    return {
        "reserved_e8_usd": F("reserved_e8_usd") - held.e8_usd,
        "spent_e8_usd": F("spent_e8_usd") + used.e8_usd,
        "tokens_reserved": F("tokens_reserved") - held.tokens,
        "tokens_used": F("tokens_used") + used.tokens,
        "images_reserved": F("images_reserved") - held.images,
        "images_used": F("images_used") + used.images,
        "video_ms_reserved": F("video_ms_reserved") - held.video_ms,
        "video_ms_used": F("video_ms_used") + used.video_ms,
    }


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


def worst_case_tokens(prompt_bytes: int, max_tokens: int, messages: int) -> tuple[int, int]:
    """(input, output) token bounds: at most one token per UTF-8 byte, plus a few tokens of
    per-message framing; output is bounded by max_tokens."""
    return prompt_bytes + 8 * messages + 8, max_tokens


def estimate_tokens(chars: int) -> int:
    """A usage estimate when a provider never reported any (about four characters a token)."""
    return math.ceil(chars / 4)
