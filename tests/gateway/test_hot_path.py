"""What the hot path's speed rests on, checked through the ASGI application in this process.

A request leaves no async generator unfinished: the event loop closes such a generator with a task
of its own (and, under uvloop, a wake-up through its eventfd) when it is freed.

A chat request leaves no cyclic garbage behind. The worker runs with CPython's automatic collection
off while requests are in flight (core.gcpacer): what a request allocates must be freed by reference
counting when it ends. Objects in reference cycles would pile up until the pacer's growth limit forces
a full collection, a pause with requests in flight. A traceback kept on an object it refers to, a
closure over its own task, a Future stored on its own callback: each of these makes a cycle per
request, and the test names what it finds.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import sys

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from core.shutdown import run_shutdown_hooks
from pulse.asgi import application
from tests.helpers import asgi_post

pytestmark = pytest.mark.django_db(transaction=True)

WARM_UP = 20  # first requests fill caches, open pools and load the rate-limit script
MEASURED = 60
# Less than one object every few requests: a per-request cycle (at least a handful of objects
# each time) is far above this, one-off objects (a pool's first connection) are below it.
ALLOWED_PER_REQUEST = 0.25


async def complete(body: bytes, key: str) -> int:
    sent = await asgi_post(application, "/v1/chat/completions", body, key)
    return sent[0]["status"]


def test_chat_requests_make_no_cyclic_garbage(fake_providers, live_key, settings):
    settings.RATE_LIMIT = (1000, 60.0)
    fake_providers["openai"].reply("Hello there.")
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}]}).encode()

    async def requests(count: int) -> list[int]:
        return await asyncio.gather(*(complete(body, live_key) for _ in range(count)))

    async def measure() -> list[object]:
        assert set(await requests(WARM_UP)) == {200}
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable goes to gc.garbage
        try:
            for _ in range(MEASURED // 10):  # ten at a time, so the ledger writes and rate limits batch
                assert set(await requests(10)) == {200}
            gc.collect()
            return list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
            await run_shutdown_hooks()  # this loop's pools and sessions close with it
            await sync_to_async(connections.close_all)()  # database_sync_to_async's thread (SQLite)

    garbage = asyncio.run(measure())

    kinds = collections.Counter(type(thing).__qualname__ for thing in garbage)
    assert len(garbage) <= ALLOWED_PER_REQUEST * MEASURED, f"cyclic garbage: {kinds.most_common(12)}"


def test_a_streams_opening_events_go_out_with_its_first_token(fake_providers, live_key):
    """One write, not two, before the client sees the first token (the role chunk waits for it)."""
    fake_providers["openai"].reply("Hello there, friend.")
    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Say hello."}]}
    ).encode()

    async def stream() -> list[dict]:
        try:
            return await asgi_post(application, "/v1/chat/completions", body, live_key)
        finally:
            await run_shutdown_hooks()
            await sync_to_async(connections.close_all)()

    sent = asyncio.run(stream())

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    first = [json.loads(line.removeprefix(b"data: ")) for line in sent[1]["body"].split(b"\n\n") if line]
    deltas = [chunk["choices"][0]["delta"] for chunk in first]
    assert deltas[0].get("role") == "assistant" and deltas[1].get("content")
    text = b"".join(message["body"] for message in sent[1:])
    assert text.endswith(b"data: [DONE]\n\n") and sent[-1]["more_body"] is False


def test_requests_leave_no_async_generator_for_the_loop_to_close(fake_providers, live_key):
    fake_providers["openai"].reply("Hello there, friend.")
    message = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}]}
    bodies = [json.dumps(message).encode(), json.dumps(message | {"stream": True}).encode()]

    async def requests() -> list[str]:
        hooks = sys.get_asyncgen_hooks()  # the loop's: a generator freed unfinished is handed to its finalizer
        left: list[str] = []

        def finalizer(generator) -> None:
            left.append(generator.ag_code.co_qualname)
            hooks.finalizer(generator)

        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        try:
            for body in bodies:
                sent = await asgi_post(application, "/v1/chat/completions", body, live_key)
                assert sent[0]["status"] == 200
            return left
        finally:
            await run_shutdown_hooks()
            await sync_to_async(connections.close_all)()

    assert asyncio.run(requests()) == []
