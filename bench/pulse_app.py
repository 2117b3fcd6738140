"""Pulse's ASGI application as the benchmark serves it: `pulse.asgi.application`, unchanged, plus a GC probe.

    uvicorn bench.pulse_app:application ...   (cwd: the repository root)

With BENCH_GC_DIR set, every worker process that imports this module times each garbage collection
through `gc.callbacks` and keeps `BENCH_GC_DIR/gc-<pid>.json` up to date: collections per generation,
total and longest pause, and every pause over 10 ms with its wall-clock time (so bench/run_all.py can
tell which phase it fell in), the requests in flight then, and the CPU time the collection itself
took (the worker's thread time: a pause much longer than that is the worker waiting for its core,
which other processes shared).
Product code knows nothing of it.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from core.gcpacer import in_flight

LONG_PAUSE_S = 0.010
WRITE_EVERY_S = 1.0


class GcProbe:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = self.started_cpu = 0.0
        self.last_write = 0.0
        self.stats: dict[str, Any] = {"pid": os.getpid(), "collections": [0, 0, 0], "total_ms": 0.0, "max_ms": 0.0}
        self.stats["long_pauses"] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.started, self.started_cpu = now, time.thread_time()
            return
        pause = now - self.started
        cpu = time.thread_time() - self.started_cpu  # the collector's own work; the rest is waiting for the core
        self.stats["collections"][info["generation"]] += 1
        self.stats["total_ms"] += pause * 1000
        self.stats["max_ms"] = max(self.stats["max_ms"], pause * 1000)
        if pause > LONG_PAUSE_S:
            record = {"at": time.time(), "ms": round(pause * 1000, 2), "cpu_ms": round(cpu * 1000, 2)}
            record |= {"generation": info["generation"], "in_flight": in_flight.count}
            self.stats["long_pauses"].append(record | {"collected": info["collected"]})
        if pause > LONG_PAUSE_S or now - self.last_write > WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        self.last_write = time.perf_counter()
        self.path.write_text(json.dumps(self.stats))

    def at_shutdown(self) -> None:
        self.stats["tracked_objects_at_shutdown"] = len(gc.get_objects())  # what a full collection walks
        self.stats["frozen_objects"] = gc.get_freeze_count()  # what none does (pulse/lifespan.py)
        self.write()


probe: GcProbe | None = None
if directory := os.environ.get("BENCH_GC_DIR"):
    probe = GcProbe(Path(directory) / f"gc-{os.getpid()}.json")
    gc.callbacks.append(probe)

from pulse.asgi import application as pulse_application  # noqa: E402 - the probe is in place before Django starts


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """pulse.asgi's application; with the probe on, the worker's last figures are written when its
    lifespan ends (uvicorn re-raises SIGTERM after a graceful shutdown, so atexit would never run)."""
    if probe is None or scope["type"] != "lifespan":
        return await pulse_application(scope, receive, send)

    async def send_and_record(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            probe.at_shutdown()
        await send(message)

    return await pulse_application(scope, receive, send_and_record)
