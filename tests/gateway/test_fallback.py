"""Fallback, circuit breaking and routing changes, end to end against the fake providers."""

import json
import socket

import httpx
import pytest

from providers.breaker import breaker
from providers.models import ModelRoute, Provider, RouteFallback
from tests.helpers import MESSAGES, post, sse_events

pytestmark = pytest.mark.django_db(transaction=True)


def ask(gateway, key, **extra) -> httpx.Response:
    return post(gateway, key, {"model": "gpt-4o", "messages": MESSAGES, **extra})


@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_falls_back_when_primary_returns_a_retryable_status(gateway, live_key, chain, status):
    chain["openai"].fail(status)

    response = ask(gateway, live_key)

    assert response.status_code == 200, response.text
    assert response.json()["provider"] == "anthropic"
    assert response.headers["X-Pulse-Provider"] == "anthropic"
    assert chain["openai"].calls == 1 and chain["anthropic"].calls == 1 and chain["gemini"].calls == 0


def test_falls_back_through_the_whole_chain_in_order(gateway, live_key, chain):
    chain["openai"].fail(503)
    chain["anthropic"].fail(529)

    response = ask(gateway, live_key)

    assert response.json()["provider"] == "gemini"
    assert [chain[p].calls for p in ("openai", "anthropic", "gemini")] == [1, 1, 1]


def test_falls_back_when_primary_times_out(gateway, live_key, chain):
    Provider.objects.filter(name="openai").update(read_timeout_s=0.2)
    from providers.routing import bump_routing_version

    bump_routing_version()
    chain["openai"].delay(1.0)

    response = ask(gateway, live_key)

    assert response.status_code == 200 and response.json()["provider"] == "anthropic"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_falls_back_when_primary_is_unreachable(gateway, live_key, chain):
    provider = Provider.objects.get(name="openai")
    provider.base_url = f"http://127.0.0.1:{closed_port()}/v1"
    provider.save()  # the admin's way: the save signal reaches the routing table

    response = ask(gateway, live_key)

    assert response.status_code == 200 and response.json()["provider"] == "anthropic"


def test_request_fallbacks_come_after_the_routes_own_chain(gateway, live_key, fake_providers):
    fake_providers["openai"].fail(503)

    response = ask(gateway, live_key, fallbacks=["gemini-2.5-flash"])

    assert response.json()["provider"] == "gemini"
    assert fake_providers["anthropic"].calls == 0


def test_client_error_is_returned_without_trying_others(gateway, live_key, chain):
    chain["openai"].fail(400)

    response = ask(gateway, live_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_invalid_request"
    assert chain["anthropic"].calls == 0 and chain["gemini"].calls == 0


def test_content_policy_refusal_is_400_and_not_retried(gateway, live_key, chain):
    chain["openai"].reply("", finish_reason="content_filter")

    response = ask(gateway, live_key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert chain["anthropic"].calls == 0


@pytest.mark.parametrize("status, expected", [(503, 503), (500, 502)])
def test_every_candidate_failing_lists_what_was_tried(gateway, live_key, chain, status, expected):
    for fake in chain.values():
        fake.fail(status)

    response = ask(gateway, live_key)

    error = response.json()["error"]
    assert response.status_code == expected
    assert [a["provider"] for a in error["attempts"]] == ["openai", "anthropic", "gemini"]
    assert all(a["status"] == status for a in error["attempts"])


def test_every_candidate_timing_out_is_504(gateway, live_key, fake_providers):
    Provider.objects.filter(name="openai").update(read_timeout_s=0.2)
    from providers.routing import bump_routing_version

    bump_routing_version()
    fake_providers["openai"].delay(1.0)

    response = ask(gateway, live_key)

    assert response.status_code == 504
    assert response.json()["error"]["attempts"][0]["code"] == "upstream_timeout"


def test_failing_provider_is_skipped_during_its_cooldown_then_tried_again(gateway, live_key, chain, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    chain["openai"].fail(503, times=breaker.threshold)
    for _ in range(breaker.threshold):
        assert ask(gateway, live_key).json()["provider"] == "anthropic"
    assert chain["openai"].calls == breaker.threshold

    response = ask(gateway, live_key)  # circuit open: openai is not even called
    assert response.json()["provider"] == "anthropic"
    assert chain["openai"].calls == breaker.threshold

    now[0] += breaker.cooldown_s + 1
    assert ask(gateway, live_key).json()["provider"] == "openai"


def test_stream_falls_back_before_the_first_byte(gateway, live_key, chain):
    chain["openai"].fail(503)

    response = ask(gateway, live_key, stream=True)

    assert response.headers["X-Pulse-Provider"] == "anthropic"
    assert sse_events(response)[-1][0] == "done"


def test_stream_cut_midway_ends_with_an_error_event(gateway, live_key, chain):
    chain["openai"].reply("a b c d e f")
    chain["openai"].cut_stream(after_chunks=2)

    response = ask(gateway, live_key, stream=True)

    events = sse_events(response)
    deltas = [json.loads(data)["delta"] for event, data in events if event == "delta"]
    assert deltas and "".join(deltas).strip() == "a b"
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["error"]["code"] == "stream_interrupted"
    assert chain["anthropic"].calls == 0  # bytes were sent: no silent switch of provider


def test_disabling_a_provider_takes_effect_without_restart(gateway, live_key, chain, client, django_user_model):
    assert ask(gateway, live_key).json()["provider"] == "openai"
    admin = django_user_model.objects.create_superuser("ops", password="pw-ops-123456")
    client.force_login(admin)
    client.post(
        "/admin/providers/provider/",
        {"action": "disable_providers", "_selected_action": [Provider.objects.get(name="openai").pk]},
    )

    assert ask(gateway, live_key).json()["provider"] == "anthropic"


def test_disabled_route_is_not_found_even_when_a_pattern_matches(gateway, live_key, fake_providers):
    route = ModelRoute.objects.get(name="gpt-4o")
    route.enabled = False
    route.save()

    response = ask(gateway, live_key)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_pattern_routes_are_refused_until_an_admin_prices_them(gateway, live_key, fake_providers):
    response = post(gateway, live_key, {"model": "openai:gpt-9-experimental", "messages": MESSAGES})

    assert response.status_code == 403
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("model_not_priced", "model")
    assert fake_providers["openai"].calls == 0


def test_an_unpriced_fallback_is_skipped(gateway, live_key, fake_providers):
    RouteFallback.objects.create(
        route=ModelRoute.objects.get(name="gpt-4o"),
        fallback=ModelRoute.objects.create(name="free-for-all", provider_id=Provider.objects.get(name="anthropic").pk),
    )
    fake_providers["openai"].fail(503)

    response = ask(gateway, live_key)

    assert response.status_code == 503 and fake_providers["anthropic"].calls == 0


def test_pattern_routes_pass_the_requested_name_upstream(gateway, live_key, fake_providers):
    route = ModelRoute.objects.get(name="openai:*")
    route.input_usd_per_mtok, route.output_usd_per_mtok = 1, 2
    route.save()

    response = post(gateway, live_key, {"model": "openai:gpt-9-experimental", "messages": MESSAGES})

    assert response.status_code == 200
    assert fake_providers["openai"].last_request.json["model"] == "gpt-9-experimental"
    assert response.headers["X-Pulse-Model"] == "gpt-9-experimental"
