"""Moderation hot-path benchmark: microseconds per moderate_prompt call, allow case.

    .venv/bin/python bench/moderation_bench.py [--calls 20000] [--terms 200] [--regexes 5]

Times moderate_prompt on a four-message chat (system, user, assistant, user; about 130
words), one call at a time on a uvloop event loop as the chat consumer runs it:
  1. a route with moderation off (the floor);
  2. each default hook alone, then the default hooks (blocklist with --terms literal terms
     and --regexes regular expressions, then PII);
  3. the default hooks plus the OpenAI moderation hook, against FakeOpenAI running in its
     own process on loopback (one HTTP round trip per call, through the shared aiohttp session).
Without DATABASE_URL it uses a throwaway SQLite file in a temporary directory; with it, the
database is migrated and written to (blocklist rows, a provider): do not point it at real data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pulse.settings")
os.environ.setdefault("PULSE_VAR_DIR", tempfile.mkdtemp(prefix="pulse-moderation-bench-"))
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["MODERATION_OPENAI_PROVIDER"] = "bench-moderation"

import django  # noqa: E402

django.setup()

import uvloop  # noqa: E402
from chat_bench import fake_provider_process  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from gateway.chat_formats import ChatCall  # noqa: E402
from gateway.models import BlockedTerm  # noqa: E402
from gateway.moderation.pipeline import moderate_prompt  # noqa: E402
from gateway.moderation.registry import configure_hooks  # noqa: E402
from gateway.pipeline import ChatCompletion  # noqa: E402
from providers.clients.base import ChatMessage, ChatRequest, ProviderConfig  # noqa: E402
from providers.http import close_shared_session  # noqa: E402
from providers.models import Provider  # noqa: E402
from providers.routing import Prices, Route  # noqa: E402

BLOCKLIST = "gateway.moderation.hooks.blocklist.BlocklistHook"
PII = "gateway.moderation.hooks.pii.PiiHook"
OPENAI = "gateway.moderation.hooks.openai_moderation.OpenAIModerationHook"
CHAT = ChatCompletion(
    ChatCall(
        "gpt-4o",
        ChatRequest(
            (
                ChatMessage("system", "You are a helpful assistant for a travel agency. Answer briefly and politely."),
                ChatMessage(
                    "user",
                    "I would like to plan a trip to Lisbon in early May for two adults. We like food, "
                    "museums and walking, and we would rather avoid very touristy places. What should we "
                    "see on the first two days, and which neighbourhood is best to stay in?",
                ),
                ChatMessage(
                    "assistant",
                    "For a first visit, stay in Príncipe Real or Campo de Ourique: quiet, full of good "
                    "restaurants and close to the centre. Day one: Alfama on foot, then the tile museum. "
                    "Day two: Belém in the morning, LX Factory in the afternoon.",
                ),
                ChatMessage(
                    "user",
                    "Great, thanks! Could you also suggest two day trips by train, and roughly what "
                    "they cost per person in 2025?",
                ),
            ),
            max_tokens=200,
        ),
    )
)


def route(moderation_enabled: bool = True) -> Route:
    provider = ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "unused")
    return Route(
        "gpt-4o", provider, True, True, "", "chat", 100, 4096, Prices(), (), moderation_enabled=moderation_enabled
    )


def prepare(terms: int, regexes: int, fake_url: str, fake_key: str) -> None:
    call_command("migrate", verbosity=0)
    BlockedTerm.objects.filter(pattern__startswith="bench").delete()  # a database kept from an earlier run
    rows = [BlockedTerm(pattern=f"benchword{index}") for index in range(terms)]
    rows += [BlockedTerm(pattern=rf"bench{index}\w*", is_regex=True) for index in range(regexes)]
    BlockedTerm.objects.bulk_create(rows)
    provider, _ = Provider.objects.get_or_create(name="bench-moderation", defaults={"kind": "openai"})
    provider.base_url, provider.api_key = fake_url, fake_key
    provider.save()


async def per_call_us(calls: int, moderated_route: Route) -> float:
    for _ in range(min(calls, 200)):  # warm-up: the blocklist and provider snapshots, the connection pool
        await moderate_prompt(CHAT, route=moderated_route, principal=None, request_id="bench")
    started = time.perf_counter()
    for _ in range(calls):
        result = await moderate_prompt(CHAT, route=moderated_route, principal=None, request_id="bench")
    elapsed = time.perf_counter() - started
    assert result is CHAT, "the benchmark chat must be allowed unchanged"
    return elapsed / calls * 1e6


async def run(calls: int, terms: int, regexes: int) -> None:
    scenarios = [
        ("moderation off for the route", [BLOCKLIST, PII], False, calls),
        (f"blocklist only ({terms} terms + {regexes} regexes)", [BLOCKLIST], True, calls),
        ("PII only", [PII], True, calls),
        ("default hooks: blocklist + PII", [BLOCKLIST, PII], True, calls),
        (
            "default hooks + OpenAI moderation (FakeOpenAI, loopback)",
            [BLOCKLIST, PII, OPENAI],
            True,
            max(calls // 10, 100),
        ),
    ]
    print(f"database: {settings.DATABASES['default']['ENGINE']}, redis: {settings.REDIS_URL or 'none'}")
    messages = CHAT.chat.request.messages
    print(f"chat: {len(messages)} messages, {sum(len(m.content) for m in messages)} chars")
    try:
        for label, paths, enabled, count in scenarios:
            configure_hooks(paths)
            print(f"{label:60s} {await per_call_us(count, route(enabled)):9.1f} µs/call  ({count} calls)")
    finally:
        await close_shared_session()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--terms", type=int, default=200)
    parser.add_argument("--regexes", type=int, default=5)
    args = parser.parse_args()

    with fake_provider_process() as (fake_url, fake_key, _):
        prepare(args.terms, args.regexes, fake_url, fake_key)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args.calls, args.terms, args.regexes))


if __name__ == "__main__":
    main()
