"""manage.py sync_providers: providers from the environment, routes and prices from the price table,
admin-edited prices left alone, and an OpenAI-compatible server configured like the others."""

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
from tests.fakes import FakeOpenAI
from tests.helpers import MESSAGES, post

pytestmark = pytest.mark.django_db

HOSTED = {
    "openai": {"api_key": "sk-openai", "base_url": "https://api.openai.example/v1/"},
    "anthropic": {"api_key": "sk-ant", "base_url": "https://api.anthropic.example"},
    "gemini": {"api_key": "", "base_url": "https://gemini.example"},  # no key: no provider
}
LOCAL = "http://127.0.0.1:11434/v1"


def sync() -> str:
    out = io.StringIO()
    call_command("sync_providers", stdout=out)
    return out.getvalue()


def compatible(**conf) -> dict:
    return {"api_key": "", "base_url": LOCAL, "models": [], "input_usd_per_mtok": "", "output_usd_per_mtok": ""} | conf


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
    provider = Provider.objects.create(name="openai", kind="openai", base_url="http://127.0.0.1:9/v1")
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


# --- an OpenAI-compatible server ------------------------------------------------------------------


def test_a_base_url_alone_creates_the_compatible_provider_with_no_key(settings):
    settings.PROVIDER_ENV = {"openai_compatible": compatible(models=["llama3.2", " qwen2.5 ", ""])}

    out = sync()

    provider = Provider.objects.get(name="openai_compatible")
    assert (provider.kind, provider.base_url, provider.api_key_encrypted) == ("openai_compatible", LOCAL, "")
    assert provider.config().api_key == ""
    routes = {route.name: route for route in ModelRoute.objects.filter(provider=provider)}
    assert set(routes) == {"llama3.2", "qwen2.5", "local:*"}
    assert all(r.modality == "chat" and r.input_usd_per_mtok is None and r.prices_from_table for r in routes.values())
    assert routes["local:*"].priority == 200
    assert "3 route(s) added" in out


def test_compatible_routes_take_the_prices_in_the_environment_zero_included(settings):
    settings.PROVIDER_ENV = {
        "openai_compatible": compatible(models=["llama3.2"], input_usd_per_mtok="0", output_usd_per_mtok="0")
    }

    sync()

    for name in ("llama3.2", "local:*"):
        route = ModelRoute.objects.get(name=name)
        assert (route.input_usd_per_mtok, route.output_usd_per_mtok) == (Decimal(0), Decimal(0)), name


def test_prices_set_in_the_environment_later_reach_the_compatible_routes(settings):
    settings.PROVIDER_ENV = {"openai_compatible": compatible(models=["llama3.2"])}
    sync()
    settings.PROVIDER_ENV = {
        "openai_compatible": compatible(models=["llama3.2"], input_usd_per_mtok="0.1", output_usd_per_mtok="0.2")
    }

    out = sync()

    assert ModelRoute.objects.get(name="llama3.2").output_usd_per_mtok == Decimal("0.2")
    assert "repriced llama3.2: input_usd_per_mtok unpriced -> 0.1, output_usd_per_mtok unpriced -> 0.2" in out


def test_a_key_in_the_environment_is_stored_and_an_admins_key_kept_without_one(settings):
    settings.PROVIDER_ENV = {"openai_compatible": compatible(api_key="vllm-secret")}
    sync()
    assert Provider.objects.get(name="openai_compatible").api_key == "vllm-secret"

    settings.PROVIDER_ENV = {"openai_compatible": compatible()}
    sync()

    assert Provider.objects.get(name="openai_compatible").api_key == "vllm-secret"


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"input_usd_per_mtok": "0.1"}, "Set both OPENAI_COMPATIBLE_INPUT_USD_PER_MTOK and"),
        ({"input_usd_per_mtok": "free", "output_usd_per_mtok": "0"}, "OPENAI_COMPATIBLE_INPUT_USD_PER_MTOK='free'"),
        ({"input_usd_per_mtok": "0", "output_usd_per_mtok": "-1"}, "OPENAI_COMPATIBLE_OUTPUT_USD_PER_MTOK='-1'"),
    ],
)
def test_a_bad_compatible_price_stops_the_sync_naming_the_variable(settings, prices, message):
    settings.PROVIDER_ENV = {"openai_compatible": compatible(models=["llama3.2"], **prices)}

    with pytest.raises(CommandError, match=message):
        sync()

    assert not Provider.objects.exists()


def test_without_a_base_url_the_models_list_creates_nothing(settings):
    settings.PROVIDER_ENV = {"openai_compatible": compatible(base_url="", models=["llama3.2"])}

    sync()

    assert not Provider.objects.exists() and not ModelRoute.objects.exists()


def test_a_compatible_model_named_like_a_shipped_route_leaves_the_shipped_route_alone(hosted):
    hosted.PROVIDER_ENV = {**HOSTED, "openai_compatible": compatible(models=["gpt-4o"])}

    out = sync()

    route = ModelRoute.objects.get(name="gpt-4o")
    assert (route.provider.name, route.input_usd_per_mtok) == ("openai", Decimal("2.5"))
    assert "left gpt-4o: on provider openai, not openai_compatible" in out


# --- end to end: the gateway talking to an OpenAI-compatible server ------------------------------------


@pytest.fixture
def local_server():
    """A FakeOpenAI standing in for vLLM or Ollama (the fake insists on a key, as vLLM --api-key does)."""
    server = FakeOpenAI.start(api_key="local-key")
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_chat_request_reaches_the_compatible_server_and_is_billed_at_its_env_price(
    gateway, live_key, settings, local_server
):
    settings.PROVIDER_ENV = {
        **settings.PROVIDER_ENV,
        "openai_compatible": compatible(
            api_key="local-key",
            base_url=local_server.base_url,
            models=["llama3.2"],
            input_usd_per_mtok="0.1",
            output_usd_per_mtok="0.2",
        ),
    }
    sync()
    local_server.reply("Hi from a local model", input_tokens=1000, output_tokens=500)

    response = post(gateway, live_key, {"model": "llama3.2", "messages": MESSAGES, "max_tokens": 50})

    body = response.json()
    assert response.status_code == 200, body
    assert (body["provider"], body["message"]["content"]) == ("openai_compatible", "Hi from a local model")
    assert Decimal(body["cost_usd"]) == (1000 * Decimal("0.1") + 500 * Decimal("0.2")) / 1_000_000
    sent = local_server.last_request
    assert sent.json["model"] == "llama3.2" and sent.json["max_tokens"] == 50  # vLLM and Ollama know max_tokens
    assert sent.headers["authorization"] == "Bearer local-key"


@pytest.mark.django_db(transaction=True)
def test_local_names_reach_the_server_and_unpriced_ones_are_refused(gateway, live_key, settings, local_server):
    settings.PROVIDER_ENV = {
        **settings.PROVIDER_ENV,
        "openai_compatible": compatible(api_key="local-key", base_url=local_server.base_url),
    }
    sync()

    refused = post(gateway, live_key, {"model": "local:qwen2.5", "messages": MESSAGES})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_priced"
    assert local_server.calls == 0

    route = ModelRoute.objects.get(name="local:*")
    route.input_usd_per_mtok = route.output_usd_per_mtok = Decimal(0)  # free, as an admin would set it
    route.save()
    local_server.reply("ok", input_tokens=3, output_tokens=1)
    answered = post(gateway, live_key, {"model": "local:qwen2.5", "messages": MESSAGES})

    assert answered.status_code == 200, answered.json()
    assert local_server.last_request.json["model"] == "qwen2.5"
    assert Decimal(answered.json()["cost_usd"]) == 0
