"""An async PostgreSQL connection pool per event loop, for the writes on the hot path: the ledger
row, and a capped user's budget hold and its settlement.

Django's ORM would run them in a thread (about twice the time per request, measured with
bench/metering_bench.py); psycopg's own async pool runs them on the event loop. It connects with
exactly the parameters Django uses. None when the database is not PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from django.conf import settings
from django.db import connections
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.loops import PerLoop
from core.shutdown import drain_on_shutdown, on_shutdown


def is_postgresql() -> bool:
    # From settings, not connections["default"]: that lookup goes through a context-local, per call.
    engine: str = settings.DATABASES["default"]["ENGINE"]
    return engine == "django.db.backends.postgresql"


async def _open_pool() -> AsyncConnectionPool:
    params = dict(connections["default"].get_connection_params())
    params.pop("cursor_factory", None)  # Django's sync cursor class; the async connection has its own
    # Autocommit: the one INSERT of a lone row is its own transaction, one round trip rather than
    # BEGIN, INSERT, COMMIT; a batch opens its transaction itself.
    params["autocommit"] = True
    pool = AsyncConnectionPool(
        kwargs=params, min_size=1, max_size=settings.DATABASE_POOL_SIZE, timeout=5, open=False, name="pulse-async"
    )
    await pool.open()
    return pool


def _failed_or_closed(opening: asyncio.Task[AsyncConnectionPool]) -> bool:
    return opening.done() and (opening.cancelled() or opening.exception() is not None or opening.result().closed)


# A task, so that concurrent first callers share one pool while it opens.
_pools: PerLoop[asyncio.Task[AsyncConnectionPool]] = PerLoop(
    lambda: asyncio.get_running_loop().create_task(_open_pool()), stale=_failed_or_closed
)


async def async_pool() -> AsyncConnectionPool | None:
    if not is_postgresql():
        return None
    return await asyncio.shield(_pools.get())


async def execute(sql: str, params: Sequence[Any]) -> int:
    """One statement on this loop's pool, in autocommit; the number of rows it touched. It runs as a
    task that a canceled caller does not cut short (a write half sent is a lost ledger row or a stuck
    hold) and that the shutdown drain waits for, before the pool closes."""
    task = asyncio.ensure_future(_execute(sql, params))
    writes = _writes.get()
    writes.add(task)
    task.add_done_callback(writes.discard)
    return await asyncio.shield(task)


async def _execute(sql: str, params: Sequence[Any]) -> int:
    pool = await async_pool()
    assert pool is not None
    async with pool.connection() as connection:
        cursor = await connection.execute(sql, params)
        return cursor.rowcount


_writes: PerLoop[set[asyncio.Future[int]]] = PerLoop(set)

# The connection a serial writer keeps checked out (at most one per loop; see serial_connection).
_kept: PerLoop[list[AsyncConnection[Any]]] = PerLoop(list)


@asynccontextmanager
async def serial_connection() -> AsyncIterator[AsyncConnection[Any]]:
    """This loop's kept connection, for a writer that sends one statement at a time (the ledger's group
    commit): checked out of the pool once rather than per statement, since a checkout and return cost
    about as much client CPU as the INSERT itself (measured 160 µs with one against 90 µs without).
    After any error the connection goes back to the pool, which discards it if it is broken or in a
    transaction, and the next use checks out another."""
    kept = _kept.get()
    if not kept or kept[0].closed:
        kept[:] = [await (await _pool()).getconn()]
    connection = kept[0]
    try:
        yield connection
    except BaseException:
        kept.clear()
        await (await _pool()).putconn(connection)
        raise


async def _pool() -> AsyncConnectionPool:
    pool = await async_pool()
    assert pool is not None, "serial_connection is for PostgreSQL"
    return pool


@drain_on_shutdown
async def finish_writes() -> None:
    """Let the writes in flight end (their requests are waiting for them) before the pool closes."""
    writes = _writes.pop()
    if writes:
        await asyncio.gather(*writes, return_exceptions=True)


@on_shutdown
async def close_async_pool() -> None:
    opening = _pools.pop()
    kept = _kept.pop() or []
    if opening is not None and opening.done() and not _failed_or_closed(opening):
        for connection in kept:  # back first: closing waits for every connection checked out
            await opening.result().putconn(connection)
        await opening.result().close()
