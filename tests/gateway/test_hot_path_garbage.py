"""A chat request leaves no cyclic garbage behind.

The worker runs with CPython's automatic collection off while requests are in flight (core.gcpacer):
what a request allocates must be freed by reference counting when it ends. Objects in reference
cycles would pile up until the pacer's growth limit forces a full collection, a pause with requests
in flight. A traceback kept on an object it refers to, a closure over its own task, a Future stored
on its own callback: each of these makes a cycle per request, and this test names what it finds.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from core.shutdown import run_shutdown_hooks
from pulse.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

WARM_UP = 20  # first requests fill caches, open pools and load the rate-limit script
MEASURED = 60
# Less than one object every few requests: a per-request cycle (at least a handful of objects
# each time) is far above this, one-off objects (a pool's first connection) are below it.
ALLOWED_PER_REQUEST = 0.25


async def complete(body: bytes, key: str) -> int:
    """One POST /v1/chat/completions through the ASGI application, as uvicorn would send it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    answered = asyncio.Event()
    status = 0

    async def receive() -> dict:
        if incoming:
            return incoming.pop()
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body"):
            answered.set()

    await application(scope, receive, send)
    return status


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
