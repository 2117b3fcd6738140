"""WebSocket chat benchmark: the memory a socket and a stream cost, and the time to first token added.

    .venv/bin/python bench/ws_bench.py [--sockets 1000] [--samples 300] [--stream-seconds 8]

Pulse as deployed (PostgreSQL, Redis, one uvicorn worker with uvloop and httptools, pinned to core 0;
started by bench/stack.py, as bench/run_all.py starts it) in front of bench/fake_upstream.py, which
shares core 1 with this script's clients. bench/prepare.sh starts PostgreSQL and Redis if needed.
Each memory figure is taken on a freshly started worker, after a warm-up, as the growth of its
resident memory (RSS, /proc) over its own baseline:

  1. idle sockets: `--sockets` WebSockets opened with an API key, each answering one frame (so each
     is authenticated and its consumer running), held for `--hold-seconds`; with permessage-deflate
     offered (as browsers and the `websockets` client do) and without it;
  2. streams: one chat stream on each of those sockets, started evenly over `--ramp-seconds`, the
     fake upstream pacing its chunks so that every stream is open together (`--stream-seconds`
     each); for comparison, as many HTTP SSE streams (POST /v1/chat/complete, "stream": true), the
     same way;
  3. time to first token, one stream at a time, `--samples` each, the three targets taking turns:
     the fake upstream called directly, Pulse's HTTP SSE (/v1/chat/complete) and Pulse's WebSocket
     (one socket kept open, as a chat page keeps it); Pulse's added time is its p50/p99 minus the
     direct call's.

A socket the server closes while it is held is counted with its close code (channels-redis under
redis-py 8's default 5 s socket timeout drops a socket now and then, close 1006/1011: see
tests/gateway/test_ws.py's last test), and so is a stream that ends in anything but chat.done.
Takes about a minute; prints a Markdown table (raw figures and Pulse's log in the work folder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack  # noqa: E402
from stack import Server  # noqa: E402

PULSE_CORE, LOAD_CORE = "0", "1"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
BODY = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32}
PROBE = json.dumps({"type": "ping"})  # not a frame type: answered with an error frame, which proves the socket live
OPEN_AT_ONCE = 100  # handshakes in flight, so the listen backlog never overflows
BATCH = 10  # streams started together while ramping up


# ---- Pulse and the fake upstream ----------------------------------------------------------------
class Stack:
    def __init__(self, work: Path) -> None:
        self.started = time.monotonic()
        self.work = work
        self.fake = stack.start_fake(LOAD_CORE, work)
        self.env = stack.pulse_env(self.fake, work / "var", work / "gc")
        (work / "gc").mkdir(exist_ok=True)
        self.key = stack.prepare_pulse(self.env)

    @contextlib.contextmanager
    def fresh_pulse(self) -> Iterator[Server]:
        """A Pulse worker started for one measurement, so each starts from its own baseline."""
        pulse = stack.start_pulse(self.env, self.key, 1, PULSE_CORE, self.work)
        try:
            yield pulse
        finally:
            pulse.stop()

    def pace(self, *, chunks: int, interval_ms: float) -> None:
        stack.configure_fake(self.fake, chunks=chunks, chunk_interval_ms=interval_ms, delay_ms=0)

    def stop(self) -> None:
        self.fake.stop()


def ws_url(pulse: Server) -> str:
    return pulse.base_url.replace("http://", "ws://") + "/ws/v1/chat"


def rss_mb(pulse: Server) -> float:
    return pulse.rss_mb()[0]


async def settled_rss(pulse: Server) -> float:
    """The worker's RSS once what just happened has settled (the highest of a few reads)."""
    reads = []
    for _ in range(5):
        await asyncio.sleep(0.2)
        reads.append(rss_mb(pulse))
    return max(reads)


# ---- WebSocket clients ----------------------------------------------------------------------------
async def open_sockets(pulse: Server, count: int, deflate: bool) -> list[ClientConnection]:
    """`count` sockets, each authenticated and answering a frame."""
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one() -> ClientConnection:
        async with gate:
            ws = await connect(
                ws_url(pulse),
                additional_headers={"Authorization": pulse.auth},
                compression="deflate" if deflate else None,
                ping_interval=None,  # idle means idle: no keepalive traffic during the measurement
                open_timeout=30,
            )
            await ws.send(PROBE)
            answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if answer.get("type") != "error":
                raise RuntimeError(f"unexpected answer to the probe: {answer}")
            return ws

    return list(await asyncio.gather(*(one() for _ in range(count))))


def closed_by_server(sockets: list[ClientConnection]) -> Counter[str]:
    """Sockets the server has closed, by close code (1011: an exception in the application)."""
    return Counter(str(ws.close_code) for ws in sockets if ws.close_code is not None)


async def close_all(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def stream_on(ws: ClientConnection, frame_id: str, first: asyncio.Event | None = None) -> tuple[str, float]:
    """One chat stream on an open socket: (how it ended, seconds to its first delta). `first` is set at
    the first delta, or when the stream ends without one."""
    started = time.perf_counter()
    ttft = 0.0
    try:
        await ws.send(json.dumps({"type": "chat.request", "id": frame_id, **BODY}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "chat.delta" and frame["delta"] and not ttft:
                ttft = time.perf_counter() - started
                if first is not None:
                    first.set()
            elif frame["type"] in ("chat.done", "error"):
                return (frame["type"] if frame["type"] == "chat.done" else frame["error"]["code"]), ttft
    finally:
        if first is not None:
            first.set()


# ---- memory -------------------------------------------------------------------------------------
async def idle_sockets(pulse: Server, count: int, deflate: bool, hold_s: float) -> dict[str, Any]:
    await warm_up(pulse)
    base = await settled_rss(pulse)
    started = time.perf_counter()
    sockets = await open_sockets(pulse, count, deflate)
    opened_s = time.perf_counter() - started
    await asyncio.sleep(hold_s)
    held = await settled_rss(pulse)
    dropped = closed_by_server(sockets)
    await close_all(sockets)
    return {"base": base, "held": held, "per_1000": (held - base) * 1000 / count, "open_s": opened_s} | {
        "dropped": dict(dropped)
    }


async def ramped(starts: Sequence[Callable[[], Awaitable[Any]]], ramp_s: float) -> list[asyncio.Future[Any]]:
    """Start each, BATCH at a time, evenly over ramp_s seconds."""
    tasks: list[asyncio.Future[Any]] = []
    for index in range(0, len(starts), BATCH):
        tasks += [asyncio.ensure_future(start()) for start in starts[index : index + BATCH]]
        await asyncio.sleep(ramp_s * BATCH / len(starts))
    return tasks


async def ws_streams(pulse: Server, count: int, fake: Stack, stream_s: float, ramp_s: float) -> dict[str, Any]:
    await warm_up(pulse)
    base = await settled_rss(pulse)
    sockets = await open_sockets(pulse, count, deflate=True)
    idle = await settled_rss(pulse)
    chunks = 20
    fake.pace(chunks=chunks, interval_ms=stream_s * 1000 / chunks)
    try:
        firsts = [asyncio.Event() for _ in sockets]
        started = time.perf_counter()
        starts = [functools.partial(stream_on, ws, f"s{i}", firsts[i]) for i, ws in enumerate(sockets)]
        streams = await ramped(starts, ramp_s)
        await asyncio.gather(*(first.wait() for first in firsts))
        all_open_s = time.perf_counter() - started
        ended = asyncio.gather(*streams, return_exceptions=True)
        peak = await peak_rss_while(pulse, ended)
    finally:
        fake.pace(chunks=8, interval_ms=0)
    results = ended.result()
    outcomes = Counter(r[0] if isinstance(r, tuple) else type(r).__name__ for r in results)
    ttfts = [r[1] for r in results if isinstance(r, tuple) and r[1]]
    dropped = closed_by_server(sockets)
    await close_all(sockets)
    return {"base": base, "idle": idle, "peak": peak, "all_open_s": all_open_s, "outcomes": dict(outcomes)} | {
        "socket_per_1000": (idle - base) * 1000 / count,
        "stream_per_1000": (peak - idle) * 1000 / count,
        "dropped": dict(dropped),
        "first_delta_p50_ms": percentile(ttfts, 50) * 1000,
        "first_delta_p99_ms": percentile(ttfts, 99) * 1000,
    }


async def peak_rss_while(pulse: Server, running: asyncio.Future[Any]) -> float:
    """The highest RSS read (every 100 ms) until `running` is done."""
    peak = rss_mb(pulse)
    while not running.done():
        peak = max(peak, rss_mb(pulse))
        await asyncio.wait([running], timeout=0.1)
    return peak


async def sse_streams(pulse: Server, count: int, fake: Stack, stream_s: float, ramp_s: float) -> dict[str, Any]:
    await warm_up(pulse)
    base = await settled_rss(pulse)
    chunks = 20
    fake.pace(chunks=chunks, interval_ms=stream_s * 1000 / chunks)
    outcomes: Counter[str] = Counter()
    first_seen = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal first_seen
        async with session.post(pulse.base_url + "/v1/chat/complete", json=BODY | {"stream": True}) as response:
            seen = False
            async for line in response.content:
                if not seen and line.startswith(b"event: delta"):
                    seen, first_seen = True, first_seen + 1
                if line.startswith(b"event: done"):
                    outcomes["done"] += 1
                elif line.startswith(b"event: error"):
                    outcomes["error"] += 1

    try:
        connector = aiohttp.TCPConnector(limit=0)
        headers = {"Authorization": pulse.auth}
        timeout = aiohttp.ClientTimeout(total=stream_s * 4 + 30)
        async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
            streams = await ramped([functools.partial(one, session) for _ in range(count)], ramp_s)
            peak = await peak_rss_while(pulse, asyncio.gather(*streams, return_exceptions=True))
        outcomes["open at once"] = first_seen
    finally:
        fake.pace(chunks=8, interval_ms=0)
    return {"base": base, "peak": peak, "per_1000": (peak - base) * 1000 / count, "outcomes": dict(outcomes)}


async def warm_up(pulse: Server) -> None:
    """Imports, pools and caches in place: a few streams over both transports."""
    async with aiohttp.ClientSession(headers={"Authorization": pulse.auth}) as session:
        for _ in range(20):
            await sse_ttft(session, pulse.base_url + "/v1/chat/complete", BODY | {"stream": True})
    ws = await connect(ws_url(pulse), additional_headers={"Authorization": pulse.auth})
    for i in range(20):
        await stream_on(ws, f"warm{i}")
    await ws.close()


# ---- time to first token ------------------------------------------------------------------------
async def direct_ttft(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Seconds to the first OpenAI stream chunk whose delta carries text, the stream read to its end."""
    started, first = time.perf_counter(), 0.0
    async with session.post(url, json=body) as response:
        async for line in response.content:
            if not first and line.startswith(b"data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - started
    return first


async def sse_ttft(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Seconds to Pulse's first `event: delta` (its data line), the stream read to its end."""
    started, first, delta_next = time.perf_counter(), 0.0, False
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
        async for line in response.content:
            if not first and delta_next and line.startswith(b"data:"):
                first = time.perf_counter() - started
            delta_next = line.startswith(b"event: delta")
    return first


async def time_to_first_token(pulse: Server, fake: Stack, samples: int) -> dict[str, list[float]]:
    fake.pace(chunks=8, interval_ms=0)
    direct_headers = {"Authorization": "Bearer sk-bench-upstream"}
    async with (
        aiohttp.ClientSession(headers=direct_headers) as direct,
        aiohttp.ClientSession(headers={"Authorization": pulse.auth}) as through,
    ):
        ws = await connect(ws_url(pulse), additional_headers={"Authorization": pulse.auth})
        counter = iter(range(10**9))

        async def ws_one() -> float:
            return (await stream_on(ws, f"t{next(counter)}"))[1]

        targets: dict[str, Callable[[], Awaitable[float]]] = {
            "direct": lambda: direct_ttft(direct, fake.fake.chat_url, BODY | {"stream": True}),
            "sse": lambda: sse_ttft(through, pulse.base_url + "/v1/chat/complete", BODY | {"stream": True}),
            "ws": ws_one,
        }
        results: dict[str, list[float]] = {name: [] for name in targets}
        names = list(targets)
        for i in range(samples + 30):  # the first 30 of each warm up
            for name in names[i % 3 :] + names[: i % 3]:  # each takes its turn first
                seconds = await targets[name]()
                if i >= 30:
                    results[name].append(seconds)
        await ws.close()
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# ---- the run ------------------------------------------------------------------------------------
async def measure(bench: Stack, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    started = time.monotonic()
    print(f"   ready in {started - bench.started:.0f} s", flush=True)
    for label, deflate in (("idle_deflate", True), ("idle_plain", False)):
        print(f"== {args.sockets} idle sockets, permessage-deflate {'on' if deflate else 'off'}", flush=True)
        with bench.fresh_pulse() as pulse:
            results[label] = await idle_sockets(pulse, args.sockets, deflate, args.hold_seconds)
    print(f"== {args.sockets} WebSocket streams at once", flush=True)
    with bench.fresh_pulse() as pulse:
        results["ws_streams"] = await ws_streams(pulse, args.sockets, bench, args.stream_seconds, args.ramp_seconds)
    print(f"== {args.sockets} HTTP SSE streams at once", flush=True)
    with bench.fresh_pulse() as pulse:
        results["sse_streams"] = await sse_streams(pulse, args.sockets, bench, args.stream_seconds, args.ramp_seconds)
    print(f"== time to first token, {args.samples} samples each", flush=True)
    with bench.fresh_pulse() as pulse:
        results["ttft"] = await time_to_first_token(pulse, bench, args.samples)
    print(f"   measured in {time.monotonic() - started:.0f} s", flush=True)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    n = f"{args.sockets:,}"
    idle_on, idle_off = results["idle_deflate"], results["idle_plain"]
    ws, sse = results["ws_streams"], results["sse_streams"]
    lines = [
        f"### WebSocket /ws/v1/chat: one Pulse worker (core 0), {n} clients (core 1)",
        "",
        "| memory (worker RSS growth) | per 1,000 | measured | notes |",
        "|---|---|---|---|",
        f"| idle sockets, permessage-deflate (browsers) | {idle_on['per_1000']:.1f} MB "
        f"| {idle_on['base']:.0f} -> {idle_on['held']:.0f} MB | opened in {idle_on['open_s']:.1f} s; "
        f"closed by the server while held: {dropped(idle_on)} |",
        f"| idle sockets, no compression | {idle_off['per_1000']:.1f} MB "
        f"| {idle_off['base']:.0f} -> {idle_off['held']:.0f} MB | closed by the server while held: "
        f"{dropped(idle_off)} |",
        f"| WebSocket streams (on those sockets, deflate) | {ws['stream_per_1000']:.1f} MB "
        f"| {ws['idle']:.0f} -> {ws['peak']:.0f} MB | all open after {ws['all_open_s']:.1f} s (first delta p50 "
        f"{ws['first_delta_p50_ms']:.0f} ms, p99 {ws['first_delta_p99_ms']:.0f} ms); ended: {ws['outcomes']}; "
        f"closed by the server: {dropped(ws)} |",
        f"| socket + stream | {ws['socket_per_1000'] + ws['stream_per_1000']:.1f} MB "
        f"| {ws['base']:.0f} -> {ws['peak']:.0f} MB | |",
        f"| HTTP SSE streams, for comparison | {sse['per_1000']:.1f} MB "
        f"| {sse['base']:.0f} -> {sse['peak']:.0f} MB | ended: {sse['outcomes']} |",
        "",
        f"| time to first token ({args.samples} one at a time) | p50 | p99 | added p50 | added p99 |",
        "|---|---|---|---|---|",
    ]
    ttft = results["ttft"]
    direct50, direct99 = percentile(ttft["direct"], 50), percentile(ttft["direct"], 99)
    for name, label in (("direct", "fake upstream, direct"), ("sse", "Pulse, HTTP SSE"), ("ws", "Pulse, WebSocket")):
        p50, p99 = percentile(ttft[name], 50), percentile(ttft[name], 99)
        added = "" if name == "direct" else f"{(p50 - direct50) * 1000:.2f} ms | {(p99 - direct99) * 1000:.2f} ms"
        lines.append(f"| {label} | {p50 * 1000:.2f} ms | {p99 * 1000:.2f} ms | {added or '- | -'} |")
    return "\n".join(lines)


def dropped(result: dict[str, Any]) -> str:
    return ", ".join(f"{count} (code {code})" for code, count in result["dropped"].items()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--stream-seconds", type=float, default=8.0)
    parser.add_argument("--hold-seconds", type=float, default=2.0)
    parser.add_argument("--ramp-seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # the clients share the fake upstream's core
    work = Path(tempfile.mkdtemp(prefix="pulse-ws-bench-"))
    started = time.monotonic()
    print("== the fake upstream, and Pulse's database, providers and key (migrate, sync_providers)", flush=True)
    bench = Stack(work)
    try:
        results = uvloop.run(measure(bench, args))
    finally:
        bench.stop()
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(report(results, args))
    print(f"\n({time.monotonic() - started:.0f} s; logs and raw results in {work})")


if __name__ == "__main__":
    main()
