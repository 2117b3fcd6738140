"""The sliding-log rate limiter: exact at the window boundary, in process and in Redis."""

import asyncio

import pytest
import redis.asyncio as aioredis

import core.redis
from billing import ratelimit
from billing.ratelimit import SLIDING_LOG_SHA, LocalSlidingLog, RateLimiter
from core.redis import read_reply, serial_connection
from core.shutdown import run_shutdown_hooks


def test_sliding_log_allows_n_in_any_window_and_not_2n_across_a_boundary():
    now = [0.0]
    log = LocalSlidingLog(clock=lambda: now[0])
    results = []
    for t in (9.0, 9.5, 9.9, 10.1, 18.9, 19.0, 19.01):
        now[0] = t
        results.append(log.acquire("u", 3, 10).allowed)
    # Three at 9.x fill the window; 10.1 is still inside (a fixed window would reset at 10);
    # 19.0 is exactly ten seconds after 9.0, so that one slot has left; 19.01 finds it taken again.
    assert results == [True, True, True, False, False, True, False]


def test_decision_headers_say_when_a_slot_frees():
    now = [100.0]
    log = LocalSlidingLog(clock=lambda: now[0])
    log.acquire("u", 1, 60)
    now[0] = 130.2
    decision = log.acquire("u", 1, 60)
    assert not decision.allowed
    assert decision.headers() == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "30",
        "Retry-After": "30",
    }


async def test_redis_sliding_log_matches_at_the_boundary(settings, redis_url):
    settings.REDIS_URL = redis_url
    now_us = [0]
    limiter = RateLimiter(clock=lambda: now_us[0])  # the script's time, instead of Redis's TIME
    second = 1_000_000
    allowed = []
    for t in (9.0, 9.5, 9.9, 10.1, 18.9, 19.0, 19.01):
        now_us[0] = int(t * second)
        allowed.append((await limiter.acquire("boundary", 3, 10)).allowed)
    await run_shutdown_hooks()  # this loop's Redis clients close with it
    assert allowed == [True, True, True, False, False, True, False]


async def test_redis_runs_the_script_by_its_digest_after_a_flush(settings, redis_url):
    """EVALSHA, not the script text per request; a Redis that lost its script cache still limits."""
    settings.REDIS_URL = redis_url
    admin = aioredis.Redis.from_url(redis_url)
    await admin.script_flush()
    limiter = RateLimiter()
    decisions = [(await limiter.acquire("digest", 2, 10)).allowed for _ in range(3)]

    assert decisions == [True, True, False]
    assert (await admin.script_exists(SLIDING_LOG_SHA)) == [True]
    await admin.aclose()
    await run_shutdown_hooks()


async def test_a_burst_shares_round_trips_and_stays_exact(settings, redis_url, monkeypatch):
    """Requests that arrive together go to Redis in one script call, and still exactly `limit` pass: more
    requests at once than the Redis pool has connections, none failing open."""
    settings.REDIS_URL = redis_url
    settings.REDIS_POOL_SIZE = 4
    trips: list[int] = []
    send = ratelimit._run_sliding_logs

    async def counted(calls):
        trips.append(len(calls))
        return await send(calls)

    monkeypatch.setattr(ratelimit, "_run_sliding_logs", counted)
    ratelimit._round_trips.pop()  # a coalescer that calls the counted sender
    limiter = RateLimiter()
    decisions = await asyncio.gather(*(limiter.acquire("burst", 150, 60) for _ in range(400)))

    assert sum(d.allowed for d in decisions) == 150
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(150))
    assert sum(trips) == 400 and len(trips) < 10  # a few round trips, not 400
    await run_shutdown_hooks()


async def test_a_batch_of_several_users_limits_each_on_its_own(settings, redis_url):
    settings.REDIS_URL = redis_url
    limiter = RateLimiter()
    users = ["ann", "bob", "cy"] * 5
    decisions = await asyncio.gather(*(limiter.acquire(f"mixed:{user}", 2, 60) for user in users))

    allowed = [user for user, decision in zip(users, decisions, strict=True) if decision.allowed]
    assert sorted(allowed) == ["ann", "ann", "bob", "bob", "cy", "cy"]
    await run_shutdown_hooks()


async def test_a_key_that_fails_fails_open_alone(settings, redis_url, caplog):
    """A key the script cannot use (not a sorted set) lets its own request through, loudly; the
    others in the same batch are limited as ever."""
    settings.REDIS_URL = redis_url
    admin = aioredis.Redis.from_url(redis_url)
    await admin.set("pulse:ratelimit:broken", "not a sorted set")
    limiter = RateLimiter()
    keys = ["broken", "fine", "fine", "fine"]
    decisions = await asyncio.gather(*(limiter.acquire(key, 1, 60) for key in keys))

    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert "Redis unavailable" in caplog.text
    await admin.aclose()
    await run_shutdown_hooks()


async def test_a_batch_after_a_script_flush_still_limits(settings, redis_url):
    settings.REDIS_URL = redis_url
    admin = aioredis.Redis.from_url(redis_url)
    await admin.script_flush()
    limiter = RateLimiter()
    decisions = await asyncio.gather(*(limiter.acquire("flushed", 5, 60) for _ in range(20)))

    assert sum(d.allowed for d in decisions) == 5
    assert (await admin.script_exists(SLIDING_LOG_SHA)) == [True]
    await admin.aclose()
    await run_shutdown_hooks()


async def test_a_redis_outage_fails_open_for_every_request_of_a_batch(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limiter = RateLimiter()
    decisions = await asyncio.gather(*(limiter.acquire("down", 1, 60) for _ in range(5)))

    assert all(d.allowed for d in decisions)
    assert "Redis unavailable" in caplog.text
    await run_shutdown_hooks()


async def test_a_dead_redis_connection_is_replaced_without_failing_open(settings, redis_url, caplog):
    """The limiter's batches go over one kept connection. When Redis drops it (a restart, CLIENT KILL),
    the next batch goes again on a new connection: still limited, nothing let through unlimited."""
    settings.REDIS_URL = redis_url
    limiter = RateLimiter()
    admin = aioredis.Redis.from_url(redis_url)
    first = await limiter.acquire("killed", 2, 60)
    async with serial_connection() as kept:
        await kept.send_command("CLIENT", "ID")
        kept_id = await read_reply(kept)
    assert await admin.client_kill_filter(_id=kept_id) == 1
    decisions = [await limiter.acquire("killed", 2, 60) for _ in range(2)]
    await admin.aclose()
    await run_shutdown_hooks()

    assert first.allowed and [d.allowed for d in decisions] == [True, False]  # exact across the reconnect
    assert "Redis unavailable" not in caplog.text


@pytest.mark.parametrize("stops", ["before the handshake", "after the handshake"])
async def test_a_redis_that_stops_answering_fails_open_after_the_socket_timeout(
    stops, settings, redis_url, monkeypatch, caplog
):
    """The kept connection has no socket timeout of its own (core.redis.serial_connection): its handshake
    and each reply are awaited with one. A Redis that stops answering must not hold requests forever.
    Between the limiter and the real Redis, a proxy that stops passing the client's bytes on: from the
    start, or from the rate-limit script on (the handshake done)."""
    real = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    tasks: list[asyncio.Task] = []

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, to_redis: bool) -> None:
        passing = stops == "after the handshake"
        while data := await source.read(1 << 16):
            passing = passing and not (to_redis and b"EVAL" in data)
            if passing or not to_redis:
                sink.write(data)
        sink.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(real["host"], real["port"])
        tasks.append(asyncio.create_task(pump(upstream_reader, writer, to_redis=False)))
        await pump(reader, upstream_writer, to_redis=True)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    settings.REDIS_URL = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/{real.get('db', 0)}"
    monkeypatch.setattr(core.redis, "SOCKET_TIMEOUT_S", 0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    decision = await RateLimiter().acquire("stuck", 1, 60)
    waited = loop.time() - started
    await run_shutdown_hooks()
    server.close()
    await server.wait_closed()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert decision.allowed and "Redis unavailable" in caplog.text
    assert 0.2 <= waited < 1.5
