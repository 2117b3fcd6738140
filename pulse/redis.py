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
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _clients[loop] = client
    return client
