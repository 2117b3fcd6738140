"""The usage API (/v1/usage) and the finance CSV: thin views over billing.selectors and billing.exports."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import exports
from billing.selectors import UsageFilter, default_date_range, usage_records, usage_summary, user_id_for_username
from core.principal import Principal
from gateway.auth import request_principal
from gateway.errors import InvalidRequest, PermissionError_
from gateway.schema import ERROR

ALL_USERS = "*"
ERRORS = {
    400: OpenApiResponse(ERROR, "A bad query parameter (error.param names it)"),
    401: OpenApiResponse(ERROR, "No or bad API key"),
    403: OpenApiResponse(ERROR, "permission_error: only staff may ask for another user's usage"),
}


class UsageFilterQuery(serializers.Serializer):
    """Query parameters shared by /v1/usage and /v1/usage/export.csv."""

    to = serializers.DateField(
        required=False,
        input_formats=["%Y-%m-%d"],
        help_text="Last UTC day, inclusive (YYYY-MM-DD). Default: the end of the month "
        "of `from`, or of the current month.",
    )
    user = serializers.CharField(
        required=False, allow_blank=True, help_text="Staff only: a username, or `*` for every user."
    )
    model = serializers.CharField(required=False, allow_blank=True, help_text="Only this public model name.")
    provider = serializers.CharField(required=False, allow_blank=True, help_text="Only this provider.")

    def get_fields(self):
        # `from` is a Python keyword, so it cannot be declared in the class body.
        date_from = serializers.DateField(
            required=False,
            input_formats=["%Y-%m-%d"],
            help_text="First UTC day (YYYY-MM-DD). Default: the first day of the "
            "month of `to`, or of the current month.",
        )
        return {"from": date_from, **super().get_fields()}

    def validate(self, attrs: dict) -> dict:
        attrs["from"], attrs["to"] = default_date_range(attrs.get("from"), attrs.get("to"))
        if attrs["from"] > attrs["to"]:
            raise serializers.ValidationError({"from": f"must be on or before `to` ({attrs['to']:%Y-%m-%d})."})
        return attrs


class UsageSummaryQuery(UsageFilterQuery):
    group_by = serializers.ChoiceField(
        choices=["day", "model", "day,model"], default="day,model", help_text="What each row of `data` totals over."
    )


def usage_filter(principal: Principal, query: dict, *, all_users_by_default: bool) -> UsageFilter:
    """The filter a caller may use: their own rows, or for staff any user's (or everyone's)."""
    username = query.get("user") or ""
    if username and username != principal.username and not principal.is_staff:
        raise PermissionError_("Only staff may see another user's usage.", param="user")
    if principal.is_staff and (username == ALL_USERS or (not username and all_users_by_default)):
        user_id = None
    elif username and username != principal.username:
        user_id = user_id_for_username(username)
        if user_id is None:
            raise InvalidRequest(f"No user named {username!r}.", code="invalid_value", param="user")
    else:
        user_id = principal.user_id
    return UsageFilter(
        date_from=query["from"],
        date_to=query["to"],
        user_id=user_id,
        model=query.get("model") or "",
        provider=query.get("provider") or "",
    )


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField(allow_null=True, help_text="UTC day; null unless grouped by day.")
    model = serializers.CharField(allow_null=True, help_text="Null unless grouped by model.")
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    images = serializers.IntegerField()
    video_seconds = serializers.DecimalField(max_digits=None, decimal_places=3)
    cost_usd = serializers.DecimalField(max_digits=None, decimal_places=8, help_text="Exact USD, as a string.")

    def to_representation(self, instance: dict) -> dict:
        return super().to_representation({"day": None, "model": None, **instance})


class UsageTotalsSerializer(UsageRowSerializer):
    # DRF's way to drop inherited fields: totals are over every day and model.
    day = None  # type: ignore[assignment]
    model = None  # type: ignore[assignment]


class UsageReportSerializer(serializers.Serializer):
    data = UsageRowSerializer(many=True)  # type: ignore[assignment]  # a field named like Serializer.data: schema only
    totals = UsageTotalsSerializer()
    to = serializers.DateField()

    def get_fields(self):
        fields = super().get_fields()
        return {"data": fields["data"], "totals": fields["totals"], "from": serializers.DateField(), "to": fields["to"]}


class UsageView(APIView):
    @extend_schema(
        operation_id="usage",
        tags=["usage"],
        parameters=[UsageSummaryQuery],
        summary="Usage totals by day and model over a date range (default: the current UTC month)",
        description="The caller's own usage. Staff may pass `user=<username>` for one user, or `user=*` for "
        "everyone. Days are UTC; `to` is inclusive. `data` is ordered by day, then model. "
        "`totals` covers the same ledger rows as `/v1/usage/export.csv` with the same parameters.",
        responses={200: UsageReportSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = UsageSummaryQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        filters = usage_filter(request_principal(request), params, all_users_by_default=False)
        summary = usage_summary(filters=filters, group_by=params["group_by"].split(","))
        report = {"data": summary.rows, "totals": summary.totals, "from": filters.date_from, "to": filters.date_to}
        return Response(UsageReportSerializer(report).data)


class JsonErrorsNegotiation(BaseContentNegotiation):
    """The CSV is returned as is; anything else (an error) is JSON, whatever the client's Accept says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0]


class UsageExportView(APIView):
    content_negotiation_class = JsonErrorsNegotiation

    @extend_schema(
        operation_id="usage_export_csv",
        tags=["usage"],
        parameters=[UsageFilterQuery],
        summary="The usage ledger as CSV, one row per ledger row (streamed)",
        description="Staff: every user's rows, or one user's with `user=<username>`; others: their own rows "
        "only. Days are UTC; `to` is inclusive. The sum of `cost_usd` equals `totals.cost_usd` "
        "of `/v1/usage` with the same parameters.\n\n"
        f"Columns, in order: `{', '.join(exports.HEADER)}`. `created_at` is ISO-8601 UTC ending "
        "in `Z`; `cost_usd` is the exact decimal (8 places), `video_seconds` 3 places; "
        "`usage_estimated` is `true` or `false`. Rows are ordered by time. Text cells that a "
        "spreadsheet would evaluate as a formula are prefixed with `'`.",
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, "The CSV file (attachment)"), **ERRORS},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = UsageFilterQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = usage_filter(request_principal(request), query.validated_data, all_users_by_default=True)
        return exports.usage_csv_response(
            request,
            usage_records(filters=filters),
            filename=exports.usage_csv_filename(filters.date_from, filters.date_to),
        )
