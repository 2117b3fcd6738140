"""ASGI lifespan: once started, settle the garbage collector; at worker shutdown, run the shutdown
hooks that modules registered (pooled upstream sessions, database and Redis connections: see
core.shutdown)."""

import gc
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from core.shutdown import run_shutdown_hooks


def settle_garbage_collector() -> None:
    """Everything alive at start-up (Django, the apps, the routing table's code) lives as long as the
    worker: freeze it, so no collection scans it again, and collect the young generation less often
    (a request makes thousands of short-lived objects: the default 700 collects several times
    each, while a young generation of 50,000 took 20-30 ms to scan in bench/run_all.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)


async def lifespan_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            settle_garbage_collector()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await run_shutdown_hooks()
            await send({"type": "lifespan.shutdown.complete"})
            return
