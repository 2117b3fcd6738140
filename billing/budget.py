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
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from billing.caps import Caps
from billing.models import BudgetPeriod, UsageRecord
from gateway.errors import ApiError

ZERO = Decimal(0)


class QuotaExceeded(ApiError):
    status, type, code = 429, "insufficient_quota", "quota_exceeded"

    def __init__(self, message: str):
        # Retrying will not help until the period turns or an admin raises the cap.
        super().__init__(message, headers={"x-should-retry": "false"})


@dataclass(frozen=True)
class Amounts:
    cost_usd: Decimal = ZERO
    tokens: int = 0
    images: int = 0
    video_seconds: Decimal = ZERO


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
        cost=Sum("cost_usd"), input=Sum("input_tokens"), output=Sum("output_tokens"), images=Sum("images"),
        video=Sum("video_seconds"))
    return Amounts(totals["cost"] or ZERO, (totals["input"] or 0) + (totals["output"] or 0), totals["images"] or 0,
                   totals["video"] or ZERO)


def _budget_row(user_id: int, period: date) -> int:
    row = BudgetPeriod.objects.filter(user_id=user_id, period=period).values_list("pk", flat=True).first()
    if row is not None:
        return row
    used = used_this_period(user_id, period)
    try:
        with transaction.atomic():
            return BudgetPeriod.objects.create(user_id=user_id, period=period, spent_usd=used.cost_usd,
                                               tokens_used=used.tokens, images_used=used.images,
                                               video_seconds_used=used.video_seconds).pk
    except IntegrityError:  # a concurrent request created it first
        return BudgetPeriod.objects.get(user_id=user_id, period=period).pk


def _fits(caps: Caps, want: Amounts) -> Q:
    """The condition, evaluated by the database on the locked row, that this request still fits."""
    condition = Q()
    checks = ((caps.spend_usd, "spent_usd", "reserved_usd", want.cost_usd),
              (caps.tokens, "tokens_used", "tokens_reserved", want.tokens),
              (caps.images, "images_used", "images_reserved", want.images),
              (caps.video_seconds, "video_seconds_used", "video_seconds_reserved", want.video_seconds))
    for cap, used, reserved, amount in checks:
        if cap is not None:
            condition &= Q(**{f"{used}__lte": cap - amount - F(reserved)})
    return condition


def budget_reserve(*, user_id: int, caps: Caps | None, want: Amounts) -> Reservation | None:
    """Hold `want` against the caps, or raise QuotaExceeded. None when the user has no caps."""
    if caps is None:
        return None
    period = period_of(timezone.now())
    row = _budget_row(user_id, period)
    held = BudgetPeriod.objects.filter(Q(pk=row) & _fits(caps, want)).update(
        reserved_usd=F("reserved_usd") + want.cost_usd, tokens_reserved=F("tokens_reserved") + want.tokens,
        images_reserved=F("images_reserved") + want.images,
        video_seconds_reserved=F("video_seconds_reserved") + want.video_seconds)
    if not held:
        raise QuotaExceeded(f"This request could exceed your monthly quota ({_cap_text(caps)}); "
                            f"it would need up to ${want.cost_usd} and {want.tokens} tokens.")
    return Reservation(user_id, period, want)


def _cap_text(caps: Caps) -> str:
    parts = [(caps.spend_usd, "USD {}"), (caps.tokens, "{} tokens"), (caps.images, "{} images"),
             (caps.video_seconds, "{} video seconds")]
    return ", ".join(fmt.format(cap) for cap, fmt in parts if cap is not None)


def budget_settle(reservation: Reservation | None, used: Amounts) -> None:
    """Turn the hold into what was really used. Call inside the ledger row's transaction."""
    if reservation is None:
        return
    held = reservation.amounts
    BudgetPeriod.objects.filter(user_id=reservation.user_id, period=reservation.period).update(
        reserved_usd=F("reserved_usd") - held.cost_usd, spent_usd=F("spent_usd") + used.cost_usd,
        tokens_reserved=F("tokens_reserved") - held.tokens, tokens_used=F("tokens_used") + used.tokens,
        images_reserved=F("images_reserved") - held.images, images_used=F("images_used") + used.images,
        video_seconds_reserved=F("video_seconds_reserved") - held.video_seconds,
        video_seconds_used=F("video_seconds_used") + used.video_seconds)


def budget_release(reservation: Reservation | None) -> None:
    """Give the hold back: the request failed before anything billable happened."""
    budget_settle(reservation, Amounts())


def worst_case_tokens(prompt_chars: int, max_tokens: int, messages: int) -> tuple[int, int]:
    """(input, output) token bounds: a token is at least one character in practice, plus a few
    tokens of per-message framing; output is bounded by max_tokens."""
    return prompt_chars + 8 * messages + 8, max_tokens


def estimate_tokens(chars: int) -> int:
    """A usage estimate when a provider never reported any (about four characters a token)."""
    return math.ceil(chars / 4)
