"""Streaming clients for the benchmark: time to first token, and many streams held open at once.

    .venv/bin/python bench/streams.py ttft URL --samples 300 [--auth ...] [--body JSON]
    .venv/bin/python bench/streams.py hold URL --count 2000 [--auth ...] [--body JSON]

ttft: one stream at a time; for each, the time from sending the request to the first SSE event
whose delta carries text (`choices[0].delta.content` not empty), and to the end of the stream.
hold: `count` streams started at once and read to the end; reports how many were open at the same
time (answer headers in, stream not yet ended) and how each ended. Both print one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import Counter

import aiohttp
import uvloop


def has_text(line: bytes) -> bool:
    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def one_stream(session: aiohttp.ClientSession, url: str, headers: dict, body: bytes) -> tuple[float, float]:
    """(seconds to the first text, seconds to the end) of one stream."""
    started = time.perf_counter()
    first = None
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
        async for line in response.content:
            if first is None and has_text(line):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream carried no text")
    return first, time.perf_counter() - started


async def ttft(url: str, headers: dict, body: bytes, samples: int) -> dict:
    async with aiohttp.ClientSession() as session:
        results = [await one_stream(session, url, headers, body) for _ in range(samples)]
    firsts, totals = sorted(r[0] for r in results), sorted(r[1] for r in results)

    def ms(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(len(values) * p / 100))] * 1000, 3)

    return {"samples": samples, "ttft_p50_ms": ms(firsts, 50), "ttft_p99_ms": ms(firsts, 99)} | {
        "total_p50_ms": ms(totals, 50),
        "total_p99_ms": ms(totals, 99),
    }


async def hold(url: str, headers: dict, body: bytes, count: int, timeout_s: float) -> dict:
    open_now = peak = 0
    outcomes: Counter[str] = Counter()

    async def read_one(session: aiohttp.ClientSession) -> None:
        nonlocal open_now, peak
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    outcomes[f"http_{response.status}"] += 1
                    return
                open_now += 1
                peak = max(peak, open_now)
                try:
                    async for _ in response.content:
                        pass
                finally:
                    open_now -= 1
            outcomes["ok"] += 1
        except TimeoutError:
            outcomes["timeout"] += 1
        except aiohttp.ClientError as error:
            outcomes[type(error).__name__] += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(read_one(session) for _ in range(count)))
    return {"count": count, "peak_open": peak, "outcomes": dict(outcomes), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["ttft", "hold"])
    parser.add_argument("url")
    parser.add_argument("--auth", default="")
    parser.add_argument("--body", default='{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}')
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args()
    headers = {"Content-Type": "application/json"} | ({"Authorization": args.auth} if args.auth else {})
    body = args.body.encode()
    gc.disable()  # no collector pauses timed as the server's (see bench/openloop.py)
    if args.mode == "ttft":
        result = uvloop.run(ttft(args.url, headers, body, args.samples))
    else:
        result = uvloop.run(hold(args.url, headers, body, args.count, args.timeout_s))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
