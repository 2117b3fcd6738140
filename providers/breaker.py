"""Circuit breaker: a provider that fails `threshold` times in a row is skipped for
`cooldown_s`, so requests do not each wait on a dead provider.

With Redis configured the failure count and the open state are shared by every
worker (INCR and SET PX); otherwise they live in this process. Workers re-read the
shared open state at most every PULSE_LOCAL_CACHE_SECONDS, so checking it costs
a request nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis import shared_redis

logger = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, *, threshold: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._synced_at = float("-inf")

    @staticmethod
    def _keys(provider: str) -> tuple[str, str]:
        return f"pulse:breaker:{provider}:failures", f"pulse:breaker:{provider}:open_until"

    def is_open(self, provider: str) -> bool:
        return self._open_until.get(provider, 0.0) > self.clock()

    async def refresh(self, providers: Iterable[str]) -> None:
        """Pull the shared open state of these providers, at most once per local-cache interval."""
        redis = shared_redis()
        now = time.monotonic()
        if redis is None or now - self._synced_at < settings.PULSE_LOCAL_CACHE_SECONDS:
            return
        self._synced_at = now
        names = sorted(set(providers))
        try:
            values = await redis.mget([self._keys(name)[1] for name in names])
        except Exception:  # a Redis hiccup must not fail requests: keep the local view
            logger.warning("circuit breaker state unavailable from Redis", exc_info=True)
            return
        for name, value in zip(names, values, strict=True):
            if value is not None:
                self._open_until[name] = max(self._open_until.get(name, 0.0), float(value))

    async def record_failure(self, provider: str) -> None:
        try:
            await self._record_failure(provider)
        except RedisError:  # a Redis hiccup must not fail the request: this worker still counts locally
            logger.warning("circuit breaker could not reach Redis", exc_info=True)
            self._failures[provider] = self._failures.get(provider, 0) + 1

    async def _record_failure(self, provider: str) -> None:
        redis = shared_redis()
        failures_key, open_key = self._keys(provider)
        if redis is None:
            failures = self._failures.get(provider, 0) + 1
        else:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(failures_key)
                pipe.expire(failures_key, int(self.cooldown_s * 2) + 1)
                failures, _ = await pipe.execute()
        self._failures[provider] = failures
        if failures >= self.threshold:
            await self._open(provider, redis, failures_key, open_key)

    async def _open(self, provider: str, redis: Redis | None, failures_key: str, open_key: str) -> None:
        until = self.clock() + self.cooldown_s
        self._open_until[provider] = until
        self._failures[provider] = 0
        logger.warning("provider %s failing: skipped for %.0f s", provider, self.cooldown_s)
        if redis is not None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(open_key, repr(until), px=int(self.cooldown_s * 1000) + 1000)
                pipe.delete(failures_key)
                await pipe.execute()

    async def record_success(self, provider: str) -> None:
        # Only a worker that saw failures writes: a healthy provider costs no Redis call.
        if self._failures.pop(provider, 0) or provider in self._open_until:
            self._open_until.pop(provider, None)
            if (redis := shared_redis()) is not None:
                try:
                    await redis.delete(*self._keys(provider))
                except RedisError:
                    logger.warning("circuit breaker could not reach Redis", exc_info=True)

    def reset(self) -> None:
        self._failures.clear()
        self._open_until.clear()
        self._synced_at = float("-inf")


breaker = CircuitBreaker()
