"""Requests per sliding window per user: at most N accepted in ANY W-second window.

A sliding log (the accept times inside the window), not fixed windows that let 2N
through across a boundary. With Redis it is one Lua script, atomic across every
worker and timed by Redis's own clock, called once for all the requests that arrive
together (core.batching); without Redis, the same algorithm in process memory. Any
entry point (chat consumers, DRF views, WebSockets, media jobs) makes the one call
`rate_limiter.acquire(...)`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.exceptions import NoScriptError

from core.batching import Coalescer
from core.ids import unique_hex
from core.loops import PerLoop
from core.principal import Principal
from core.redis import read_reply, serial_connection, shared_redis

logger = logging.getLogger(__name__)

# One request or a batch of them, in order (each sees the ones before it): KEYS[i] is request i's log,
# and ARGV holds four values per request: limit, window (us), a unique member, and the time in us ('':
# Redis's own clock, read once per batch). A batch spans several users' keys: one Redis, not a cluster.
# A request whose key fails (not a sorted set, say) answers allowed = -1, and fails open alone.
SLIDING_LOG = """
local clock = nil
local function acquire(key, at)
  local limit, window_us, member = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 3]
  local now = tonumber(ARGV[at + 4])
  if not now then
    if not clock then
      local t = redis.call('TIME')
      clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    now = clock
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
  local count = redis.call('ZCARD', key)
  local allowed = 0
  if count < limit then
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, math.ceil(window_us / 1000))
    count = count + 1
    allowed = 1
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local frees_in = 0
  if oldest[2] then frees_in = tonumber(oldest[2]) + window_us - now end
  return allowed, limit - count, frees_in
end
local results = {}
for i, key in ipairs(KEYS) do
  local ok, allowed, remaining, frees_in = pcall(acquire, key, (i - 1) * 4)
  if not ok then allowed, remaining, frees_in = -1, 0, 0 end
  results[#results + 1] = allowed
  results[#results + 1] = remaining
  results[#results + 1] = frees_in
end
return results
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the oldest accepted request leaves the window (a slot frees)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_s)))
        return headers


class LocalSlidingLog:
    """The in-process variant (embedded defaults: one process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._logs: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # DRF views run in threads; consumers on the loop

    def acquire(self, key: str, limit: int, window_s: float) -> RateDecision:
        with self._lock:
            now = self.clock()
            log = self._logs.setdefault(key, deque())
            while log and log[0] <= now - window_s:
                log.popleft()
            allowed = len(log) < limit
            if allowed:
                log.append(now)
            return RateDecision(allowed, limit, limit - len(log), log[0] + window_s - now if log else 0.0)


def _decision(result: Sequence[int], limit: int) -> RateDecision:
    allowed, remaining, frees_in_us = result
    if allowed < 0:  # this request's key failed in the script (the others in its batch did not)
        raise redis.ResponseError("the sliding log script failed on this request's key")
    return RateDecision(bool(allowed), limit, int(remaining), int(frees_in_us) / 1_000_000)


SLIDING_LOG_SHA = hashlib.sha1(SLIDING_LOG.encode()).hexdigest()


class RateLimiter:
    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        """clock: the time in microseconds. None (production) times Redis's windows by Redis's own
        clock, one clock for every worker, and the in-process log by time.monotonic."""
        self.clock = clock
        self.reset()
        self._sync_client: redis.Redis | None = None

    def reset(self) -> None:
        """Forget the in-process log (tests start each case afresh); what Redis holds is left alone."""
        clock = self.clock
        self.local = LocalSlidingLog() if clock is None else LocalSlidingLog(clock=lambda: clock() / 1_000_000)

    def _args(self, key: str, limit: int, window_s: float) -> tuple[str | int, ...]:
        member = unique_hex()
        now_us = self.clock() if self.clock is not None else ""  # "": the script asks Redis
        return (f"pulse:ratelimit:{key}", limit, int(window_s * 1_000_000), member, now_us)

    async def acquire(self, key: str, limit: int, window_s: float) -> RateDecision:
        """Count one request for key; allowed=False means refuse it."""
        client = shared_redis()
        if client is None:
            return self.local.acquire(key, limit, window_s)
        try:
            # Concurrent requests share one round trip (one script call); a lone one goes at once.
            result = await _round_trips.get().submit(self._args(key, limit, window_s))
            return _decision(result, limit)
        except redis.RedisError:
            return self._unavailable(limit)

    @staticmethod
    def _unavailable(limit: int) -> RateDecision:
        # Fail open: a Redis outage must not take every API down with it. Loud in the logs.
        logger.error("rate limiter: Redis unavailable, request let through unlimited", exc_info=True)
        return RateDecision(True, limit, limit, 0.0)

    def acquire_sync(self, key: str, limit: int, window_s: float) -> RateDecision:
        """acquire() for sync code (DRF views)."""
        if not settings.REDIS_URL:
            return self.local.acquire(key, limit, window_s)
        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        name, *args = self._args(key, limit, window_s)
        try:
            return _decision(self._sync_client.eval(SLIDING_LOG, 1, name, *args), limit)
        except redis.RedisError:
            return self._unavailable(limit)


async def _run_sliding_logs(calls: list[tuple[str | int, ...]]) -> list[Sequence[int]]:
    """Each call's (allowed, remaining, frees in us), from one script call for the batch: its keys, and
    their ARGV one after another. By the script's digest, so its text crosses the wire once per Redis."""
    keys = [call[0] for call in calls]
    argv = [value for call in calls for value in call[1:]]
    try:
        flat = await _sliding_logs_script(keys, argv)
    except redis.ConnectionError:
        # The kept connection died (Redis restarted, say): once more, on a new one. If the first try ran
        # before the connection broke, each request's member (its own unique id) is in its log already and is
        # not added twice; at worst a request at its limit is refused where the lost answer allowed it.
        flat = await _sliding_logs_script(keys, argv)
    return [flat[at : at + 3] for at in range(0, len(flat), 3)]


async def _sliding_logs_script(keys: list[str | int], argv: list[str | int]) -> list[int]:
    async with serial_connection() as connection:  # one batch at a time (the Coalescer below)
        try:
            await connection.send_command("EVALSHA", SLIDING_LOG_SHA, len(keys), *keys, *argv)
            flat: list[int] = await read_reply(connection)
        except NoScriptError:  # a fresh (or flushed) Redis: EVAL sends the text and caches it
            await connection.send_command("EVAL", SLIDING_LOG, len(keys), *keys, *argv)
            flat = await read_reply(connection)
    return flat


_round_trips: PerLoop[Coalescer[tuple[str | int, ...], Sequence[int]]] = PerLoop(
    lambda: Coalescer(_run_sliding_logs, max_batch=512)
)

rate_limiter = RateLimiter()


def user_rate(principal: Principal) -> tuple[int, float]:
    """(requests, window seconds) for this principal: its admin override, else RATE_LIMIT."""
    return principal.rate_limit or settings.RATE_LIMIT


def rate_key(principal: Principal) -> str:
    return f"user:{principal.user_id}"
