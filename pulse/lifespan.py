"""ASGI lifespan: close the pooled upstream, database and Redis connections when a worker shuts down."""

from providers.http import close_shared_session
from pulse.pg import close_async_pool
from pulse.redis import close_shared_redis


async def lifespan_app(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_shared_session()
            await close_async_pool()
            await close_shared_redis()
            await send({"type": "lifespan.shutdown.complete"})
            return
