"""The worker's garbage collector: off while requests are in flight, a full collection when the worker
is idle or when tracked objects pile up, and the in-flight count that tells the two apart."""

import asyncio
import gc

import pytest

from core import gcpacer
from core.gcpacer import GcPacer, InFlight, Pace


@pytest.fixture
def collections():
    """Full collections made while the test runs (gc.callbacks sees the pacer's own)."""
    made: list[int] = []

    def seen(phase, info):
        if phase == "stop" and info["generation"] == 2:
            made.append(info["collected"])

    gc.callbacks.append(seen)
    yield made
    gc.callbacks.remove(seen)


@pytest.fixture
async def started():
    """A pacer started on the test's loop (so gc is off and start-up frozen), then put back."""
    pacers: list[GcPacer] = []

    def start(pace: Pace, in_flight: InFlight) -> GcPacer:
        pacer = GcPacer(pace, in_flight)
        pacer.start()
        pacers.append(pacer)
        return pacer

    yield start
    for pacer in pacers:
        pacer.stop()
    gc.unfreeze()  # the rest of the test process collects as before


async def test_in_flight_counts_requests_until_they_end_however_they_end():
    in_flight = InFlight()
    release = asyncio.Event()

    async def app(scope, receive, send):
        await release.wait()
        if scope["fail"]:
            raise RuntimeError("the app failed")

    counted = in_flight.track(app)
    tasks = [asyncio.create_task(counted({"fail": fail}, None, None)) for fail in (False, True)]
    await asyncio.sleep(0)
    assert in_flight.count == 2
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], RuntimeError)
    assert in_flight.count == 0


async def test_no_automatic_collection_while_running_and_back_on_after(started):
    pacer = started(Pace(idle_every_s=60, growth_limit=10**9), InFlight())
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    pacer.stop()
    assert gc.isenabled()


async def test_collects_everything_once_idle_for_a_few_ticks_and_not_again_soon(started, collections):
    in_flight = InFlight()
    pacer = started(Pace(idle_every_s=0, growth_limit=10**9), in_flight)
    collections.clear()  # start-up's own, before the freeze
    in_flight.count = 1
    for _ in range(gcpacer.QUIET_TICKS * 2):
        pacer.tick()
    assert collections == []  # a request in flight: never

    in_flight.count = 0
    cycle: list = []
    cycle.append(cycle)
    del cycle
    for _ in range(gcpacer.QUIET_TICKS - 1):
        pacer.tick()
    assert collections == []  # between two requests is not idle
    pacer.tick()
    assert len(collections) == 1 and collections[0] >= 1  # the cycle was found

    pacer.pace = Pace(idle_every_s=60, growth_limit=10**9)
    for _ in range(gcpacer.QUIET_TICKS * 2):
        pacer.tick()
    assert len(collections) == 1  # idle again, but the last collection was just now


async def test_growth_past_the_limit_collects_even_under_load(started, collections, caplog, monkeypatch):
    monkeypatch.setattr(gcpacer, "SLOW_COLLECTION_S", 0.0)  # every pause under load is said
    in_flight = InFlight()
    pacer = started(Pace(idle_every_s=60, growth_limit=5_000), in_flight)
    collections.clear()  # start-up's own, before the freeze
    in_flight.count = 3
    pacer.tick()
    assert collections == []

    cycles = [[] for _ in range(6_000)]
    for cycle in cycles:
        cycle.append(cycle)
    del cycles, cycle
    pacer.tick()
    assert len(collections) == 1 and collections[0] >= 6_000
    assert "garbage collection under load" in caplog.text  # a pause clients may have seen
