"""Moderation end to end: real HTTP to the live gateway, whose chat consumers call
gateway.moderation.moderate_chat after authentication and limits, before any provider.

Every test here needs that call wired into gateway/consumers.py (ChatConsumer._handle).
"""

from decimal import Decimal

import openai
import pytest

from billing.models import UsageRecord
from gateway.models import BlockedTerm, ModerationEvent
from gateway.moderation.hooks.blocklist import reset_blocklist
from gateway.moderation.hooks.openai_moderation import provider_snapshot
from providers.models import ModelRoute
from tests.helpers import openai_client, post

pytestmark = pytest.mark.django_db(transaction=True)

OPENAI_HOOKS = [
    "gateway.moderation.hooks.blocklist.BlocklistHook",
    "gateway.moderation.hooks.pii.PiiHook",
    "gateway.moderation.hooks.openai_moderation.OpenAIModerationHook",
]


@pytest.fixture(autouse=True)
def _fresh_moderation():
    reset_blocklist()
    provider_snapshot.reset()
    yield
    reset_blocklist()
    provider_snapshot.reset()


@pytest.fixture
def blocklist(gateway):
    BlockedTerm.objects.create(pattern="kill", category="violence")
    return gateway


def ask(gateway: str, key: str, text: str, model: str = "gpt-4o", path: str = "/v1/chat/complete", **extra):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return post(gateway, key, {"model": model, "messages": messages, **extra}, path=path)


def provider_calls(fakes: dict) -> dict[str, int]:
    return {name: len([r for r in fake.requests if "moderations" not in r.path]) for name, fake in fakes.items()}


def test_a_blocked_prompt_never_reaches_a_provider_and_is_recorded(blocklist, live_key, fake_providers):
    response = ask(blocklist, live_key, "how do I kill the neighbour's cat?")

    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "code": "content_policy_violation",
        "param": "messages.1.content",
        "category": "violence",
        "message": "The request was blocked by the content policy (category: violence).",
    }
    assert set(provider_calls(fake_providers).values()) == {0}  # no provider saw it
    event = ModerationEvent.objects.select_related("api_key", "user").get()
    assert event.request_id == response.headers["X-Request-Id"]
    assert (event.user.username, event.api_key.prefix, event.route) == ("live-user", live_key[:14], "gpt-4o")
    assert (event.hook, event.category, event.action, event.prompt) == ("blocklist", "violence", "blocked", "")


def test_a_blocked_request_is_a_zero_cost_blocked_ledger_row(blocklist, live_key, fake_providers):
    response = ask(blocklist, live_key, "kill")

    record = UsageRecord.objects.get(request_id=response.headers["X-Request-Id"])
    assert (record.status, record.cost_usd, record.error_code) == ("blocked", Decimal(0), "content_policy_violation")


def test_a_blocked_stream_is_refused_before_any_event(blocklist, live_key, fake_providers):
    response = ask(blocklist, live_key, "ＫＩＬＬ it", path="/v1/chat/completions", stream=True)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert provider_calls(fake_providers)["openai"] == 0


def test_the_openai_sdk_sees_a_bad_request_naming_the_policy(blocklist, live_key, fake_providers):
    client = openai_client(blocklist, live_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "k\u200bill them all"}]
        )
    assert caught.value.code == "content_policy_violation"
    assert caught.value.body["param"] == "messages.0.content"
    assert fake_providers["anthropic"].calls == 0


def test_pii_is_redacted_before_the_provider_sees_it(blocklist, live_key, fake_providers):
    response = ask(blocklist, live_key, "Reply to bob@example.com, card 4111 1111 1111 1111", model="claude-sonnet-4-5")

    assert response.status_code == 200, response.text
    sent = fake_providers["anthropic"].last_request.json
    assert sent["messages"][-1]["content"] == "Reply to [EMAIL], card [CARD]"
    event = ModerationEvent.objects.get()
    assert (event.action, event.hook, event.request_id) == ("redacted", "pii", response.headers["X-Request-Id"])


def test_a_route_with_moderation_off_passes_the_prompt_through(blocklist, live_key, fake_providers):
    route = ModelRoute.objects.get(name="gpt-4o")
    route.moderation_enabled = False
    route.save()  # the admin's way: the routing table reloads

    moderated = ask(blocklist, live_key, "kill the process", model="claude-sonnet-4-5")
    unmoderated = ask(blocklist, live_key, "kill the process")

    assert moderated.status_code == 400
    assert unmoderated.status_code == 200, unmoderated.text
    assert fake_providers["openai"].last_request.json["messages"][-1]["content"] == "kill the process"
    assert ModerationEvent.objects.get().route == "claude-sonnet-4-5"


def test_openai_moderation_blocks_what_it_flags(gateway, live_key, fake_providers, settings):
    settings.MODERATION_HOOKS = OPENAI_HOOKS
    fake_providers["openai"].flag_terms = {"murder"}

    response = ask(gateway, live_key, "plan a murder", model="claude-sonnet-4-5")

    error = response.json()["error"]
    assert response.status_code == 400 and (error["code"], error["category"]) == (
        "content_policy_violation",
        "violence",
    )
    assert [r.path for r in fake_providers["openai"].requests] == ["/v1/moderations"]
    assert fake_providers["openai"].requests[0].json["input"] == ["Be brief.", "plan a murder"]
    assert fake_providers["anthropic"].calls == 0
    assert ModerationEvent.objects.get().hook == "openai_moderation"


def test_openai_moderation_down_fails_closed(gateway, live_key, fake_providers, settings):
    settings.MODERATION_HOOKS = OPENAI_HOOKS
    fake_providers["openai"].fail(503, path="/moderations")

    response = ask(gateway, live_key, "hello", model="claude-sonnet-4-5")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "moderation_unavailable"
    assert fake_providers["anthropic"].calls == 0


def test_openai_moderation_down_lets_requests_through_when_failing_open(gateway, live_key, fake_providers, settings):
    settings.MODERATION_HOOKS = OPENAI_HOOKS
    settings.MODERATION_OPENAI_FAIL_OPEN = True
    fake_providers["openai"].fail(503, path="/moderations")

    response = ask(gateway, live_key, "hello", model="claude-sonnet-4-5")

    assert response.status_code == 200 and response.json()["provider"] == "anthropic"
    assert [r.path for r in fake_providers["openai"].requests] == ["/v1/moderations"]  # it was asked


def test_the_blocked_answer_is_recorded_for_the_requesting_key(blocklist, live_key, fake_providers, settings):
    settings.MODERATION_CHECK_RESPONSES = True
    fake_providers["openai"].reply("kill -9 it")

    response = ask(blocklist, live_key, "how do I stop a process?")

    assert response.status_code == 400
    assert "answer was withheld" in response.json()["error"]["message"]
    event = ModerationEvent.objects.get()
    assert (event.param, event.request_id, event.user.username) == (
        "answer",
        response.headers["X-Request-Id"],
        "live-user",
    )


def test_a_withheld_answer_is_still_billed_for_what_the_provider_produced(
    blocklist, live_key, fake_providers, settings
):
    from billing.models import UsageRecord

    settings.MODERATION_CHECK_RESPONSES = True
    fake_providers["openai"].reply("kill -9 it", input_tokens=1000, output_tokens=1000)

    assert ask(blocklist, live_key, "how do I stop a process?").status_code == 400

    [row] = UsageRecord.objects.all()
    assert (row.status, row.error_code, row.output_tokens) == ("blocked", "content_policy_violation", 1000)
    assert row.cost_usd > 0
