"""The shipped price table (providers/prices.toml) and the checks that keep a bad entry out of it."""

import datetime as dt
from decimal import Decimal

import pytest

from providers.price_table import PRICE_TABLE, PriceTableError, load_price_table

ROUTE = """
[[route]]
name = "gpt-test"
provider = "openai"
modality = "chat"
prices = { input = 1.25, cached_input = 0.125, output = 10 }
checked = 2026-12-02
verified = "provider"
source = "https://example.com/pricing"
"""


def load(tmp_path, text):
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return load_price_table(path)


def refused(tmp_path, text) -> str:
    with pytest.raises(PriceTableError) as caught:
        load(tmp_path, text)
    return str(caught.value)


# --- the shipped file ---------------------------------------------------------------------------


def test_the_shipped_table_loads_with_a_checked_date_and_source_for_every_price():
    routes = load_price_table()

    assert len({route.name for route in routes}) == len(routes)
    priced = [route for route in routes if route.prices]
    assert priced, "the table prices no route at all"
    for route in priced:
        assert isinstance(route.checked, dt.date) and route.verified and route.source, route.name


def test_the_shipped_table_prices_the_current_text_models_of_each_provider():
    routes = {route.name: route for route in load_price_table()}

    for name in (
        "gpt-5.1", "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
        "gpt-4o", "gpt-4o-mini", "o3", "o4-mini",
        "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4",
        "claude-3-5-haiku",
        "gemini-3-pro-preview", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash",
    ):  # fmt: skip
        prices = routes[name].prices
        assert prices["input_usd_per_mtok"] > 0 and prices["output_usd_per_mtok"] > 0, name


def test_shipped_anthropic_cache_prices_follow_its_multipliers():
    for route in load_price_table():
        if route.provider == "anthropic" and route.prices:
            base = route.prices["input_usd_per_mtok"]
            assert route.prices["cache_write_usd_per_mtok"] == base * Decimal("1.25"), route.name
            assert route.prices["cache_write_1h_usd_per_mtok"] == base * 2, route.name
            assert route.prices["cached_input_usd_per_mtok"] == base * Decimal("0.1"), route.name


def test_shipped_patterns_are_unpriced_so_unknown_models_are_refused():
    routes = {route.name: route for route in load_price_table()}

    for name in ("gpt-*", "openai:*", "claude*", "anthropic:*", "gemini*", "google:*", "replicate:*"):
        assert routes[name].prices == {}, name


def test_shipped_media_routes_keep_their_unit_prices():
    routes = {route.name: route for route in load_price_table()}

    assert routes["nano-banana"].prices == {"usd_per_image": Decimal("0.039")}
    assert routes["veo3"].prices == {"usd_per_video_second": Decimal("0.40")}
    assert routes["flux-schnell"].prices == {"usd_per_image": Decimal("0.003")}
    assert routes["veo3"].upstream_model == "veo-3.1-generate-preview"


def test_prices_are_read_as_exact_decimals(tmp_path):
    (route,) = load(tmp_path, ROUTE.replace("input = 1.25", "input = 0.1"))

    assert route.prices["input_usd_per_mtok"] == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert route.checked == dt.date(2026, 12, 2) and route.upstream_model == ""


def test_a_route_without_prices_needs_no_provenance(tmp_path):
    (route,) = load(tmp_path, '[[route]]\nname = "gpt-*"\nprovider = "openai"\nmodality = "chat"\n')

    assert route.prices == {} and route.checked is None and route.is_pattern


# --- what the loader refuses, naming the entry ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("source = ", "sauce = "), "unknown field(s) ['sauce']"),
        (("checked = 2026-12-02\n", ""), "no checked date"),
        (("checked = 2026-12-02", 'checked = "2026-12-02"'), "checked must be a date"),
        (("checked = 2026-12-02", "checked = 2026-12-02T10:00:00"), "checked must be a date"),
        (('verified = "provider"\n', ""), "no verified basis"),
        (('verified = "provider"', 'verified = "a friend"'), "verified 'a friend' is not one of"),
        (('source = "https://example.com/pricing"\n', ""), "no source"),
        (("input = 1.25", "input = -1"), "0 or more"),
        (("input = 1.25", 'input = "1.25"'), "must be a number"),
        (("input = 1.25", "input = true"), "must be a number"),
        (("input = 1.25", "input = 0.0000001"), "6 decimal places"),
        (("input = 1.25", "input = 1e9"), "does not fit"),
        (("input = 1.25", "input = nan"), "finite"),
        (("input = 1.25, ", ""), "needs both input and output"),
        (("output = 10", "output = 10, image = 0.04"), "do not apply to a chat route"),
        (('provider = "openai"', 'provider = "openia"'), "provider 'openia' is not one of"),
        (('modality = "chat"', 'modality = "audio"'), "modality 'audio' is not one of"),
        (('name = "gpt-test"', 'name = "gpt-*-*"'), "one '*'"),
        (('provider = "openai"\n', ""), "missing field(s) ['provider']"),
    ],
)
def test_a_bad_entry_is_refused_with_its_name_and_the_fault(tmp_path, change, message):
    old, new = change
    assert old in ROUTE

    error = refused(tmp_path, ROUTE.replace(old, new, 1))

    assert "entry #1" in error and message in error
    if "name" not in old:
        assert "route 'gpt-test'" in error


def test_a_duplicate_name_is_refused_naming_both_entries(tmp_path):
    error = refused(tmp_path, ROUTE + ROUTE)

    assert "route 'gpt-test' (entry #2): duplicate name (also entry #1)" in error


def test_an_entry_without_a_name_is_named_by_its_position(tmp_path):
    error = refused(tmp_path, ROUTE + '[[route]]\nprovider = "openai"\nmodality = "chat"\n')

    assert "entry #2: missing field(s) ['name']" in error


def test_a_file_that_is_not_toml_is_refused_with_its_path(tmp_path):
    error = refused(tmp_path, ROUTE + "[[route]\n")

    assert str(tmp_path / "prices.toml") in error


def test_an_unknown_top_level_key_is_refused(tmp_path):
    assert "unknown top-level key(s) ['routes']" in refused(tmp_path, ROUTE.replace("[[route]]", "[[routes]]"))


def test_the_default_path_is_the_shipped_file():
    assert PRICE_TABLE.name == "prices.toml" and PRICE_TABLE.parent.name == "providers"
