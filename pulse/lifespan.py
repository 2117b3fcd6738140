"""ASGI lifespan: close the pooled upstream connections when a worker shuts down."""

from providers.http import close_shared_session


async def lifespan_app(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_shared_session()
            await send({"type": "lifespan.shutdown.complete"})
            return
