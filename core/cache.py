"""Django's default cache as one backend for the whole process.

`django.core.cache.cache` is context-local under ASGI: an asyncio task that reaches it through a
thread hop (database_sync_to_async) with no backend in its own context makes a new one, and for
RedisCache that is a new connection pool and a new connection to Redis, then dropped for the garbage
collector to find (measured: one per second for each refresher of core.snapshot and gateway.auth,
about 75 pools, their sockets and 7,000 objects of cyclic garbage in 10 s of load). Those refreshers
share this backend instead. Django's cache backends are safe to share between threads: redis-py's
pool hands each thread its own connection, and LocMemCache locks its store (shared by name anyway).
"""

from django.core.cache import BaseCache, caches
from django.utils.functional import SimpleLazyObject

cache: BaseCache = SimpleLazyObject(lambda: caches.create_connection("default"))  # type: ignore[assignment]
