"""GET /v1/usage: a caller's usage totals by day and model; staff may look at anyone's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.keys import api_key_create
from tests.helpers import at, ledger_row

pytestmark = pytest.mark.django_db
UTC = dt.UTC


@pytest.fixture
def bob_api(bob, client_for):
    return client_for(api_key_create(user=bob, name="bob")[1])


def usage(client, **params):
    response = client.get("/v1/usage", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_totals_by_utc_day_and_model_of_own_usage(api, user, bob):
    ledger_row(user, at("2025-03-01T10:00:00"), cost="0.00000123", input_tokens=100, output_tokens=20)
    ledger_row(user, at("2025-03-01T11:00:00"), cost="0.5", input_tokens=1, output_tokens=2)
    ledger_row(
        user, at("2025-03-01T23:59:59.999999"), model="claude-sonnet-4", provider="anthropic", cost="0.25", images=0
    )
    ledger_row(user, at("2025-03-02T00:00:00"), cost="1", video_seconds=Decimal("8.5"), images=2)
    ledger_row(bob, at("2025-03-01T10:00:00"), cost="99")  # someone else's

    body = usage(api, **{"from": "2025-03-01", "to": "2025-03-31"})

    assert body["from"] == "2025-03-01" and body["to"] == "2025-03-31"
    assert body["data"] == [
        {
            "day": "2025-03-01",
            "model": "claude-sonnet-4",
            "requests": 1,
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "images": 0,
            "video_seconds": "0.000",
            "cost_usd": "0.25000000",
        },
        {
            "day": "2025-03-01",
            "model": "gpt-4o",
            "requests": 2,
            "input_tokens": 101,
            "output_tokens": 22,
            "total_tokens": 123,
            "images": 0,
            "video_seconds": "0.000",
            "cost_usd": "0.50000123",
        },
        {
            "day": "2025-03-02",
            "model": "gpt-4o",
            "requests": 1,
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "images": 2,
            "video_seconds": "8.500",
            "cost_usd": "1.00000000",
        },
    ]
    assert body["totals"] == {
        "requests": 4,
        "input_tokens": 121,
        "output_tokens": 32,
        "total_tokens": 153,
        "images": 2,
        "video_seconds": "8.500",
        "cost_usd": "1.75000123",
    }


def test_group_by_day_or_model_alone(api, user):
    ledger_row(user, at("2025-03-01T10:00:00"), model="a", cost="1")
    ledger_row(user, at("2025-03-01T12:00:00"), model="b", cost="2")
    ledger_row(user, at("2025-03-02T10:00:00"), model="a", cost="4")
    window = {"from": "2025-03-01", "to": "2025-03-02"}

    by_day = usage(api, group_by="day", **window)["data"]
    by_model = usage(api, group_by="model", **window)["data"]

    assert [(r["day"], r["model"], r["requests"], r["cost_usd"]) for r in by_day] == [
        ("2025-03-01", None, 2, "3.00000000"),
        ("2025-03-02", None, 1, "4.00000000"),
    ]
    assert [(r["day"], r["model"], r["requests"], r["cost_usd"]) for r in by_model] == [
        (None, "a", 2, "5.00000000"),
        (None, "b", 1, "2.00000000"),
    ]


def test_date_range_includes_whole_to_day_and_nothing_outside(api, user):
    for moment in (
        "2025-02-28T23:59:59.999999",
        "2025-03-01T00:00:00",
        "2025-03-31T23:59:59.999999",
        "2025-04-01T00:00:00",
    ):
        ledger_row(user, at(moment))

    assert usage(api, **{"from": "2025-03-01", "to": "2025-03-31"})["totals"]["requests"] == 2
    assert usage(api, **{"from": "2025-03-31", "to": "2025-03-31"})["totals"]["requests"] == 1
    assert usage(api, **{"from": "2025-02-28", "to": "2025-04-01"})["totals"]["requests"] == 4


def test_default_range_is_the_current_utc_month(api, user):
    now = timezone.now()
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ledger_row(user, now)
    ledger_row(user, month_start)
    ledger_row(user, month_start - dt.timedelta(microseconds=1))  # last month

    body = usage(api)

    assert body["from"] == f"{month_start:%Y-%m-%d}"
    assert body["to"].startswith(f"{month_start:%Y-%m-}") and body["to"] >= f"{now:%Y-%m-%d}"
    assert body["totals"]["requests"] == 2


def test_one_given_end_of_the_range_makes_it_that_month(api, user):
    assert usage(api, **{"from": "2024-02-10"})["to"] == "2024-02-29"
    assert usage(api, to="2024-02-10")["from"] == "2024-02-01"


def test_filters_by_model_and_provider(api, user):
    ledger_row(user, at("2025-03-01T10:00:00"), model="gpt-4o", provider="openai", cost="1")
    ledger_row(user, at("2025-03-01T10:00:00"), model="gpt-4o", provider="azure", cost="2")
    ledger_row(user, at("2025-03-01T10:00:00"), model="claude-sonnet-4", provider="anthropic", cost="4")
    window = {"from": "2025-03-01", "to": "2025-03-01"}

    assert usage(api, model="gpt-4o", **window)["totals"]["cost_usd"] == "3.00000000"
    assert usage(api, provider="azure", **window)["totals"]["cost_usd"] == "2.00000000"
    assert usage(api, model="gpt-4o", provider="anthropic", **window)["totals"]["requests"] == 0


def test_staff_see_a_users_usage_or_everyones(staff_api, staff_user, user, bob):
    ledger_row(user, at("2025-03-01T10:00:00"), cost="1")
    ledger_row(bob, at("2025-03-01T10:00:00"), cost="2")
    ledger_row(staff_user, at("2025-03-01T10:00:00"), cost="4")
    window = {"from": "2025-03-01", "to": "2025-03-31"}

    assert usage(staff_api, user="alice", **window)["totals"]["cost_usd"] == "1.00000000"
    assert usage(staff_api, user="bob", **window)["totals"]["cost_usd"] == "2.00000000"
    assert usage(staff_api, user="*", **window)["totals"]["cost_usd"] == "7.00000000"
    assert usage(staff_api, **window)["totals"]["cost_usd"] == "4.00000000"  # no user: their own


def test_a_user_never_sees_another_users_usage(api, bob_api, user, bob):
    ledger_row(user, at("2025-03-01T10:00:00"), cost="1")
    ledger_row(bob, at("2025-03-01T10:00:00"), cost="2")
    window = {"from": "2025-03-01", "to": "2025-03-31"}

    assert usage(api, **window)["totals"]["cost_usd"] == "1.00000000"
    assert usage(bob_api, **window)["totals"]["cost_usd"] == "2.00000000"
    assert usage(api, user="alice", **window)["totals"]["cost_usd"] == "1.00000000"  # naming oneself is fine
    for path in ("/v1/usage", "/v1/usage/export.csv"):
        response = api.get(path, {"user": "bob", **window})
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        assert response.json()["error"]["param"] == "user"
        assert api.get(path, {"user": "*", **window}).status_code == 403

    csv_text = api.get("/v1/usage/export.csv", window).getvalue().decode()
    assert "alice" in csv_text and "bob" not in csv_text


@pytest.mark.parametrize(
    "params, param",
    [
        ({"from": "2025-13-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2025-02-30"}, "to"),
        ({"to": "01/03/2025"}, "to"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
        ({"group_by": "week"}, "group_by"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(api, params, param):
    response = api.get("/v1/usage", params)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param
    assert api.get("/v1/usage/export.csv", params).status_code == (200 if param == "group_by" else 400)


def test_staff_asking_for_an_unknown_user_is_400(staff_api):
    response = staff_api.get("/v1/usage", {"user": "nobody"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "user"


def test_usage_needs_an_api_key(client):
    response = client.get("/v1/usage")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_openapi_documents_usage_and_the_csv_columns(client):
    schema = client.get("/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    usage_doc = schema["paths"]["/v1/usage"]["get"]
    export_doc = schema["paths"]["/v1/usage/export.csv"]["get"]
    assert {p["name"] for p in usage_doc["parameters"]} == {"from", "to", "user", "model", "provider", "group_by"}
    assert "text/csv" in export_doc["responses"]["200"]["content"]
    assert "request_id, created_at, user, api_key_prefix" in export_doc["description"]


def test_a_user_named_star_still_sees_only_their_own_usage(django_user_model, client_for, user):
    from gateway.keys import api_key_create

    star = django_user_model.objects.create_user("*")
    ledger_row(user, at("2025-03-01T10:00:00"), cost="1")
    ledger_row(star, at("2025-03-01T10:00:00"), cost="2")
    star_api = client_for(api_key_create(user=star)[1])
    window = {"from": "2025-03-01", "to": "2025-03-31"}

    assert usage(star_api, user="*", **window)["totals"]["cost_usd"] == "2.00000000"
    assert "alice" not in star_api.get("/v1/usage/export.csv", {"user": "*", **window}).getvalue().decode()
