"""The async Redis client of the running event loop, for hot-path shared state (rate limits,
circuit breakers). None when REDIS_URL is unset: callers then keep that state in process."""

from __future__ import annotations

import redis.asyncio as aioredis
from django.conf import settings

from core.loops import PerLoop
from core.shutdown import on_shutdown


def _new_client() -> aioredis.Redis:
    # A blocking pool: under a burst, requests wait a moment for a free connection rather than
    # failing with "Too many connections" (the plain pool's behaviour at its limit).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=settings.REDIS_POOL_SIZE,
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=2,
    )
    return aioredis.Redis(connection_pool=pool)


_clients: PerLoop[aioredis.Redis] = PerLoop(_new_client)


def shared_redis() -> aioredis.Redis | None:
    return _clients.get() if settings.REDIS_URL else None


@on_shutdown
async def close_shared_redis() -> None:
    """Close this loop's client (ASGI lifespan shutdown)."""
    if (client := _clients.pop()) is not None:
        await client.aclose()
