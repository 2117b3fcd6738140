"""ASGI lifespan: at worker shutdown, run the shutdown hooks that modules registered (pooled
upstream sessions, database and Redis connections: see core.shutdown)."""

from collections.abc import Awaitable, Callable
from typing import Any

from core.shutdown import run_shutdown_hooks


async def lifespan_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await run_shutdown_hooks()
            await send({"type": "lifespan.shutdown.complete"})
            return
