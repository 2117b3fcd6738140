"""The billing admin: a read-only ledger that stays fast on millions of rows, limits, and the usage dashboard."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.admin import LedgerPaginator, planner_row_estimate
from billing.models import BudgetPeriod, UsageRecord, UserLimits
from providers.models import Provider
from tests.helpers import at, ledger_row

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/billing/usagerecord/"
DASHBOARD = "/admin/billing/usagerecord/dashboard/"


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_changelist_loads_with_filters_search_and_date_hierarchy(admin_client, user):
    Provider.objects.create(name="openai", kind=Provider.Kind.OPENAI, base_url="https://openai.test.invalid/v1")
    ledger_row(user, at("2025-03-05T10:00:00"), request_id="req_kept", status=UsageRecord.Status.FAILED)
    ledger_row(user, at("2025-03-05T10:00:00"), request_id="req_other_status")
    ledger_row(user, at("2024-03-05T10:00:00"), request_id="req_other_year", status=UsageRecord.Status.FAILED)

    page = admin_client.get(
        CHANGELIST,
        {
            "status__exact": "failed",
            "modality__exact": "chat",
            "provider": "openai",
            "created_at__year": "2025",
            "q": "alice",
        },
    )
    html = page.content.decode()

    assert page.status_code == 200
    assert "req_kept" in html and "req_other_status" not in html and "req_other_year" not in html
    assert 'class="toplinks"' in html and 'class="date-back"' in html  # the date hierarchy, drilled into 2025
    for title in ("By status", "By modality", "By provider", "By created at"):
        assert title in html
    assert admin_client.get(CHANGELIST, {"created_at__year": "2025", "created_at__month": "3"}).status_code == 200


def test_changelist_never_counts_or_scans_the_whole_ledger(admin_client, user):
    for index in range(3):
        ledger_row(user, at(f"2025-0{index + 1}-15T10:00:00"))

    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(CHANGELIST, {"created_at__year": "2025"}).content.decode()

    ledger_queries = [q["sql"].upper() for q in queries if "billing_usagerecord" in q["sql"]]
    counts = [sql for sql in ledger_queries if "COUNT(" in sql]
    assert counts and all("LIMIT" in sql for sql in counts)
    assert not [sql for sql in ledger_queries if "DISTINCT" in sql]  # date hierarchy and provider filter
    assert all(f"created_at__month={month}" in html for month in (1, 2, 3))  # the months of 2025 with rows
    assert "created_at__month=4" not in html


def test_paginator_counts_exactly_up_to_its_limit_then_estimates(admin_client, user, monkeypatch):
    monkeypatch.setattr(LedgerPaginator, "exact_count_limit", 2)
    for index in range(4):
        ledger_row(user, at(f"2025-03-0{index + 1}T10:00:00"))
    records = UsageRecord.objects.order_by("-created_at")

    estimated = LedgerPaginator(records, 100)
    exact = LedgerPaginator(records.filter(created_at__gte=at("2025-03-03T00:00:00")), 100)

    assert estimated.count >= 2 and estimated.count_is_estimated
    assert exact.count == 2 and not exact.count_is_estimated
    assert (planner_row_estimate(records) is None) == (connection.vendor != "postgresql")
    assert re.search(r"about \d+ usage records", admin_client.get(CHANGELIST).content.decode())


def test_the_ledger_is_read_only_in_the_admin(admin_client, user):
    row = ledger_row(user, at("2025-03-05T10:00:00"), cost="0.5")
    change_url = f"{CHANGELIST}{row.pk}/change/"

    changelist = admin_client.get(CHANGELIST).content.decode()
    detail = admin_client.get(change_url)

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}{row.pk}/delete/").status_code == 403
    assert 'value="delete_selected"' not in changelist and 'value="export_csv"' in changelist
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert admin_client.post(change_url, {"cost_usd": "0"}).status_code == 403
    assert UsageRecord.objects.get(pk=row.pk).cost_usd == row.cost_usd


def test_budget_periods_are_read_only_in_the_admin(admin_client, user):
    budget = BudgetPeriod.objects.create(user=user, period=dt.date(2025, 3, 1), spent_e8_usd=123)

    assert admin_client.get("/admin/billing/budgetperiod/").status_code == 200
    assert admin_client.get("/admin/billing/budgetperiod/add/").status_code == 403
    assert 'name="_save"' not in admin_client.get(f"/admin/billing/budgetperiod/{budget.pk}/change/").content.decode()


def test_user_limits_are_edited_on_their_own_page_and_on_the_user_page(admin_client, user):
    autocomplete = admin_client.get("/admin/billing/userlimits/add/").content.decode()
    response = admin_client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": user.username,
            "password": user.password,
            "is_active": "on",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2025-01-01",
            "initial-date_joined_1": "00:00:00",
            "limits-TOTAL_FORMS": "1",
            "limits-INITIAL_FORMS": "0",
            "limits-MIN_NUM_FORMS": "0",
            "limits-MAX_NUM_FORMS": "1",
            "limits-0-rate_limit_requests": "5",
            "limits-0-rate_limit_window_s": "60",
            "limits-0-monthly_spend_cap_usd": "12.5",
            "limits-0-user": str(user.pk),
        },
    )

    assert "admin-autocomplete" in autocomplete
    assert response.status_code == 302, response.content.decode()[:2000]
    limits = UserLimits.objects.get(user=user)
    assert (limits.rate_limit_requests, limits.rate_limit_window_s, str(limits.monthly_spend_cap_usd)) == (
        5,
        60,
        "12.5000",
    )


def test_changelist_and_billing_index_link_to_the_dashboard(admin_client):
    for page in (admin_client.get(CHANGELIST), admin_client.get("/admin/billing/")):
        assert page.status_code == 200
        assert f'href="{DASHBOARD}"' in page.content.decode()


@pytest.fixture
def recent_usage(user, staff_user, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    now = timezone.now()
    ledger_row(user, now, model="gpt-4o", provider="openai", cost="1.5", input_tokens=1000, output_tokens=200)
    ledger_row(
        user,
        now - dt.timedelta(days=1),
        model="gpt-4o",
        provider="openai",
        cost="0.5",
        status=UsageRecord.Status.FAILED,
    )
    ledger_row(bob, now - dt.timedelta(days=3), model="claude-sonnet-4", provider="anthropic", cost="3")
    ledger_row(staff_user, now - dt.timedelta(days=45), model="old-model", provider="old-provider", cost="9")


def test_dashboard_draws_svg_charts_of_the_last_30_days(admin_client, recent_usage):
    page = admin_client.get(DASHBOARD)
    html = page.content.decode()

    assert page.status_code == 200
    assert html.count("<svg viewBox") == 7  # 4 per-day charts, provider, model, users
    assert html.count('<rect class="bar"') >= 4 * 30
    for expected in (
        "Requests per day",
        "Tokens per day",
        "Spend per day",
        "Error rate per day",
        "anthropic",
        "claude-sonnet-4",
        "Top 10 users by spend",
        "bob",
        "$5.00",
        "33.3%",
    ):
        assert expected in html, expected
    assert "old-model" not in html  # 45 days ago: outside the default range


def test_dashboard_loads_nothing_from_other_hosts(admin_client, recent_usage):
    page = admin_client.get(DASHBOARD)
    html = page.content.decode()

    assert page.status_code == 200
    assert "<svg viewBox" in html  # the charts were drawn: there was something to check
    assert not re.search(r"<script[^>]+src=\"(https?:)?//", html)
    assert not re.search(r"<link[^>]+href=\"(https?:)?//", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def test_dashboard_range_is_chosen_with_the_form(admin_client, recent_usage):
    today = timezone.now().date()
    wide = admin_client.get(DASHBOARD, {"date_from": f"{today - dt.timedelta(days=60)}", "date_to": f"{today}"})
    backwards = admin_client.get(DASHBOARD, {"date_from": f"{today}", "date_to": f"{today - dt.timedelta(days=1)}"})

    assert wide.status_code == 200 and "old-model" in wide.content.decode()
    assert backwards.status_code == 200 and "must be on or before" in backwards.content.decode()
    assert "<svg viewBox" not in backwards.content.decode()


def test_dashboard_is_for_staff_only(client, user, django_user_model):
    assert client.get(DASHBOARD).status_code == 302  # to the admin login

    client.force_login(user)
    assert client.get(DASHBOARD)["Location"].startswith("/admin/login/")

    clerk = django_user_model.objects.create_user("clerk", is_staff=True)  # staff, but no permission on usage
    client.force_login(clerk)
    assert client.get(DASHBOARD).status_code == 403
    assert client.get("/admin/billing/usagerecord/export.csv").status_code == 403


def test_admin_index_links_to_the_usage_dashboard(client, staff_user):
    client.force_login(staff_user)
    page = client.get("/admin/")
    assert page.status_code == 200
    assert 'href="/admin/billing/usagerecord/dashboard/"' in page.content.decode()
