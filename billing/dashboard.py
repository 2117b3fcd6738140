"""The admin usage dashboard: SQL aggregates from billing.selectors laid out as SVG bar charts.

The charts are computed here as plain geometry and drawn by the template as inline SVG, so
the page needs no JavaScript and loads nothing from another host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from django import forms
from django.utils.http import urlencode

from billing.selectors import UsageFilter, usage_breakdown, usage_overview

DEFAULT_DAYS = 30
MAX_DAYS = 366
TOP_MODELS = 15
TOP_USERS = 10

COLUMN_CHART_WIDTH, COLUMN_CHART_HEIGHT, AXIS_HEIGHT = 720, 180, 18
ROW_CHART_WIDTH, ROW_HEIGHT, LABEL_WIDTH, VALUE_WIDTH = 720, 22, 200, 110

# What a chart plots: counts, percentages or dollars. An empty chart's scale is the int 0.
N = TypeVar("N", int, float, Decimal)


class DashboardRangeForm(forms.Form):
    date_from = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    date_to = forms.DateField(label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))

    @classmethod
    def default_range(cls) -> dict[str, str]:
        today = dt.datetime.now(dt.UTC).date()
        return {"date_from": f"{today - dt.timedelta(days=DEFAULT_DAYS - 1):%Y-%m-%d}", "date_to": f"{today:%Y-%m-%d}"}

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what Form.clean() returns (its stub also allows None, for overrides)
        date_from, date_to = cleaned.get("date_from"), cleaned.get("date_to")
        if date_from and date_to:
            if date_from > date_to:
                raise forms.ValidationError("'From' must be on or before 'To'.")
            if (date_to - date_from).days >= MAX_DAYS:
                raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        return cleaned


def usd(value: Decimal | int) -> str:
    """Cents from a dollar up, else enough places to show a fraction of a cent (an empty chart's scale is 0)."""
    return f"${value:.6f}" if -1 < value < 1 else f"${value:,.2f}"


def count(value: int) -> str:
    return f"{value:,}"


def percent(value: float) -> str:
    return f"{value:.1f}%"


def error_rate(row: dict[str, Any]) -> float:
    errors: int = row["errors"]
    requests: int = row["requests"]
    return 100.0 * errors / requests if requests else 0.0


@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    x: float
    y: float
    width: float
    height: float

    @property
    def text_y(self) -> float:
        """Baseline of a row chart's label and value text, centred on the bar."""
        return round(self.y + self.height / 2 + 4, 1)

    @property
    def value_x(self) -> float:
        return round(self.x + self.width + 6, 1)


@dataclass(frozen=True)
class Chart:
    title: str
    kind: str  # "columns" (one per day) or "rows" (one per provider, model or user)
    width: int
    height: int
    bars: list[Bar]
    scale_max: str = ""
    axis: list[tuple[float, str]] = field(default_factory=list)  # (x, label) under a column chart

    @property
    def axis_y(self) -> int:
        return self.height - AXIS_HEIGHT

    @property
    def axis_label_y(self) -> int:
        return self.height - 4

    @property
    def label_x(self) -> int:
        return LABEL_WIDTH - 8


def _ratio(value: float | Decimal, largest: float | Decimal) -> float:
    return float(value) / float(largest) if largest else 0.0


def column_chart(title: str, labels: Sequence[str], values: Sequence[N], fmt: Callable[[N | int], str]) -> Chart:
    """One vertical bar per label (a day), scaled to the largest value."""
    largest = max(values, default=0)
    slot = COLUMN_CHART_WIDTH / max(len(values), 1)
    bars = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = round(_ratio(value, largest) * COLUMN_CHART_HEIGHT, 1)
        bars.append(
            Bar(
                label,
                fmt(value),
                x=round(index * slot + slot * 0.1, 1),
                y=round(COLUMN_CHART_HEIGHT - height, 1),
                width=round(max(slot * 0.8, 1), 1),
                height=height,
            )
        )
    ticks = sorted({0, len(labels) // 2, len(labels) - 1}) if labels else []
    axis = [(round(i * slot + slot / 2, 1), labels[i]) for i in ticks]
    return Chart(
        title, "columns", COLUMN_CHART_WIDTH, COLUMN_CHART_HEIGHT + AXIS_HEIGHT, bars, scale_max=fmt(largest), axis=axis
    )


def row_chart(title: str, labels: Sequence[str], values: Sequence[N], fmt: Callable[[N | int], str]) -> Chart:
    """One horizontal bar per label, largest first as given, label on the left and value on the right."""
    largest = max(values, default=0)
    plot_width = ROW_CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = [
        Bar(
            label,
            fmt(value),
            x=LABEL_WIDTH,
            y=index * ROW_HEIGHT + 3,
            width=round(max(_ratio(value, largest) * plot_width, 1 if value else 0), 1),
            height=ROW_HEIGHT - 6,
        )
        for index, (label, value) in enumerate(zip(labels, values, strict=True))
    ]
    return Chart(title, "rows", ROW_CHART_WIDTH, max(len(bars), 1) * ROW_HEIGHT, bars)


@dataclass(frozen=True)
class Breakdown:
    """A chart of spend per group, with a table of all four measures beside it."""

    chart: Chart
    rows: list[dict[str, str]]


def breakdown(title: str, rows: list[dict[str, Any]], label_key: str) -> Breakdown:
    labels = [str(row[label_key]) or "(none)" for row in rows]
    table = [
        {
            "label": label,
            "requests": count(row["requests"]),
            "tokens": count(row["total_tokens"]),
            "spend": usd(row["cost_usd"]),
            "error_rate": percent(error_rate(row)),
        }
        for label, row in zip(labels, rows, strict=True)
    ]
    return Breakdown(row_chart(title, labels, [row["cost_usd"] for row in rows], usd), table)


@dataclass(frozen=True)
class Dashboard:
    filters: UsageFilter
    overview: dict[str, str]
    daily: list[Chart]
    by_provider: Breakdown
    by_model: Breakdown
    top_users: Breakdown

    @property
    def ledger_query(self) -> str:
        """The changelist's query string for the same rows (its created_at filter, as aware datetimes)."""
        query = {"created_at__gte": str(self.filters.starts_at)}
        if self.filters.ends_before is not None:
            query["created_at__lt"] = str(self.filters.ends_before)
        return urlencode(query)


def _every_day(
    date_from: dt.date, date_to: dt.date, rows: list[dict[str, Any]]
) -> tuple[list[dt.date], list[dict[str, Any]]]:
    """One row per day of the range, zeros for days without usage (so the chart's time axis is even)."""
    by_day = {row["day"]: row for row in rows}
    empty = {"requests": 0, "total_tokens": 0, "cost_usd": Decimal(0), "errors": 0}
    days = [date_from + dt.timedelta(days=n) for n in range((date_to - date_from).days + 1)]
    return days, [by_day.get(day, empty) for day in days]


def usage_dashboard(*, date_from: dt.date, date_to: dt.date) -> Dashboard:
    """Every user's usage over the range: five GROUP BY queries."""
    filters = UsageFilter(date_from=date_from, date_to=date_to)
    totals = usage_overview(filters=filters)
    days, per_day = _every_day(date_from, date_to, usage_breakdown(filters=filters, by="day"))
    labels = [f"{day:%Y-%m-%d}" for day in days]
    largest_first = ("-cost_usd", "-requests")
    return Dashboard(
        filters=filters,
        overview={
            "requests": count(totals["requests"]),
            "tokens": count(totals["total_tokens"]),
            "spend": usd(totals["cost_usd"]),
            "error_rate": percent(error_rate(totals)),
        },
        daily=[
            column_chart("Requests per day", labels, [row["requests"] for row in per_day], count),
            column_chart("Tokens per day", labels, [row["total_tokens"] for row in per_day], count),
            column_chart("Spend per day (USD)", labels, [row["cost_usd"] for row in per_day], usd),
            column_chart("Error rate per day", labels, [error_rate(row) for row in per_day], percent),
        ],
        by_provider=breakdown(
            "Spend per provider", usage_breakdown(filters=filters, by="provider", order_by=largest_first), "provider"
        ),
        by_model=breakdown(
            f"Spend per model (top {TOP_MODELS})",
            usage_breakdown(filters=filters, by="model", order_by=largest_first, limit=TOP_MODELS),
            "model",
        ),
        top_users=breakdown(
            f"Top {TOP_USERS} users by spend",
            usage_breakdown(filters=filters, by="user", order_by=largest_first, limit=TOP_USERS),
            "user__username",
        ),
    )
