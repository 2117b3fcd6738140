"""Chat hot-path benchmark: one Pulse worker (uvicorn, uvloop, httptools) in front of a fake OpenAI.

    .venv/bin/python bench/chat_bench.py [--concurrent 500] [--seconds 5]

Measures, each against a fake provider running in its own process:
  1. concurrency: N requests at once to a provider that answers after 1 s (async: ~1 s total,
     not N / threads seconds);
  2. throughput: requests per second of one worker, provider answering at once, 10 and 50 in flight;
  3. added latency: median and p99 of Pulse vs calling the fake directly, one request at a time.
Runs on the embedded defaults (SQLite, in-process cache) unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


def serve_fake(commands) -> None:
    """The fake provider's process: start it, report its URL, then apply commands until told to stop."""
    from tests.fakes import FakeOpenAI

    fake = FakeOpenAI.start()
    commands.send((fake.base_url, fake.api_key))
    while (command := commands.recv()) != "stop":
        seconds, times = command
        fake.reset()
        if seconds:
            fake.delay(seconds, times=times)
        commands.send("ok")
    fake.stop()


@contextlib.contextmanager
def fake_provider_process() -> Iterator[tuple[str, str, Connection]]:
    """A FakeOpenAI in a process of its own (so it is never what is measured):
    yields its base URL, its API key and the pipe that scripts its delays."""
    control, child_end = multiprocessing.Pipe()
    process = multiprocessing.Process(target=serve_fake, args=(child_end,), daemon=True)
    process.start()
    fake_url, fake_key = control.recv()
    try:
        yield fake_url, fake_key, control
    finally:
        control.send("stop")
        process.join(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_pulse(env: dict[str, str], port: int) -> subprocess.Popen:
    python = sys.executable
    for args in (["migrate", "--noinput", "-v", "0"], ["sync_providers"]):
        subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [
            python,
            "-m",
            "uvicorn",
            "pulse.asgi:application",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    return server


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "bench"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("Pulse did not start")


async def one(session, url, headers, body) -> float:
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
    return time.perf_counter() - started


async def burst(session, url, headers, count: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(one(session, url, headers, BODY) for _ in range(count)))
    return time.perf_counter() - started


async def throughput(session, url, headers, in_flight: int, seconds: float) -> float:
    done, deadline = 0, time.perf_counter() + seconds

    async def worker():
        nonlocal done
        while time.perf_counter() < deadline:
            await one(session, url, headers, BODY)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done / (time.perf_counter() - started)


async def latencies(session, url, headers, body, count: int) -> list[float]:
    return [await one(session, url, headers, body) for _ in range(count)]


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {ordered[int(len(ordered) * 0.99)] * 1000:.2f} ms"


async def run(args, fake_url: str, fake_key: str, pulse_url: str, key: str, control) -> None:
    def configure(seconds: float, times: int) -> None:
        control.send((seconds, times))
        control.recv()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await wait_ready(session, pulse_url)
        auth = {"Authorization": f"Bearer {key}"}
        chat = pulse_url + "/v1/chat/completions"
        await latencies(session, chat, auth, BODY, 50)  # warm-up: caches, pools, JIT-free but lazy imports

        # The first burst opens every connection (client -> Pulse -> provider); the second reuses them.
        for label in ("new connections", "connections reused"):
            configure(1.0, args.concurrent)
            elapsed = await burst(session, chat, auth, args.concurrent)
            print(
                f"{args.concurrent} concurrent requests, provider answering after 1 s ({label}): "
                f"all done in {elapsed:.2f} s"
            )

        configure(0, 0)
        for in_flight in (10, 50):
            rate = await throughput(session, chat, auth, in_flight, args.seconds)
            print(f"throughput, {in_flight} in flight, provider answering at once: {rate:,.0f} req/s")

        direct = await latencies(
            session,
            fake_url + "/chat/completions",
            {"Authorization": f"Bearer {fake_key}"},
            {**BODY, "max_completion_tokens": 16, "max_tokens": None},
            args.samples,
        )
        through = await latencies(session, chat, auth, BODY, args.samples)
        added = statistics.median(through) - statistics.median(direct)
        print(f"one at a time, direct to the fake: {summary(direct)}")
        print(f"one at a time, through Pulse:      {summary(through)}")
        print(f"latency Pulse adds (median): {added * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()

    with fake_provider_process() as (fake_url, fake_key, control):
        var_dir = tempfile.mkdtemp(prefix="pulse-bench-")
        env = {
            **os.environ,
            "PULSE_VAR_DIR": var_dir,
            "OPENAI_API_KEY": fake_key,
            "OPENAI_BASE_URL": fake_url,
            "RATE_LIMIT": "100000000/1s",
            "LOG_LEVEL": "WARNING",
        }
        port = free_port()
        server = start_pulse(env, port)
        try:
            key = create_key(env)
            asyncio.run(run(args, fake_url, fake_key, f"http://127.0.0.1:{port}", key, control))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
