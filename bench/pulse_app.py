"""Pulse's ASGI application as the benchmark serves it: `pulse.asgi.application`, unchanged, plus a GC probe.

    uvicorn bench.pulse_app:application ...   (cwd: the repository root)

With BENCH_GC_DIR set, every worker process that imports this module times each garbage collection
through `gc.callbacks` and keeps `BENCH_GC_DIR/gc-<pid>.json` up to date: collections per generation,
total and longest pause, and every pause over 10 ms with its wall-clock time (so bench/run_all.py can
tell which phase it fell in). Product code knows nothing of it.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

LONG_PAUSE_S = 0.010
WRITE_EVERY_S = 1.0


class GcProbe:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = 0.0
        self.last_write = 0.0
        self.stats: dict[str, Any] = {"pid": os.getpid(), "collections": [0, 0, 0], "total_ms": 0.0, "max_ms": 0.0}
        self.stats["long_pauses"] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.started = now
            return
        pause = now - self.started
        self.stats["collections"][info["generation"]] += 1
        self.stats["total_ms"] += pause * 1000
        self.stats["max_ms"] = max(self.stats["max_ms"], pause * 1000)
        if pause > LONG_PAUSE_S:
            record = {"at": time.time(), "ms": round(pause * 1000, 2), "generation": info["generation"]}
            self.stats["long_pauses"].append(record | {"collected": info["collected"]})
        if pause > LONG_PAUSE_S or now - self.last_write > WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        self.last_write = time.perf_counter()
        self.path.write_text(json.dumps(self.stats))

    def at_exit(self) -> None:
        self.stats["tracked_objects_at_exit"] = len(gc.get_objects())  # what a full collection has to walk
        self.write()


if directory := os.environ.get("BENCH_GC_DIR"):
    probe = GcProbe(Path(directory) / f"gc-{os.getpid()}.json")
    gc.callbacks.append(probe)
    atexit.register(probe.at_exit)

from pulse.asgi import application  # noqa: E402 - the probe is in place before Django's start-up allocates

__all__ = ["application"]
