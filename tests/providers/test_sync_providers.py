"""manage.py sync_providers: providers from the environment, routes and prices from the price table,
admin-edited prices left alone."""

import importlib
import io
from decimal import Decimal

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict

from providers.models import ModelRoute, Provider
from providers.price_table import load_price_table
from providers.routing import routing_table

pytestmark = pytest.mark.django_db

HOSTED = {
    "openai": {"api_key": "sk-openai", "base_url": "https://api.openai.example/v1/"},
    "anthropic": {"api_key": "sk-ant", "base_url": "https://api.anthropic.example"},
    "gemini": {"api_key": "", "base_url": "https://gemini.example"},  # no key: no provider
}


def sync() -> str:
    out = io.StringIO()
    call_command("sync_providers", stdout=out)
    return out.getvalue()


@pytest.fixture
def hosted(settings):
    settings.PROVIDER_ENV = dict(HOSTED)
    return settings


# --- providers and the shipped routes -------------------------------------------------------------


def test_creates_the_configured_providers_and_their_shipped_routes_at_table_prices(hosted):
    out = sync()

    assert set(Provider.objects.values_list("name", flat=True)) == {"openai", "anthropic"}
    assert Provider.objects.get(name="openai").base_url == "https://api.openai.example/v1"
    shipped = {route.name: route for route in load_price_table() if route.provider in ("openai", "anthropic")}
    rows = {row.name: row for row in ModelRoute.objects.all()}
    assert set(rows) == set(shipped)
    assert all(row.prices_from_table for row in rows.values())
    for name, route in shipped.items():
        assert {field: getattr(rows[name], field) for field in route.price_fields()} == route.price_fields(), name
    assert rows["claude-sonnet-4"].upstream_model == "claude-sonnet-4-0"
    assert (rows["gpt-*"].priority, rows["gpt-4o"].priority) == (200, 100)
    assert f"{len(shipped)} route(s) added, 0 repriced" in out


def test_a_second_sync_changes_nothing(hosted):
    sync()
    before = list(ModelRoute.objects.values())

    out = sync()

    assert list(ModelRoute.objects.values()) == before
    assert "0 route(s) added, 0 repriced, 0 left" in out


def test_brings_routes_priced_from_the_table_up_to_the_table(hosted):
    sync()
    ModelRoute.objects.filter(name="gpt-4o").update(input_usd_per_mtok=Decimal("5"), cached_input_usd_per_mtok=None)

    out = sync()

    route = ModelRoute.objects.get(name="gpt-4o")
    assert (route.input_usd_per_mtok, route.cached_input_usd_per_mtok) == (Decimal("2.5"), Decimal("1.25"))
    assert route.prices_from_table
    assert "1 repriced" in out
    assert "repriced gpt-4o: input_usd_per_mtok 5 -> 2.5, cached_input_usd_per_mtok unpriced -> 1.25" in out


def test_the_routing_table_serves_the_new_price_after_a_sync(hosted, django_capture_on_commit_callbacks):
    sync()
    ModelRoute.objects.filter(name="gpt-4o").update(input_usd_per_mtok=Decimal("5"))
    assert routing_table().match("gpt-4o").prices.input_usd_per_mtok == Decimal("5")

    with django_capture_on_commit_callbacks(execute=True):  # the repriced row's save tells the workers
        sync()

    assert routing_table().match("gpt-4o").prices.input_usd_per_mtok == Decimal("2.5")


def test_leaves_prices_an_admin_set_and_says_so(hosted):
    sync()
    ModelRoute.objects.filter(name="gpt-4o").update(input_usd_per_mtok=Decimal("3"), prices_from_table=False)

    out = sync()

    assert ModelRoute.objects.get(name="gpt-4o").input_usd_per_mtok == Decimal("3")
    assert "left gpt-4o: priced by an admin; sync would set input_usd_per_mtok 3 -> 2.5" in out


def test_syncs_only_prices_never_an_admins_upstream_model(hosted):
    sync()
    ModelRoute.objects.filter(name="gpt-4o").update(upstream_model="gpt-4o-2024-08-06", input_usd_per_mtok=1)

    sync()

    route = ModelRoute.objects.get(name="gpt-4o")
    assert (route.upstream_model, route.input_usd_per_mtok) == ("gpt-4o-2024-08-06", Decimal("2.5"))


def test_a_bad_price_table_stops_the_sync_before_any_change(hosted, monkeypatch, tmp_path):
    bad = tmp_path / "prices.toml"
    bad.write_text('[[route]]\nname = "x"\nprovider = "openai"\nmodality = "chat"\nprices = { input = 1 }\n')
    monkeypatch.setattr("providers.management.commands.sync_providers.default_routes", lambda: load_price_table(bad))

    with pytest.raises(CommandError, match=r"route 'x' \(entry #1\): .*needs both input and output"):
        sync()

    assert not Provider.objects.exists()


# --- the admin --------------------------------------------------------------------------------------


def change_form(route: ModelRoute, **changes) -> dict:
    data = {key: value for key, value in model_to_dict(route, exclude=["id", "fallbacks"]).items() if value is not None}
    data = {key: value for key, value in data.items() if value is not False} | changes
    data = {key: ("on" if value is True else value) for key, value in data.items()}
    management = {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0, "MIN_NUM_FORMS": 0, "MAX_NUM_FORMS": 1000}
    return data | {f"fallback_steps-{key}": value for key, value in management.items()}


@pytest.mark.parametrize(("edit", "from_table"), [({"input_usd_per_mtok": "3"}, False), ({"priority": 50}, True)])
def test_an_admin_price_edit_takes_the_route_off_the_table(hosted, client, staff_user, edit, from_table):
    sync()
    route = ModelRoute.objects.get(name="gpt-4o")
    client.force_login(staff_user)

    response = client.post(f"/admin/providers/modelroute/{route.pk}/change/", change_form(route, **edit))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ModelRoute.objects.get(pk=route.pk).prices_from_table is from_table


def test_an_admin_hands_prices_back_to_the_table_by_ticking_the_box(hosted, client, staff_user):
    sync()
    ModelRoute.objects.filter(name="gpt-4o").update(input_usd_per_mtok=Decimal("3"), prices_from_table=False)
    route = ModelRoute.objects.get(name="gpt-4o")
    client.force_login(staff_user)

    client.post(f"/admin/providers/modelroute/{route.pk}/change/", change_form(route, prices_from_table=True))
    sync()

    assert ModelRoute.objects.get(pk=route.pk).input_usd_per_mtok == Decimal("2.5")


# --- routes that existed before the flag ------------------------------------------------------------


def test_the_migration_marks_routes_still_at_a_shipped_price_and_no_others():
    migration = importlib.import_module("providers.migrations.0005_route_prices_from_table")
    provider = Provider.objects.create(name="openai", kind="openai", base_url="https://api.openai.com/v1")
    rows = {
        # created before cache prices existed, never edited
        "gpt-4o": {"input_usd_per_mtok": Decimal("2.5"), "output_usd_per_mtok": Decimal("10")},
        "gpt-4o-mini": {"input_usd_per_mtok": Decimal("0.2"), "output_usd_per_mtok": Decimal("0.6")},  # an admin's
        "gpt-*": {},
        "openai:*": {"input_usd_per_mtok": Decimal("1"), "output_usd_per_mtok": Decimal("2")},  # an admin's
        "my-model": {},  # not shipped
    }
    for name, prices in rows.items():
        ModelRoute.objects.create(name=name, provider=provider, **prices)

    migration.mark_table_priced_routes(apps, None)

    marked = set(ModelRoute.objects.filter(prices_from_table=True).values_list("name", flat=True))
    assert marked == {"gpt-4o", "gpt-*"}
