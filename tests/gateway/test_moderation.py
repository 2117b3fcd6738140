"""Moderation: the built-in hooks, the pipeline behind moderate_prompt / moderate_texts, hook loading,
and the request pipeline's two pieces (fallback on a provider's refusal, the post-response check).

None of these needs moderation wired into the chat consumers; tests/gateway/test_moderation_e2e.py does.
"""

import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError

from billing.models import UsageRecord
from core import snapshot as moderation_snapshot
from core.shutdown import run_shutdown_hooks
from gateway.auth import authenticate_key
from gateway.chat_formats import ChatCall
from gateway.models import BlockedTerm, ModerationEvent
from gateway.moderation import pipeline as moderation_pipeline
from gateway.moderation.base import ALLOWED, ContentBlocked, ModerationHook, ModerationUnavailable, Verdict
from gateway.moderation.hooks.blocklist import (
    BlocklistHook,
    CompiledBlocklist,
    Term,
    blocklist_snapshot,
    reset_blocklist,
)
from gateway.moderation.hooks.openai_moderation import OpenAIModerationHook, provider_snapshot
from gateway.moderation.hooks.pii import PiiHook
from gateway.moderation.pipeline import moderate_prompt, moderate_texts
from gateway.moderation.registry import configure_hooks, load_hooks
from gateway.pipeline import ChatCompletion, RequestContext, run
from providers.clients.base import ChatMessage, ChatRequest, ProviderConfig
from providers.models import ModelRoute, Provider, RouteFallback
from providers.routing import Prices, Route
from tests.helpers import MESSAGES, ROOT, post, sse_events

BLOCKLIST = "gateway.moderation.hooks.blocklist.BlocklistHook"
PII = "gateway.moderation.hooks.pii.PiiHook"
OPENAI = "gateway.moderation.hooks.openai_moderation.OpenAIModerationHook"


@pytest.fixture(autouse=True)
def _fresh_moderation():
    reset_blocklist()
    provider_snapshot.reset()
    Recorder.calls.clear()
    yield
    reset_blocklist()
    provider_snapshot.reset()
    configure_hooks()  # back to MODERATION_HOOKS, whatever a test installed


def route(name: str = "gpt-4o", **flags) -> Route:
    provider = ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "sk-unused")
    return Route(name, provider, True, True, "", "chat", 100, 4096, Prices(), (), **flags)


def chat(*contents: str) -> ChatCompletion:
    roles = ["system"] + ["user"] * len(contents)
    messages = tuple(ChatMessage(role, text) for role, text in zip(roles, ("Be brief.", *contents), strict=False))
    return ChatCompletion(ChatCall("gpt-4o", ChatRequest(messages, max_tokens=20)))


def term(pattern: str, *, is_regex=False, whole_word=True, case_insensitive=True, category="violence", id=1) -> Term:
    return Term(id, pattern, is_regex, whole_word, case_insensitive, category)


def blocked_by(blocklist: CompiledBlocklist, text: str) -> str | None:
    found = blocklist.match(text)
    return found.pattern if found else None


# --- custom hooks, loaded by dotted path ------------------------------------------------
class ShoutHook(ModerationHook):
    name = "shout"

    async def check(self, text: str) -> Verdict:
        return Verdict.block("shouting", "all capitals") if text.isupper() else ALLOWED


class UpperRedactor:
    """Not a subclass: any object with an async check() is a hook."""

    async def check(self, text: str) -> Verdict:
        return Verdict.redact(text.upper(), "style", "made upper case")


class Recorder:
    calls: list[list[str]] = []

    async def check_many(self, texts):
        Recorder.calls.append(list(texts))
        return [ALLOWED] * len(texts)


class BrokenHook(ModerationHook):
    async def check(self, text: str) -> Verdict:
        raise RuntimeError("backend down")


class BrokenOpenHook(BrokenHook):
    fail_open = True


class NotAHook:
    def check(self, text):  # not async
        return ALLOWED


def hooks(settings, *names: str) -> None:
    """Install these hooks the operator's way: MODERATION_HOOKS (the setting_changed signal reloads them)."""
    settings.MODERATION_HOOKS = [f"tests.gateway.test_moderation.{name}" if "." not in name else name for name in names]


@pytest.fixture
async def own_session():
    """Each async test has its own event loop, hence its own pooled aiohttp session and database and
    Redis pools: close them, as a worker does at shutdown."""
    yield
    await run_shutdown_hooks()


# --- blocklist matching -------------------------------------------------------------------
def test_blocks_a_term_in_any_case():
    blocklist = CompiledBlocklist([term("kill")])
    assert [blocked_by(blocklist, t) for t in ("I will KILL it", "Kill", "nothing here")] == ["kill", "kill", None]


def test_whole_word_term_ignores_longer_words_but_substring_term_does_not():
    whole, substring = CompiledBlocklist([term("kill")]), CompiledBlocklist([term("kill", whole_word=False)])
    assert blocked_by(whole, "a skilled killer") is None
    assert blocked_by(whole, "kill-switch, kill_all") == "kill"
    assert blocked_by(substring, "a skilled worker") == "kill"


def test_case_sensitive_term_matches_only_its_own_case():
    blocklist = CompiledBlocklist([term("NSFW", case_insensitive=False)])
    assert blocked_by(blocklist, "this is NSFW") == "NSFW"
    assert blocked_by(blocklist, "this is nsfw") is None


@pytest.mark.parametrize(
    "text",
    [
        "ｋｉｌｌ them",  # full-width letters
        "KＩLL them",  # mixed widths and case
        "k\u200bill them",  # zero-width space inside the word
        "ki\u00adll them",  # soft hyphen
        "k\u200di\u2060l\ufeffl them",  # joiner, word joiner, BOM
        "k.i.l.l them",  # spelled out
        "k i l l them",
        "K - I - L - L them",
    ],
)
def test_evasions_of_a_whole_word_term_are_caught(text):
    assert blocked_by(CompiledBlocklist([term("kill")]), text) == "kill"


@pytest.mark.parametrize("text", ["k.ill", "ki ll", "skill.s", "s k i l l e d"])
def test_collapsing_spelled_out_letters_joins_nothing_else(text):
    assert blocked_by(CompiledBlocklist([term("kill")]), text) is None


def test_multi_word_term_matches_across_any_whitespace():
    blocklist = CompiledBlocklist([term("kill you")])
    assert blocked_by(blocklist, "I will kill\n   you") == "kill you"


def test_full_width_pattern_in_the_admin_matches_plain_text():
    assert blocked_by(CompiledBlocklist([term("ＢＯＭＢ")]), "a bomb") == "ＢＯＭＢ"


def test_regex_terms_honour_whole_word_and_case():
    blocklist = CompiledBlocklist(
        [
            term(r"bomb(s|ing)?", is_regex=True, id=1),
            term(r"[A-Z]{3}-\d{4}", is_regex=True, case_insensitive=False, id=2),
            term(r"de\S?ath", is_regex=True, whole_word=False, id=3),
        ]
    )
    assert blocked_by(blocklist, "the BOMBING of") == r"bomb(s|ing)?"
    assert blocked_by(blocklist, "a bombastic talk") is None
    assert blocked_by(blocklist, "code ABC-1234") == r"[A-Z]{3}-\d{4}"
    assert blocked_by(blocklist, "code abc-1234") is None
    assert blocked_by(blocklist, "DE-ATHS and ｄｅａｔｈ") == r"de\S?ath"  # upper case in the pattern: IGNORECASE


def test_verdict_names_the_terms_category_and_the_term():
    verdict = CompiledBlocklist([term("kill", category="violence", id=7)]).verdict("kill")
    assert (verdict.action, verdict.category) == ("block", "violence")
    assert "#7" in verdict.reason and "'kill'" in verdict.reason


@pytest.mark.parametrize(
    "pattern, is_regex", [("\u200b", False), ("   ", False), ("(unclosed", True), ("a(?i)b", True)]
)
def test_admin_rejects_unusable_patterns(pattern, is_regex):
    with pytest.raises(ValidationError) as caught:
        BlockedTerm(pattern=pattern, is_regex=is_regex).clean()
    assert "pattern" in caught.value.message_dict


# --- blocklist from the database -------------------------------------------------------------
@pytest.mark.django_db
def test_blocklist_is_read_once_then_served_from_memory(django_assert_num_queries):
    BlockedTerm.objects.create(pattern="kill")
    BlockedTerm.objects.create(pattern="ignored", enabled=False)
    blocklist = blocklist_snapshot.get()
    with django_assert_num_queries(0):
        assert blocklist_snapshot.get() is blocklist
    assert [t.pattern for t in blocklist.folded.terms] == ["kill"]


@pytest.mark.django_db(transaction=True)
async def test_an_admin_edit_reaches_the_hook_without_a_restart():
    hook = BlocklistHook()
    assert (await hook.check("kill")).action == "allow"
    row = await BlockedTerm.objects.acreate(pattern="kill", category="violence")  # the save signal bumps
    assert (await hook.check("kill")).category == "violence"
    row.enabled = False
    await row.asave()
    assert (await hook.check("kill")).action == "allow"


@pytest.mark.django_db(transaction=True)
def test_admin_disable_action_reaches_the_blocklist(client, staff_user):
    row = BlockedTerm.objects.create(pattern="kill")
    assert blocklist_snapshot.get().match("kill") is not None
    client.force_login(staff_user)
    client.post("/admin/gateway/blockedterm/", {"action": "disable_terms", "_selected_action": [row.pk]})
    assert blocklist_snapshot.get().match("kill") is None


@pytest.mark.django_db
def test_environment_terms_are_seeded_once_and_admin_edits_win(settings):
    settings.MODERATION_BLOCKLIST = ["kill", "bomb"]
    blocklist_snapshot.get()
    assert sorted(BlockedTerm.objects.values_list("pattern", flat=True)) == ["bomb", "kill"]
    BlockedTerm.objects.filter(pattern="kill").update(category="violence")
    BlockedTerm.objects.filter(pattern="bomb").update(enabled=False)

    reset_blocklist()  # a restarted worker seeds again
    blocklist = blocklist_snapshot.get()

    assert BlockedTerm.objects.count() == 2
    assert BlockedTerm.objects.get(pattern="kill").category == "violence"
    assert blocklist.match("bomb") is None and blocklist.match("kill").category == "violence"


@pytest.mark.django_db
def test_the_admin_refuses_a_broken_regex(client, staff_user):
    client.force_login(staff_user)
    response = client.post(
        "/admin/gateway/blockedterm/add/",
        {"pattern": "(unclosed", "is_regex": "on", "category": "custom", "enabled": "on"},
    )
    assert response.status_code == 200 and "Not a valid regular expression" in response.content.decode()
    assert not BlockedTerm.objects.exists()


@pytest.mark.django_db
def test_moderation_events_are_listed_read_only_with_their_reason(client, staff_user, api_key):
    ModerationEvent.objects.create(
        request_id="req-9",
        user=api_key[0].user,
        api_key=api_key[0],
        route="gpt-4o",
        hook="blocklist",
        category="violence",
        reason="matched blocked term #3 'kill'",
        action="blocked",
        param="messages.1.content",
    )
    client.force_login(staff_user)

    listing = client.get("/admin/gateway/moderationevent/", {"category": "violence", "hook": "blocklist"})

    html = listing.content.decode()
    assert listing.status_code == 200
    assert "matched blocked term #3" in html and api_key[0].prefix in html and "req-9" in html
    assert client.get("/admin/gateway/moderationevent/add/").status_code == 403
    event = ModerationEvent.objects.get()
    client.post(f"/admin/gateway/moderationevent/{event.pk}/change/", {"category": "other"})
    event.refresh_from_db()
    assert event.category == "violence"


# --- PII ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, redacted",
    [
        ("write to alice.smith+tag@example.co.uk today", "write to [EMAIL] today"),
        ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
        ("amex 378282246310005", "amex [CARD]"),
        ("call +1 415-555-2671 or (415) 555-2671", "call [PHONE] or [PHONE]"),
        ("uk: 020 7946 0958, intl +442079460958", "uk: [PHONE], intl [PHONE]"),
        ("me@x.io, 415.555.2671", "[EMAIL], [PHONE]"),
    ],
)
async def test_pii_is_redacted(text, redacted):
    verdict = await PiiHook().check(text)
    assert (verdict.action, verdict.text, verdict.category) == ("redact", redacted, "pii")


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "at 1700000000000 ms",  # a timestamp, not a card
        "scores 10 20 30 40 50",
        "on 2024-01-15 1030",
        "host 192.168.100.200",
        "order 123456789012",
        "pi is 3.14159 2.71828",
        "user@localhost",
    ],
)
async def test_ordinary_numbers_and_addresses_are_left_alone(text):
    assert await PiiHook().check(text) == ALLOWED


async def test_pii_blocks_instead_when_configured(settings):
    settings.MODERATION_PII_ACTION = "block"
    verdict = await PiiHook().check("mail me at bob@example.com")
    assert (verdict.action, verdict.category, verdict.reason) == ("block", "pii", "contains an e-mail address")


async def test_pii_kinds_are_chosen_in_settings(settings):
    settings.MODERATION_PII_KINDS = ["email"]
    verdict = await PiiHook().check("bob@example.com, +1 415-555-2671")
    assert verdict.text == "[EMAIL], +1 415-555-2671"


@pytest.mark.parametrize("setting, value", [("MODERATION_PII_ACTION", "mask"), ("MODERATION_PII_KINDS", ["ssn"])])
def test_pii_settings_are_checked_at_start_up(settings, setting, value):
    with pytest.raises(ImproperlyConfigured, match=setting):
        setattr(settings, setting, value)  # reloading the hooks builds a PiiHook


# --- OpenAI moderation ---------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def openai_mod(fakes, transactional_db, settings, own_session):
    """The fake OpenAI as the provider moderation calls; only the OpenAI hook installed."""
    fake = fakes["openai"]
    fake.reset()
    Provider.objects.create(name="openai", kind="openai", base_url=fake.base_url, api_key=fake.api_key)
    hooks(settings, OPENAI)
    return fake


async def test_openai_hook_sends_every_text_in_one_call_and_blocks_what_is_flagged(openai_mod):
    verdicts = await OpenAIModerationHook().check_many(["hello there", "", "I will kill it"])

    assert [v.action for v in verdicts] == ["allow", "allow", "block"]
    assert verdicts[2].category == "violence" and "flagged by the API" in verdicts[2].reason
    [sent] = openai_mod.requests
    assert sent.path == "/v1/moderations"
    assert sent.json == {"input": ["hello there", "I will kill it"], "model": "omni-moderation-latest"}
    assert sent.headers["authorization"] == f"Bearer {openai_mod.api_key}"


async def test_texts_that_are_all_blank_need_no_call(openai_mod):
    assert await OpenAIModerationHook().check_many(["", "  "]) == [ALLOWED, ALLOWED]
    assert openai_mod.calls == 0


async def test_a_threshold_can_loosen_or_tighten_a_category(openai_mod, settings):
    settings.MODERATION_OPENAI_THRESHOLDS = {"violence": "0.99", "hate": "0.00005"}
    calm, loose = await OpenAIModerationHook().check_many(["hello", "kill"])
    assert (calm.action, calm.category) == ("block", "hate")  # score 0.0001 >= 0.00005
    assert "threshold 5e-05" in calm.reason
    assert loose.action == "block" and loose.category == "hate"  # violence 0.97 < 0.99: not violence

    settings.MODERATION_OPENAI_THRESHOLDS = {"violence": "0.99"}
    assert await OpenAIModerationHook().check("kill") == ALLOWED


def test_thresholds_must_be_scores(settings):
    with pytest.raises(ImproperlyConfigured, match="MODERATION_OPENAI_THRESHOLDS"):
        settings.MODERATION_OPENAI_THRESHOLDS = {"violence": "high"}
        OpenAIModerationHook()


async def test_moderation_api_down_fails_closed_with_503(openai_mod):
    openai_mod.fail(503, path="/moderations")
    with pytest.raises(ModerationUnavailable) as caught:
        await moderate_texts(["hello"], route=route(), principal=None, request_id="r1", params=["prompt"])
    assert (caught.value.status, caught.value.code) == (503, "moderation_unavailable")
    assert caught.value.body()["error"]["type"] == "api_error"


async def test_moderation_api_down_lets_requests_through_when_failing_open(openai_mod, settings):
    settings.MODERATION_OPENAI_FAIL_OPEN = True
    openai_mod.fail(503, path="/moderations")
    assert await moderate_texts(["kill"], route=route(), principal=None, request_id="r1", params=["p"]) == ["kill"]


async def test_unreachable_moderation_api_fails_closed(openai_mod):
    await Provider.objects.filter(name="openai").aupdate(base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ModerationUnavailable):
        await moderate_texts(["hello"], route=route(), principal=None, request_id="r1", params=["prompt"])


async def test_slow_moderation_api_times_out_quickly(openai_mod, settings):
    settings.MODERATION_OPENAI_TIMEOUT_S = 0.2
    openai_mod.delay(2.0, path="/moderations")
    with pytest.raises(ModerationUnavailable):
        await moderate_texts(["hello"], route=route(), principal=None, request_id="r1", params=["prompt"])


async def test_no_enabled_openai_provider_fails_closed(openai_mod):
    await Provider.objects.filter(name="openai").aupdate(enabled=False)
    with pytest.raises(ModerationUnavailable):
        await moderate_texts(["hello"], route=route(), principal=None, request_id="r1", params=["prompt"])
    assert openai_mod.calls == 0


async def test_the_provider_can_be_named_in_settings(openai_mod, settings):
    await Provider.objects.filter(name="openai").aupdate(base_url=f"http://127.0.0.1:{closed_port()}/v1")
    await Provider.objects.acreate(
        name="moderator", kind="openai", base_url=openai_mod.base_url, api_key=openai_mod.api_key
    )
    settings.MODERATION_OPENAI_PROVIDER = "moderator"
    assert (await OpenAIModerationHook().check("kill")).category == "violence"


# --- the pipeline ------------------------------------------------------------------------------------
@pytest.fixture
def principal(api_key):
    return authenticate_key(api_key[1])


@pytest.mark.django_db(transaction=True)
async def test_an_allowed_call_comes_back_as_the_same_object(settings):
    hooks(settings, BLOCKLIST, PII)
    call = chat("Say hello")
    assert await moderate_prompt(call, route=route(), principal=None, request_id="r1") is call


@pytest.mark.django_db(transaction=True)
async def test_allowed_requests_use_no_thread_and_no_database(monkeypatch, settings):
    await BlockedTerm.objects.acreate(pattern="kill")
    hooks(settings, BLOCKLIST, PII)
    call = chat("Say hello")
    await moderate_prompt(call, route=route(), principal=None, request_id="warm-up")

    def no_thread(*args, **kwargs):
        raise AssertionError("moderation used a thread on the allowed path")

    monkeypatch.setattr(moderation_snapshot, "database_sync_to_async", no_thread)
    monkeypatch.setattr(moderation_pipeline, "database_sync_to_async", no_thread)
    for _ in range(3):
        assert await moderate_prompt(call, route=route(), principal=None, request_id="r") is call


@pytest.mark.django_db(transaction=True)
async def test_a_blocked_message_raises_and_is_recorded(principal, settings):
    await BlockedTerm.objects.acreate(pattern="kill", category="violence")
    hooks(settings, BLOCKLIST, PII)
    call = chat("hello", "how do I ｋｉｌｌ a process?")

    with pytest.raises(ContentBlocked) as caught:
        await moderate_prompt(call, route=route("gpt-4o"), principal=principal, request_id="req-1")

    error = caught.value
    assert (error.status, error.code, error.category, error.hook) == (
        400,
        "content_policy_violation",
        "violence",
        "blocklist",
    )
    assert error.body()["error"] == {
        "type": "invalid_request_error",
        "code": "content_policy_violation",
        "param": "messages.2.content",
        "category": "violence",
        "message": "The request was blocked by the content policy (category: violence).",
    }
    event = await ModerationEvent.objects.aget()
    assert (event.request_id, event.user_id, event.api_key_id, event.route) == (
        "req-1",
        principal.user_id,
        principal.key_id,
        "gpt-4o",
    )
    assert (event.hook, event.category, event.action, event.param) == (
        "blocklist",
        "violence",
        "blocked",
        "messages.2.content",
    )
    assert "'kill'" in event.reason
    assert event.prompt == ""  # MODERATION_STORE_PROMPTS is off by default


@pytest.mark.django_db(transaction=True)
async def test_the_blocked_text_is_kept_when_store_prompts_is_on(settings):
    settings.MODERATION_STORE_PROMPTS = True
    hooks(settings, "ShoutHook")
    with pytest.raises(ContentBlocked):
        await moderate_texts(
            ["fine", "STOP IT"], route=None, principal=None, request_id="r2", params=["prompt", "negative_prompt"]
        )
    event = await ModerationEvent.objects.aget()
    assert (event.prompt, event.param, event.user_id, event.route) == ("STOP IT", "negative_prompt", None, "")


@pytest.mark.django_db(transaction=True)
async def test_redaction_changes_only_the_message_contents_and_is_recorded(principal, settings):
    settings.MODERATION_STORE_PROMPTS = True
    hooks(settings, BLOCKLIST, PII)
    call = replace(chat("Say hello", "mail bob@example.com").chat, fallbacks=("claude-sonnet-4-5",), stream=True)

    moderated = (
        await moderate_prompt(ChatCompletion(call), route=route(), principal=principal, request_id="req-3")
    ).chat

    assert [m.content for m in moderated.request.messages] == ["Be brief.", "Say hello", "mail [EMAIL]"]
    assert moderated.request.messages[1] is call.request.messages[1]
    assert replace(moderated, request=call.request) == call  # nothing else changed
    event = await ModerationEvent.objects.aget()
    assert (event.action, event.hook, event.category, event.param) == ("redacted", "pii", "pii", "messages.2.content")
    assert event.prompt == "mail [EMAIL]"  # never the address itself


async def test_a_route_with_moderation_off_runs_no_hook(settings):
    hooks(settings, "Recorder", "ShoutHook")
    call = chat("STOP IT")
    assert await moderate_prompt(call, route=route(moderation_enabled=False), principal=None, request_id="r") is call
    assert await moderate_texts(
        ["STOP"], route=route(moderation_enabled=False), principal=None, request_id="r", params=["prompt"]
    ) == ["STOP"]
    assert Recorder.calls == []


@pytest.mark.django_db(transaction=True)
async def test_hooks_run_in_order_each_seeing_the_previous_redactions(settings):
    hooks(settings, "Recorder", "UpperRedactor", "Recorder", "ShoutHook")
    with pytest.raises(ContentBlocked) as caught:
        await moderate_texts(["quiet please"], route=None, principal=None, request_id="r", params=["prompt"])
    assert Recorder.calls == [["quiet please"], ["QUIET PLEASE"]]
    assert caught.value.hook == "shout"
    actions = [action async for action in ModerationEvent.objects.values_list("action", flat=True)]
    assert sorted(actions) == ["blocked", "redacted"]


async def test_a_hook_that_cannot_decide_fails_closed_unless_it_fails_open(settings):
    hooks(settings, "BrokenHook")
    with pytest.raises(ModerationUnavailable):
        await moderate_texts(["hi"], route=None, principal=None, request_id="r", params=["prompt"])
    hooks(settings, "BrokenOpenHook", "Recorder")
    assert await moderate_texts(["hi"], route=None, principal=None, request_id="r", params=["prompt"]) == ["hi"]
    assert Recorder.calls == [["hi"]]


async def test_custom_hook_is_loaded_from_settings(settings):
    settings.MODERATION_HOOKS = ["tests.gateway.test_moderation.ShoutHook"]  # setting_changed reloads the hooks
    with pytest.raises(ContentBlocked) as caught:
        await moderate_prompt(chat("HELLO"), route=route(), principal=None, request_id="r")
    assert (caught.value.hook, caught.value.category) == ("shout", "shouting")


@pytest.mark.parametrize(
    "path, message",
    [
        ("no.such.Hook", "cannot import 'no.such.Hook'"),
        ("tests.gateway.test_moderation.Missing", "cannot import 'tests.gateway.test_moderation.Missing'"),
        ("tests.gateway.test_moderation.NotAHook", "'tests.gateway.test_moderation.NotAHook' is not a moderation hook"),
    ],
)
def test_a_bad_hook_path_is_refused_naming_it(path, message):
    with pytest.raises(ImproperlyConfigured, match="MODERATION_HOOKS") as caught:
        load_hooks([BLOCKLIST, path])
    assert message in str(caught.value)


def test_a_bad_hook_path_stops_django_start_up():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "pulse.settings", "MODERATION_HOOKS": f"{BLOCKLIST},no.such.Hook"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: MODERATION_HOOKS: cannot import 'no.such.Hook'" in result.stderr


def test_default_hooks_are_the_blocklist_then_pii():
    assert [hook.name for hook in configure_hooks()] == ["blocklist", "pii"]


# --- chat_pipeline: refusals and the post-response check ---------------------------------------------
def fall_back_on_refusal(*names: str) -> None:
    for name in names:
        row = ModelRoute.objects.get(name=name)
        row.fallback_on_refusal = True
        row.save()  # the admin's way: the save signal reaches the routing table


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_falls_back_when_the_route_says_so(gateway, live_key, chain, stream):
    fall_back_on_refusal("gpt-4o")
    chain["openai"].reply("", finish_reason="content_filter")
    chain["anthropic"].reply("Here you go")

    response = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES, "stream": stream})

    assert response.status_code == 200, response.text
    assert response.headers["X-Pulse-Provider"] == "anthropic"
    assert chain["openai"].calls == 1 and chain["anthropic"].calls == 1
    if stream:
        assert sse_events(response)[-1][0] == "done"


def test_a_gemini_blocked_prompt_falls_back_when_the_route_says_so(gateway, live_key, fake_providers):
    primary = ModelRoute.objects.get(name="gemini-2.5-flash")
    RouteFallback.objects.create(route=primary, fallback=ModelRoute.objects.get(name="claude-sonnet-4-5"))
    fall_back_on_refusal("gemini-2.5-flash")
    fake_providers["gemini"].block_prompt("PROHIBITED_CONTENT")

    response = post(gateway, live_key, {"model": "gemini-2.5-flash", "messages": MESSAGES})

    assert response.status_code == 200 and response.json()["provider"] == "anthropic"


def test_every_candidate_refusing_is_still_a_content_policy_violation(gateway, live_key, chain):
    fall_back_on_refusal("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash")
    chain["openai"].reply("", finish_reason="content_filter")
    chain["anthropic"].reply("", finish_reason="refusal")
    chain["gemini"].reply("", finish_reason="SAFETY")

    response = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert [chain[p].calls for p in ("openai", "anthropic", "gemini")] == [1, 1, 1]


def test_a_refusal_on_a_route_without_the_flag_ends_the_chain(gateway, live_key, chain):
    fall_back_on_refusal("gpt-4o")  # the primary falls back; claude's own route does not
    chain["openai"].reply("", finish_reason="content_filter")
    chain["anthropic"].reply("", finish_reason="refusal")

    response = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})

    assert response.status_code == 400 and "anthropic" in response.json()["error"]["message"]
    assert chain["gemini"].calls == 0


async def answer_of(operation: ChatCompletion, principal) -> str:
    answer = await run(RequestContext(principal, "req-answer", "/v1/chat/complete"), operation)
    return answer.result.content


async def test_answers_are_not_moderated_by_default(fake_providers, principal, own_session):
    await BlockedTerm.objects.acreate(pattern="kill")
    fake_providers["openai"].reply("kill the process")
    assert await answer_of(chat("hello"), principal) == "kill the process"


async def test_the_post_response_check_withholds_a_blocked_answer(fake_providers, settings, principal, own_session):
    settings.MODERATION_CHECK_RESPONSES = True
    await BlockedTerm.objects.acreate(pattern="kill", category="violence")
    fake_providers["openai"].reply("kill the process")

    with pytest.raises(ContentBlocked) as caught:
        await answer_of(chat("hello"), principal)

    assert caught.value.param is None and "answer was withheld" in caught.value.message
    # Withheld, but the provider produced (and charged) it: billed, as blocked.
    row = await UsageRecord.objects.aget(request_id="req-answer")
    assert (row.status, row.error_code, row.output_tokens) == ("blocked", "content_policy_violation", 3)
    assert row.cost_usd > 0
    event = await ModerationEvent.objects.aget()
    assert (event.param, event.request_id, event.user_id, event.route) == (
        "answer",
        "req-answer",
        principal.user_id,
        "gpt-4o",
    )


async def test_the_post_response_check_redacts_an_answer(fake_providers, settings, principal, own_session):
    settings.MODERATION_CHECK_RESPONSES = True
    fake_providers["openai"].reply("write to bob@example.com")
    assert await answer_of(chat("hello"), principal) == "write to [EMAIL]"
