"""The routing table: matching, candidate order, and how edits reach every worker."""

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.cache import cache

from core import snapshot
from providers import routing
from providers.breaker import CircuitBreaker
from providers.clients.base import ProviderConfig
from providers.models import ModelRoute, Provider, RouteFallback
from providers.routing import Prices, Route, RoutingTable


def route(
    name,
    provider="openai",
    upstream="",
    priority=100,
    fallbacks=(),
    enabled=True,
    provider_enabled=True,
    modality="chat",
):
    config = ProviderConfig(provider, provider, f"http://{provider}", "key")
    return Route(
        name, config, provider_enabled, enabled, upstream, modality, priority, 1000, Prices(), tuple(fallbacks)
    )


def test_exact_names_win_over_patterns_and_patterns_go_by_priority_then_specificity():
    table = RoutingTable(
        [
            route("gpt-*", priority=200),
            route("gpt-4o", "azure"),
            route("gpt-4*", "vllm"),
            route("*", "catchall", priority=900),
        ]
    )

    assert table.match("gpt-4o").provider.name == "azure"
    assert table.match("gpt-4.1").provider.name == "vllm"
    assert table.match("gpt-5").provider.name == "openai"
    assert table.match("llama").provider.name == "catchall"


def test_namespace_prefix_is_stripped_for_the_upstream_name():
    table = RoutingTable([route("openai:*"), route("claude*", "anthropic")])
    assert table.candidates("openai:gpt-4o")[0].upstream_model == "gpt-4o"
    assert table.candidates("claude-opus-4-5")[0].upstream_model == "claude-opus-4-5"


def test_candidates_follow_the_chain_then_request_fallbacks_without_repeats_or_disabled():
    table = RoutingTable(
        [
            route("a", "p1", "m-a", fallbacks=["b", "c"]),
            route("b", "p2", "m-b"),
            route("c", "p3", "m-c", provider_enabled=False),
            route("d", "p4", "m-d"),
            route("image", "p5", modality="image"),
        ]
    )
    chosen = table.candidates("a", ["b", "d", "image"])
    assert [(c.provider.name, c.upstream_model) for c in chosen] == [("p1", "m-a"), ("p2", "m-b"), ("p4", "m-d")]


@pytest.mark.django_db
def test_a_route_edit_reaches_a_worker_after_its_local_interval(
    monkeypatch, settings, django_capture_on_commit_callbacks
):
    provider = Provider.objects.create(name="openai", kind="openai", base_url="http://x/v1")
    ModelRoute.objects.create(name="gpt-4o", provider=provider, input_usd_per_mtok=Decimal("2.5"))
    clock = [1000.0]
    monkeypatch.setattr(snapshot, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    assert routing.routing_table().match("gpt-4o").prices.input_usd_per_mtok == Decimal("2.5")

    # Another process edits the price: it bumps the shared version, not this worker's memory.
    with django_capture_on_commit_callbacks(execute=True):
        ModelRoute.objects.filter(name="gpt-4o").update(input_usd_per_mtok=Decimal("3"))
    cache.set(routing.VERSION_KEY, "edited-elsewhere", None)
    assert routing.routing_table().match("gpt-4o").prices.input_usd_per_mtok == Decimal("2.5")

    clock[0] += settings.PULSE_LOCAL_CACHE_SECONDS + 0.01
    assert routing.routing_table().match("gpt-4o").prices.input_usd_per_mtok == Decimal("3")


@pytest.mark.django_db
def test_normal_requests_read_no_database_row_for_routing(django_assert_num_queries, monkeypatch):
    provider = Provider.objects.create(name="openai", kind="openai", base_url="http://x/v1")
    ModelRoute.objects.create(name="gpt-4o", provider=provider)
    clock = [1000.0]
    monkeypatch.setattr(snapshot, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    routing.routing_table()
    clock[0] += 3600  # long after the interval: the version is checked in the cache, the table is not reloaded
    with django_assert_num_queries(0):
        assert routing.routing_table().match("gpt-4o")


@pytest.mark.django_db
def test_fallback_admin_validation_refuses_patterns_and_self():
    provider = Provider.objects.create(name="openai", kind="openai", base_url="http://x/v1")
    exact = ModelRoute.objects.create(name="gpt-4o", provider=provider)
    pattern = ModelRoute.objects.create(name="gpt-*", provider=provider)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        RouteFallback(route=exact, fallback=pattern).clean()
    with pytest.raises(ValidationError):
        RouteFallback(route=exact, fallback=exact).clean()


async def test_circuit_state_is_shared_between_workers_through_redis(settings, redis_url):
    settings.REDIS_URL = redis_url
    settings.PULSE_LOCAL_CACHE_SECONDS = 0
    first, second = CircuitBreaker(threshold=2, cooldown_s=30), CircuitBreaker(threshold=2, cooldown_s=30)
    from core.redis import shared_redis

    await first.record_failure("flaky")
    await second.record_failure("flaky")  # two workers, one failure each: the shared count opens it

    await first.refresh(["flaky"])
    assert first.is_open("flaky") and second.is_open("flaky")
    await second.record_success("flaky")
    third = CircuitBreaker(threshold=2, cooldown_s=30)
    await third.refresh(["flaky"])
    assert not third.is_open("flaky")
    await shared_redis().aclose()


async def test_circuit_opens_in_process_without_redis(settings):
    settings.REDIS_URL = ""
    breaker = CircuitBreaker(threshold=2, cooldown_s=30)
    await breaker.record_failure("flaky")
    assert not breaker.is_open("flaky")
    await breaker.record_failure("flaky")
    assert breaker.is_open("flaky")
