"""Admin for the usage ledger (read-only, fast on millions of rows, CSV export, dashboard) and for limits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeVar

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, InlineModelAdmin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property

from billing.dashboard import DashboardRangeForm, usage_dashboard
from billing.exports import usage_csv_filename, usage_csv_response
from billing.models import BudgetPeriod, UsageRecord, UserLimits
from providers.models import Provider

_M = TypeVar("_M", bound=Model)


def planner_row_estimate(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of how many rows queryset returns (EXPLAIN, no scan); None elsewhere."""
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.explain(format="json"))
    plan = plan[0] if isinstance(plan, list) else plan
    return int(plan["Plan"]["Plan Rows"])


class LedgerPaginator(Paginator[UsageRecord]):
    """A paginator that never counts a million rows.

    It counts exactly up to `exact_count_limit` rows (a COUNT over a LIMITed subquery: a bounded
    scan). Past that, on PostgreSQL it takes the planner's estimate, and elsewhere it stops at the
    limit; either way `count_is_estimated` is set and the changelist says "about".
    """

    object_list: QuerySet[UsageRecord]  # the changelist's queryset (a Paginator may also take a list)
    exact_count_limit = 10_000
    count_is_estimated = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list[: self.exact_count_limit + 1].count()
        if counted <= self.exact_count_limit:
            return counted
        self.count_is_estimated = True
        return max(planner_row_estimate(self.object_list) or 0, self.exact_count_limit)


class CalendarQuerySet(QuerySet[_M]):
    """A queryset whose datetimes() lists every year, month or day between its first and last row.

    The admin's date hierarchy asks for the distinct years (months, days) of the changelist's rows:
    a DISTINCT over every row of the ledger (about 0.25 s a million rows on PostgreSQL, growing
    with it). MIN and MAX are two index lookups instead; a period without usage is then listed too
    and shows an empty page.
    """

    # A list, not a QuerySet: the admin's date hierarchy only iterates what datetimes() returns.
    def datetimes(  # type: ignore[override]
        self,
        field_name: str,
        kind: Literal["year", "month", "week", "day", "hour", "minute", "second"],
        order: Literal["ASC", "DESC"] = "ASC",
        tzinfo: dt.tzinfo | None = None,
    ) -> list[dt.datetime]:
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        zone = tzinfo or timezone.get_current_timezone()
        first, last = (timezone.localtime(bounds[end], zone) for end in ("first", "last"))
        periods = list(_calendar(first.date(), last.date(), kind, zone))
        return periods if order == "ASC" else periods[::-1]


def _calendar(first: dt.date, last: dt.date, kind: str, zone: dt.tzinfo) -> Iterator[dt.datetime]:
    """The start of each year, month or day from first's to last's, as aware datetimes."""
    day = {"year": first.replace(month=1, day=1), "month": first.replace(day=1), "day": first}[kind]
    while day <= last:
        yield dt.datetime.combine(day, dt.time.min, tzinfo=zone)
        if kind == "day":
            day += dt.timedelta(days=1)
        elif kind == "month":
            day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        else:
            day = day.replace(year=day.year + 1)


class ProviderFilter(admin.SimpleListFilter):
    """The providers configured in the admin (a small table), not a DISTINCT over the whole ledger."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> Iterable[tuple[str, str]]:
        return [(name, name) for name in Provider.objects.order_by("name").values_list("name", flat=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(provider=self.value()) if self.value() is not None else queryset


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    """Shown, never added, changed or deleted from the admin."""

    def has_add_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _M | None = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin[UsageRecord]):
    """The append-only ledger: one row per request, filterable, exportable as the finance CSV."""

    list_display = (
        "created_at",
        "request_id",
        "user",
        "model",
        "provider",
        "modality",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
    )
    list_filter = ("status", "modality", ProviderFilter, "created_at")
    date_hierarchy = "created_at"
    search_fields = ("request_id", "model", "user__username")
    search_help_text = "Request id, model or username (contains)."
    list_select_related = ("user",)
    show_full_result_count = False  # the unfiltered total would be a COUNT(*) of the whole ledger
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice over the ledger
    paginator = LedgerPaginator
    actions = ("export_csv",)

    def get_queryset(self, request: HttpRequest) -> CalendarQuerySet[UsageRecord]:
        records = super().get_queryset(request)
        return CalendarQuerySet(model=records.model, query=records.query, using=records.db)

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name=f"{prefix}_dashboard"),
            path("export.csv", self.admin_site.admin_view(self.export_view), name=f"{prefix}_export"),
            *super().get_urls(),
        ]

    @admin.action(description="Export selected usage as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        return usage_csv_response(request, queryset, filename=usage_csv_filename())

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse | HttpResponseRedirect:
        """The changelist's current filters, search and date drill-down, as the finance CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:billing_usagerecord_changelist") + "?e=1")
        return usage_csv_response(request, changelist.queryset, filename=usage_csv_filename())

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = DashboardRangeForm(request.GET or DashboardRangeForm.default_range())
        dashboard = None
        if form.is_valid():
            dashboard = usage_dashboard(date_from=form.cleaned_data["date_from"], date_to=form.cleaned_data["date_to"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Usage dashboard",
            "form": form,
            "dashboard": dashboard,
        }
        return TemplateResponse(request, "admin/billing/usagerecord/dashboard.html", context)


@admin.register(BudgetPeriod)
class BudgetPeriodAdmin(ReadOnlyAdmin[BudgetPeriod]):
    """Changed only by the budget code's conditional updates; the admin shows them."""

    list_display = (
        "user",
        "period",
        "spent_usd",
        "reserved_usd",
        "tokens_used",
        "tokens_reserved",
        "images_used",
        "video_ms_used",
    )
    list_filter = ("period",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    date_hierarchy = "period"


LIMIT_FIELDS = (
    "rate_limit_requests",
    "rate_limit_window_s",
    "monthly_spend_cap_usd",
    "monthly_token_cap",
    "monthly_image_cap",
    "monthly_video_seconds_cap",
)


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin[UserLimits]):
    list_display = ("user", *LIMIT_FIELDS, "updated_at")
    search_fields = ("user__username",)
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    fields = ("user", *LIMIT_FIELDS, "updated_at")
    readonly_fields = ("updated_at",)


class UserLimitsInline(admin.StackedInline[UserLimits, Any]):
    model = UserLimits
    fields = LIMIT_FIELDS
    can_delete = True
    extra = 1  # an empty form is shown; left blank, nothing is saved
    max_num = 1
    verbose_name_plural = "limits (blank: the defaults, no cap)"


def _add_limits_to_user_admin() -> None:
    """Show UserLimits on the user page, extending whichever User admin is registered (Django's or another app's)."""
    user_model = get_user_model()
    registered = type(admin.site.get_model_admin(user_model))

    # A base class chosen at run time, which mypy cannot check statically.
    class UserWithLimitsAdmin(registered):  # type: ignore[valid-type,misc]
        inlines = (*registered.inlines, UserLimitsInline)

        def get_inlines(self, request: HttpRequest, obj: Model | None) -> Iterable[type[InlineModelAdmin[Any, Any]]]:
            # The add-user page is Django's two-step form; limits are set once the user exists.
            return super().get_inlines(request, obj) if obj else ()

    admin.site.unregister(user_model)
    admin.site.register(user_model, UserWithLimitsAdmin)


_add_limits_to_user_admin()
