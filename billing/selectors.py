"""Queries over the usage ledger.

Everything that reports usage starts from `usage_records`: the usage API, the finance
CSV and the admin dashboard. The same filters therefore select the same ledger rows
everywhere, so the API's totals and the sum of the CSV's rows agree by construction.
All aggregation runs in the database (one GROUP BY query per breakdown).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Aggregate, BigIntegerField, Count, DecimalField, F, Q, QuerySet, Sum
from django.db.models.functions import Cast, Round, TruncDate

from billing.models import UsageRecord

UTC = dt.UTC
GROUPINGS = ("day", "model")


@dataclass(frozen=True)
class UsageFilter:
    """Which ledger rows to report: a range of whole UTC days (`date_to` inclusive) and optional filters."""

    date_from: dt.date
    date_to: dt.date
    user_id: int | None = None  # None: every user (callers decide who may ask for that)
    model: str = ""
    provider: str = ""

    @property
    def starts_at(self) -> dt.datetime:
        return dt.datetime.combine(self.date_from, dt.time.min, tzinfo=UTC)

    @property
    def ends_before(self) -> dt.datetime | None:
        """Midnight UTC after `date_to`; None when that is past the last representable date."""
        if self.date_to >= dt.date.max:
            return None
        return dt.datetime.combine(self.date_to + dt.timedelta(days=1), dt.time.min, tzinfo=UTC)


def month_range(day: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of day's calendar month."""
    return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])


def default_date_range(date_from: dt.date | None, date_to: dt.date | None) -> tuple[dt.date, dt.date]:
    """Fill in a missing end of the range: a calendar month around the given end, or the current UTC month."""
    if date_from is None:
        if date_to is None:
            return month_range(dt.datetime.now(UTC).date())
        return month_range(date_to)[0], date_to
    if date_to is None:
        return date_from, month_range(date_from)[1]
    return date_from, date_to


def usage_records(*, filters: UsageFilter) -> QuerySet[UsageRecord]:
    """The ledger rows that filters select, unordered. A half-open range on created_at uses the
    (user, created_at), (model, created_at) and (provider, created_at) indexes."""
    records = UsageRecord.objects.filter(created_at__gte=filters.starts_at)
    if (ends_before := filters.ends_before) is not None:
        records = records.filter(created_at__lt=ends_before)
    if filters.user_id is not None:
        records = records.filter(user_id=filters.user_id)
    if filters.model:
        records = records.filter(model=filters.model)
    if filters.provider:
        records = records.filter(provider=filters.provider)
    return records.order_by()


def user_id_for_username(username: str) -> int | None:
    return get_user_model().objects.filter(username=username).values_list("pk", flat=True).first()


def _utc_day() -> TruncDate:
    # Explicit UTC: a day in a usage report is a UTC day whatever timezone is active.
    return TruncDate("created_at", tzinfo=UTC)


def _decimal_places(column: str) -> int:
    field = UsageRecord._meta.get_field(column)
    if not isinstance(field, DecimalField):
        raise TypeError(f"UsageRecord.{column} is not a DecimalField")
    return field.decimal_places


def exact_decimal_sum(column: str) -> Sum:
    """SUM of a decimal column counted in whole units of its last decimal place.

    SQLite keeps a DecimalField as a float and SUM()s floats, which drifts over millions of rows;
    an integer sum of units is exact in every database. `with_decimals` scales the result back.
    """
    units = Cast(Round(F(column) * 10 ** _decimal_places(column)), BigIntegerField())
    return Sum(units, default=0)


DECIMAL_SUMS = ("video_seconds", "cost_usd")


def with_decimals(row: dict[str, Any]) -> dict[str, Any]:
    """row with the exact_decimal_sum columns back in their unit, as Decimal."""
    for column in DECIMAL_SUMS:
        if column in row:
            row[column] = Decimal(row[column]).scaleb(-_decimal_places(column))
    return row


def usage_aggregates() -> dict[str, Aggregate]:
    """The usage API's measures, as SQL aggregates (0 rather than NULL over no rows)."""
    return {  # total_tokens first: once annotated, the names input_tokens and output_tokens mean these sums
        "requests": Count("id"),
        "total_tokens": Sum(F("input_tokens") + F("output_tokens"), default=0),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "images": Sum("images", default=0),
        "video_seconds": exact_decimal_sum("video_seconds"),
        "cost_usd": exact_decimal_sum("cost_usd"),
    }


@dataclass(frozen=True)
class UsageSummary:
    rows: list[dict[str, Any]]
    totals: dict[str, Any]


def usage_summary(*, filters: UsageFilter, group_by: Sequence[str]) -> UsageSummary:
    """Totals per group (any of "day", "model", in that order) and overall, for the filtered rows."""
    unknown = set(group_by) - set(GROUPINGS)
    if unknown or not group_by:
        raise ValueError(f"group_by must be a non-empty subset of {GROUPINGS}, not {group_by!r}")
    keys = [name for name in GROUPINGS if name in group_by]
    records = usage_records(filters=filters)
    grouped = records.annotate(day=_utc_day()) if "day" in keys else records
    rows = [with_decimals(row) for row in grouped.values(*keys).annotate(**usage_aggregates()).order_by(*keys)]
    return UsageSummary(rows=rows, totals=with_decimals(records.aggregate(**usage_aggregates())))


# --- the admin dashboard's breakdowns ----------------------------------------------------
BREAKDOWNS = {
    "day": ("day",),
    "provider": ("provider",),
    "model": ("model",),
    "user": ("user_id", "user__username"),
}


def dashboard_aggregates() -> dict[str, Aggregate]:
    return {
        "requests": Count("id"),
        "total_tokens": Sum(F("input_tokens") + F("output_tokens"), default=0),
        "cost_usd": exact_decimal_sum("cost_usd"),
        "errors": Count("id", filter=Q(status=UsageRecord.Status.FAILED)),
    }


def usage_breakdown(
    *, filters: UsageFilter, by: str, order_by: Sequence[str] = (), limit: int | None = None
) -> list[dict[str, Any]]:
    """Requests, tokens, spend and failed requests per day, provider, model or user (largest first
    when order_by says so, e.g. ("-cost_usd",)), computed in one GROUP BY query."""
    keys = BREAKDOWNS[by]
    records = usage_records(filters=filters)
    if by == "day":
        records = records.annotate(day=_utc_day())
    rows = records.values(*keys).annotate(**dashboard_aggregates()).order_by(*order_by, *keys)
    return [with_decimals(row) for row in (rows[:limit] if limit else rows)]


def usage_overview(*, filters: UsageFilter) -> dict[str, Any]:
    """The dashboard's headline numbers over the whole range."""
    return with_decimals(usage_records(filters=filters).aggregate(**dashboard_aggregates()))
