"""The garbage collector in a worker: no collection while requests are in flight, a full one when idle.

CPython 3.11 starts a young collection when allocations minus deallocations pass a threshold, and
counts every deallocation, whatever the dead object's generation. A worker with a thousand requests
in flight breaks that count: each request's objects outlive a collection or two and later die in an
older generation, each death taking one off the young count. The count hovers near zero while the
young generation fills with live objects, until one collection walks 100,000 of them or more (55 to
98 ms pauses whenever 1,000 or more requests were in flight). Collecting more often only trades those
pauses for CPU: every in-flight request holds about 150 tracked objects, and each walk of one costs
tenths of a microsecond.

And there is next to nothing to find. The hot path makes almost no cyclic garbage: reference counting
frees a request's objects as it ends (measured with collection off: 1,400 cyclic objects in 10 s of
load, about 12,000 requests, most of them upstream connections the peer closed). So after start-up
the worker freezes what start-up made (it lives as long as the worker), turns automatic collection
off, and collects everything itself when idle: nothing in flight for QUIET_TICKS ticks in a row, and
GC_IDLE_EVERY_S after the last. A worker that is never idle still collects once the tracked objects
made since the last collection outnumber those freed by GC_GROWTH_LIMIT (a leak of cycles, or an
unusual number of requests in flight): memory stays bounded, at the price of one pause, logged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

TICK_S = 0.1
QUIET_TICKS = 5  # ticks in a row with nothing in flight: the worker is idle, not between two requests
SLOW_COLLECTION_S = 0.010

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class InFlight:
    """How many HTTP requests and websockets the worker is serving."""

    def __init__(self) -> None:
        self.count = 0

    def track(self, app: Asgi) -> Asgi:
        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            self.count += 1
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1

        return counted


in_flight = InFlight()


@dataclass(frozen=True)
class Pace:
    idle_every_s: float  # the least time between two collections when idle
    growth_limit: int  # tracked objects made and not freed since the last collection that force one


class GcPacer:
    def __init__(self, pace: Pace, in_flight: InFlight = in_flight) -> None:
        self.pace = pace
        self.in_flight = in_flight
        self.quiet_ticks = 0
        self.last = time.monotonic()
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()
        self.last = time.monotonic()
        self.schedule()

    def stop(self) -> None:
        """Turn automatic collection back on (a worker stops for good; a test's live server does not)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        gc.enable()

    def schedule(self) -> None:
        self.handle = asyncio.get_running_loop().call_later(TICK_S, self.tick)

    def tick(self) -> None:
        self.quiet_ticks = self.quiet_ticks + 1 if self.in_flight.count == 0 else 0
        idle = self.quiet_ticks >= QUIET_TICKS and time.monotonic() - self.last >= self.pace.idle_every_s
        if idle or gc.get_count()[0] >= self.pace.growth_limit:
            self.collect()
        self.schedule()

    def collect(self) -> None:
        started = time.monotonic()
        gc.collect()
        self.last = finished = time.monotonic()
        if self.in_flight.count and finished - started > SLOW_COLLECTION_S:
            # Said, so that a pause clients saw can be matched to its cause.
            ms = (finished - started) * 1000
            logger.warning("garbage collection under load: %.0f ms, %d requests in flight", ms, self.in_flight.count)
