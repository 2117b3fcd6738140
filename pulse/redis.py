"""The async Redis client of the running event loop, for hot-path shared state
(circuit breakers, and rate limits in a later issue). None when REDIS_URL is unset:
callers then keep that state in process."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from django.conf import settings

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


def shared_redis() -> aioredis.Redis | None:
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for stale_loop in [other for other in _clients if other.is_closed()]:
            del _clients[stale_loop]
        # A blocking pool: under a burst, requests wait a moment for a free connection rather than
        # failing with "Too many connections" (the plain pool's behaviour at its limit).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=settings.REDIS_POOL_SIZE, timeout=5,
            socket_connect_timeout=2, socket_timeout=2)
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client
