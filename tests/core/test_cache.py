"""The shared cache the hot path's refreshers use is one backend per process: request tasks that
reach it through a thread hop do not each make their own backend (and, with Redis, their own pool and
connection)."""

import asyncio
import contextvars

import pytest
import redis
from channels.db import database_sync_to_async
from django.conf import settings

from core.cache import cache


async def a_request_task() -> int:
    """What core.snapshot and gateway.auth do once a second: read a key from a worker thread."""
    await database_sync_to_async(cache.get)("snapshot-version")
    return id(cache._wrapped)  # the backend this task used


def redis_connections() -> int | None:
    """Clients connected to Redis, or None with the embedded defaults (LocMemCache opens none)."""
    if not settings.REDIS_URL:
        return None
    with redis.Redis.from_url(settings.REDIS_URL) as observer:
        return len(observer.client_list()) - 1  # not counting the observer itself


@pytest.mark.django_db(transaction=True)
async def test_request_tasks_share_one_backend_and_its_connections():
    await a_request_task()  # the backend (and, with Redis, its first connection)
    before = await asyncio.to_thread(redis_connections)

    # A worker's request tasks start from a context that never held a cache backend (uvicorn makes
    # them from its protocol callbacks): in such a context django.core.cache.cache makes a new one.
    tasks = [asyncio.create_task(a_request_task(), context=contextvars.Context()) for _ in range(20)]
    backends = await asyncio.gather(*tasks)

    assert len(set(backends)) == 1
    after = await asyncio.to_thread(redis_connections)
    if before is not None:
        assert after is not None and after <= before + 1  # the thread hop's pool may add one at most
