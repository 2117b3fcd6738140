"""`make bench`: Pulse (full pipeline) against LiteLLM proxy on one fast fake upstream.

    .venv/bin/python bench/run_all.py [--rounds 3] [--quick] [--out bench/results/latest.md]

Cores (the machine has two): core 0 runs the gateway under test, Pulse's one worker or LiteLLM's;
core 1 runs the fake upstream (bench/fake_upstream.py), the load generators (wrk, bench/openloop.py,
bench/streams.py) and this script. Pulse's two workers share both cores with them. PostgreSQL and
Redis are the machine's own servers, unpinned. Every comparison alternates its targets round by
round (the order flips each round) so drift on this shared machine hits all of them, and the report
gives ratios taken within a round. Logs, GC records and raw results go to var/bench/<time>/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
import stack  # noqa: E402
from stack import PYTHON, Server  # noqa: E402

PROMPT = "Say hello in one short sentence."
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32}
STREAM_BODY = BODY | {"stream": True}
SAMPLES = "200"  # streams per time-to-first-token run
LOAD_CORES = "1"  # the fake upstream, the load generators and this script
GATEWAY_CORE = "0"


def alternate(items: list[Server], round_no: int) -> list[Server]:
    return items if round_no % 2 == 0 else items[::-1]


def loadgen_seconds() -> float:
    """CPU seconds of this script's finished children: wrk and the Python clients."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.phases: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "body": BODY}
        self.fake: Server
        self.direct: Server  # the fake upstream called directly, as a gateway target
        self.pulse1: Server
        self.pulse2: Server
        self.litellm: Server

    # ---- helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        started = time.time()
        yield
        self.phases.append({"name": name, "start": started, "end": time.time()})

    def gateways(self) -> list[Server]:
        return [self.pulse1, self.pulse2, self.litellm]

    def settle(self, limit_s: float = 120.0) -> None:
        """Wait until no gateway is still busy with a previous run (an overloaded one can lag far behind)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            before = [g.cpu_seconds() for g in self.gateways()]
            time.sleep(0.5)
            busy = [g.cpu_seconds() - b for g, b in zip(self.gateways(), before, strict=True)]
            if max(busy) < 0.05:
                return

    def measure(self, server: Server, run: Callable[[], dict]) -> dict:
        """Run one load against one target; add the CPU, in cores, that each side used meanwhile:
        the gateway, the fake upstream, the load generator, and everything else on the machine
        (PostgreSQL, Redis, and whatever other people run)."""
        self.settle()
        before = (server.cpu_seconds(), self.fake.cpu_seconds(), loadgen_seconds(), stack.machine_busy_seconds())
        started = time.monotonic()
        result = run()
        elapsed = time.monotonic() - started
        after = (server.cpu_seconds(), self.fake.cpu_seconds(), loadgen_seconds(), stack.machine_busy_seconds())
        gateway, fake, loadgen, machine = ((a - b) / elapsed for a, b in zip(after, before, strict=True))
        if server is self.direct:
            gateway = 0.0
        else:
            result["gateway_cores"] = round(gateway, 2)
        result |= {"target": server.name, "fake_cores": round(fake, 2), "loadgen_cores": round(loadgen, 2)}
        result["other_cores"] = round(machine - gateway - fake - loadgen, 2)
        print(f"   {server.name}: {json.dumps({k: v for k, v in result.items() if not isinstance(v, list)})}")
        return result

    def wrk(self, server: Server, connections: int, seconds: float, cores: str = LOAD_CORES) -> dict:
        env = os.environ | {"BENCH_BODY": json.dumps(BODY), "BENCH_AUTH": server.auth}
        command = ["taskset", "-c", cores, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        command += ["-s", str(stack.BENCH / "wrk" / "chat.lua"), server.chat_url]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
        return {
            "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "requests": raw["requests"],
            "errors": errors,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
        }

    def client(self, script: str, *args: str) -> dict:
        command = [PYTHON, str(stack.BENCH / script), *args]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    # ---- set-up -----------------------------------------------------------------------

    def start(self) -> None:
        logs, gc_dir, var_dir = self.work / "logs", self.work / "gc", self.work / "var"
        for folder in (logs, gc_dir, var_dir):
            folder.mkdir(parents=True, exist_ok=True)
        with self.phase("start servers"):
            self.fake = stack.start_fake(LOAD_CORES, logs)
            self.direct = Server("fake upstream, direct", self.fake.base_url, self.fake.chat_url, self.fake.process)
            env = stack.pulse_env(self.fake, var_dir, gc_dir)
            key = stack.prepare_pulse(env)
            self.results["pulse_env"] = {k: env[k] for k in report.PULSE_SETTINGS if k in env}
            self.pulse1 = stack.start_pulse(env, key, 1, GATEWAY_CORE, logs)
            self.pulse2 = stack.start_pulse(env, key, 2, "0,1", logs)
            self.litellm = stack.start_litellm(self.fake, GATEWAY_CORE, logs)
            self.results["commands"] = {s.name: s.settings["command"] for s in self.gateways()}
            self.results["pids"] = {s.name: s.workers() for s in self.gateways()}
        with self.phase("warm-up"):
            for server in self.gateways():
                self.wrk(server, 50, 3)
            self.results["idle_rss_mb"] = {s.name: s.rss_mb() for s in self.gateways()}

    def stop(self) -> None:
        for server in (*self.gateways(), self.fake):
            with contextlib.suppress(AttributeError):
                server.stop()
        self.results["gc"] = [json.loads(path.read_text()) for path in sorted((self.work / "gc").glob("gc-*.json"))]
        self.results["phases"] = self.phases
        self.results["pulse_log"] = self.log_problems()

    def log_problems(self) -> list[dict]:
        """Pulse's own warnings and errors (its JSON log lines), counted by message, with their phases."""
        found: dict[tuple, dict] = {}
        for path in sorted((self.work / "logs").glob("pulse_*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # uvicorn's own plain lines
                if record.get("level") not in ("WARNING", "ERROR", "CRITICAL"):
                    continue
                message = re.sub(r"req_[0-9a-f]+", "req_*", str(record.get("message")))[:200]
                key = (path.stem, record["level"], record.get("logger", ""), message)
                entry = found.setdefault(key, {"count": 0, "phases": []})
                entry["count"] += 1
                at = time.mktime(time.strptime(record["time"][:19], "%Y-%m-%d %H:%M:%S"))  # logging's local time
                phase = next((p["name"] for p in self.phases if p["start"] - 1 <= at <= p["end"] + 1), "between phases")
                if phase not in entry["phases"]:
                    entry["phases"].append(phase)
        return [dict(zip(("log", "level", "logger", "message"), key, strict=True)) | v for key, v in found.items()]

    # ---- the figures --------------------------------------------------------------------

    def fake_throughput(self) -> None:
        with self.phase("fake upstream, direct throughput"):
            # wrk on core 0 here, so the fake has core 1 to itself: its own ceiling.
            self.results["fake_direct"] = self.measure(self.direct, lambda: self.wrk(self.direct, 50, 5, cores="0"))

    def rounds(self, name: str, targets: list[Server], run: Callable[[Server], dict]) -> list[dict]:
        """`run` on each target, round after round, the order flipped every round."""
        runs = []
        with self.phase(name):
            for round_no in range(self.args.rounds):
                for server in alternate(targets, round_no):
                    runs.append(self.measure(server, lambda s=server: run(s)) | {"round": round_no})
        return runs

    def throughput(self) -> None:
        self.results["throughput"] = self.rounds(
            "throughput, 0 ms upstream, wrk 50 connections",
            [self.pulse1, self.litellm, self.pulse2],
            lambda server: self.wrk(server, 50, self.args.seconds),
        )

    def latency(self) -> None:
        self.results["latency"] = self.rounds(
            "latency, one request at a time",
            [self.direct, self.pulse1, self.litellm],
            lambda server: self.wrk(server, 1, 5),
        )

    def ttft(self) -> None:
        body = json.dumps(STREAM_BODY)
        self.results["ttft"] = self.rounds(
            "streaming, time to first token, one at a time",
            [self.direct, self.pulse1, self.litellm],
            lambda s: self.client(
                "streams.py", "ttft", s.chat_url, "--auth", s.auth, "--body", body, "--samples", "200"
            ),
        )

    def open_loop(self) -> None:
        """Each point in rounds, like the closed-loop figures: at 1,000 req/s the worker is near the limit
        of its core, and one 10 s run's p99 moved between 17 and 54 ms here. LiteLLM only in the first
        round: it is far past saturation at every point (its runs end in timeouts), so more rounds of it
        would only add minutes."""
        runs = []
        for delay_ms, rate, seconds in self.args.open_loop:
            stack.configure_fake(self.fake, delay_ms=delay_ms)
            with self.phase(f"open loop, {delay_ms / 1000:g} s upstream, {rate} req/s"):
                for round_no in range(self.args.rounds):
                    targets = [self.direct, self.pulse1] + [self.litellm] * (round_no == 0)
                    for server in alternate(targets, len(runs)):
                        args = [server.chat_url, "--rate", str(rate), "--seconds", str(seconds)]
                        args += ["--auth", server.auth, "--body", json.dumps(BODY)]
                        args += ["--expected-s", str(delay_ms / 1000), "--timeout-s", str(delay_ms / 1000 + 10)]
                        result = self.measure(server, lambda a=args: self.client("openloop.py", *a))
                        runs.append(result | {"delay_ms": delay_ms, "round": round_no})
        stack.configure_fake(self.fake, delay_ms=0)
        self.results["open_loop"] = runs

    def held_streams(self) -> None:
        runs, count = [], self.args.streams
        stack.configure_fake(self.fake, delay_ms=0, chunks=20, chunk_interval_ms=500)  # each stream lasts ~10 s
        args = ["--body", json.dumps(STREAM_BODY), "--count", str(count), "--timeout-s", "90"]
        for server in (self.pulse1, self.pulse2, self.litellm):
            with self.phase(f"{count} concurrent streams, {server.name}"):
                runs.append(self.measure(server, lambda s=server: self.hold(s, args)))
        stack.configure_fake(self.fake, chunks=8, chunk_interval_ms=0)
        self.results["streams"] = runs

    def hold(self, server: Server, args: list[str]) -> dict:
        """Streams held open by bench/streams.py while this samples each worker's RSS every 100 ms."""
        idle = server.rss_mb()
        command = [PYTHON, str(stack.BENCH / "streams.py"), "hold", server.chat_url, "--auth", server.auth, *args]
        client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        peak = list(idle)
        while client.poll() is None:
            peak = [max(p, now) for p, now in zip(peak, server.rss_mb(), strict=False)]
            time.sleep(0.1)
        result = json.loads(client.stdout.read()) if client.stdout else {}
        return result | {"idle_rss_mb": idle, "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk throughput run")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="one round and short open-loop runs (a smoke test)")
    parser.add_argument("--out", type=Path, help="default bench/results/latest.md (--quick: var/bench/<time>/)")
    args = parser.parse_args()
    open_loop_seconds = 3 if args.quick else 10
    args.open_loop = [(1000, r, open_loop_seconds) for r in (200, 400, 1000)] + [(10000, 200, open_loop_seconds + 5)]
    if args.quick:
        args.rounds, args.seconds, args.streams = 1, 3, 500
    os.sched_setaffinity(0, {int(LOAD_CORES)})  # children inherit it unless started under their own taskset

    work = stack.ROOT / "var" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    if args.out is None:
        args.out = work / "report.md" if args.quick else stack.BENCH / "results" / "latest.md"
    stack.hold_bench_lock()  # before the clock starts: waiting for another run is not part of this one
    bench, started, wall_start = Bench(args, work), time.monotonic(), time.time()
    try:
        bench.start()
        for step in (bench.fake_throughput, bench.throughput, bench.latency, bench.ttft, bench.open_loop):
            step()
        bench.held_streams()
        bench.results["interference"] = stack.foreign_changes(bench.fake, wall_start)
    finally:
        bench.stop()
    bench.results["total_s"] = round(time.monotonic() - started)
    bench.results["versions"] = report.versions()
    (work / "results.json").write_text(json.dumps(bench.results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.render(bench.results, args))
    print(f"wrote {args.out} (raw results: {work / 'results.json'}) in {bench.results['total_s']} s")


if __name__ == "__main__":
    main()
