"""ASGI lifespan: once started, hand the garbage collector to its pacer (core.gcpacer); at worker
shutdown, stop it and run the shutdown hooks that modules registered (pooled upstream sessions,
database and Redis connections: see core.shutdown)."""

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from core.gcpacer import GcPacer, Pace
from core.shutdown import run_shutdown_hooks


def worker_pace() -> Pace:
    return Pace(idle_every_s=settings.GC_IDLE_EVERY_S, growth_limit=settings.GC_GROWTH_LIMIT)


async def lifespan_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    pacer = GcPacer(worker_pace())
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            pacer.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            pacer.stop()
            await run_shutdown_hooks()
            await send({"type": "lifespan.shutdown.complete"})
            return
