"""bench/results/latest.md from bench/run_all.py's results: figures beside their targets, then every run,
what was on, and the exact versions."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable
from typing import Any

import stack

PULSE = "Pulse, 1 worker"
PULSE2 = "Pulse, 2 workers"
LITELLM = "LiteLLM proxy, 1 worker"
DIRECT = "fake upstream, direct"
PULSE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "OPENAI_BASE_URL", "RATE_LIMIT", "MODERATION_BLOCKLIST")
PULSE_SETTINGS += ("LOG_LEVEL", "DEBUG")
START_PHASE = "start servers"
CPU_FIELDS = ("gateway_cores", "fake_cores", "loadgen_cores", "other_cores")
PULSE_PACKAGES = ("Django", "channels", "uvicorn", "uvloop", "httptools", "aiohttp", "psycopg", "psycopg-pool", "redis")
LITELLM_PACKAGES = ("litellm", "fastapi", "uvicorn", "uvloop", "httptools", "httpx", "aiohttp", "openai")


# ---- versions ---------------------------------------------------------------------------------


def command_output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"unavailable ({error})"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def versions() -> dict[str, str]:
    found = {"Python (Pulse)": platform.python_version()}
    found |= {f"{name} (Pulse)": importlib.metadata.version(name) for name in PULSE_PACKAGES}
    script = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    litellm_python = [str(stack.LITELLM_BIN / "python"), "-c", script, *LITELLM_PACKAGES]
    litellm = json.loads(command_output(litellm_python))
    found |= {f"{name} (LiteLLM venv)": version for name, version in litellm.items()}
    found["wrk"] = command_output(["wrk", "-v"]).split(" [")[0]
    found["PostgreSQL server"] = command_output(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"]
    )
    info = subprocess.run(["redis-cli", "-h", "127.0.0.1", "INFO", "server"], capture_output=True, text=True).stdout
    found["Redis server"] = next(
        (line.split(":")[1].strip() for line in info.splitlines() if "redis_version" in line), "?"
    )
    commit = command_output(["git", "-C", str(stack.ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(stack.ROOT), "status", "--porcelain"], capture_output=True, text=True)
    found["Pulse commit"] = commit + (" (plus uncommitted changes in the work tree)" if dirty.stdout.strip() else "")
    cpu = next(line for line in open("/proc/cpuinfo") if line.startswith("model name")).split(":")[1].strip()
    found["machine"] = f"{cpu}, {os.cpu_count()} cores"
    found["kernel"] = platform.release()
    return found


# ---- arithmetic -------------------------------------------------------------------------------


def by_round(runs: list[dict], target: str) -> dict[int, dict]:
    return {run["round"]: run for run in runs if run["target"] == target}


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def spread(values: Iterable[float], fmt: str = "{:,.0f}") -> str:
    values = sorted(values)
    if not values:
        return "n/a"
    text = fmt.format(statistics.median(values))
    return text if len(values) == 1 else f"{text} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def ratios(runs: list[dict], top: str, bottom: str, key: str) -> list[float]:
    tops, bottoms = by_round(runs, top), by_round(runs, bottom)
    return [tops[r][key] / bottoms[r][key] for r in tops if r in bottoms and bottoms[r][key]]


def differences(runs: list[dict], target: str, baseline: str, key: str) -> list[float]:
    targets, baselines = by_round(runs, target), by_round(runs, baseline)
    return [targets[r][key] - baselines[r][key] for r in targets if r in baselines]


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


# ---- the report -------------------------------------------------------------------------------


def summary_rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, Pulse, LiteLLM, target, verdict) for every figure the issue asks for."""
    tp, lat, ttft = results["throughput"], results["latency"], results["ttft"]
    rows = []
    vs_litellm = ratios(tp, PULSE, LITELLM, "rps")
    rows.append(
        (
            "throughput, 0 ms upstream, wrk 50 connections (req/s)",
            f"1 worker {spread(r['rps'] for r in tp if r['target'] == PULSE)}; "
            f"2 workers {spread(r['rps'] for r in tp if r['target'] == PULSE2)}",
            spread(r["rps"] for r in tp if r["target"] == LITELLM),
            "Pulse 1 worker >= 25x LiteLLM",
            f"{spread(vs_litellm, '{:.1f}x')}: {verdict(median(vs_litellm) >= 25)}",
        )
    )
    per_cpu = [dict(r, rps_per_cpu=r["rps"] / r["gateway_cores"]) for r in tp if r.get("gateway_cores")]
    per_cpu_ratio = ratios(per_cpu, PULSE, LITELLM, "rps_per_cpu")
    rows.append(
        (
            "the same, per CPU-second the gateway process used (req/CPU-s; robust to other load)",
            spread(r["rps_per_cpu"] for r in per_cpu if r["target"] == PULSE),
            spread(r["rps_per_cpu"] for r in per_cpu if r["target"] == LITELLM),
            "(no target; context)",
            f"{spread(per_cpu_ratio, '{:.1f}x')}",
        )
    )
    two = ratios(tp, PULSE2, PULSE, "rps")
    rows.append(("2 workers vs 1 (same run)", f"{spread(two, '{:.2f}x')}", "", ">= 1.8x", verdict(median(two) >= 1.8)))
    # Why two workers fall short on this machine: the load generator, the fake upstream, PostgreSQL and
    # Redis run on the same two cores, so the workers get what those leave them.
    two_cores = [r["gateway_cores"] for r in tp if r["target"] == PULSE2 and r.get("gateway_cores")]
    two_per_cpu = ratios(per_cpu, PULSE2, PULSE, "rps_per_cpu")
    rows.append(
        (
            "2 workers: cores they got (of the machine's 2, shared with the load generator, fake upstream, "
            "PostgreSQL and Redis); req per CPU-second vs 1 worker",
            f"{spread(two_cores, '{:.2f}')} cores; {spread(two_per_cpu, '{:.2f}x')}",
            "",
            "(no target; context)",
            "",
        )
    )
    for p, limit in (("p50", 1.0), ("p99", 2.0)):
        pulse = differences(lat, PULSE, DIRECT, f"{p}_ms")
        litellm = differences(lat, LITELLM, DIRECT, f"{p}_ms")
        rows.append(
            (
                f"added latency, one request at a time, {p} (ms, vs the fake directly)",
                spread(pulse, "{:.2f}"),
                spread(litellm, "{:.2f}"),
                f"< {limit:g} ms",
                verdict(median(pulse) < limit),
            )
        )
    pulse_ttft = differences(ttft, PULSE, DIRECT, "ttft_p50_ms")
    rows.append(
        (
            "streaming: added time to first token, p50 (ms)",
            spread(pulse_ttft, "{:.2f}"),
            spread(differences(ttft, LITELLM, DIRECT, "ttft_p50_ms"), "{:.2f}"),
            "< 1 ms",
            verdict(median(pulse_ttft) < 1.0),
        )
    )
    for point in open_loop_points(results["open_loop"]):
        pulse_runs = [run for run in point if run["target"] == PULSE]
        added = p99_added(point, PULSE)  # a round with no answer gives none
        errors = sum(run["errors"] for run in pulse_runs)
        rows.append(
            (
                f"open loop, {pulse_runs[0]['delay_ms'] / 1000:g} s upstream, {pulse_runs[0]['target_rate']:g} req/s: "
                "achieved req/s; p99 added (ms); errors",
                open_loop_cell(point, PULSE),
                open_loop_cell(point, LITELLM),
                "p99 added < 50 ms, no errors",
                verdict(len(added) == len(pulse_runs) and median(added) < 50 and errors == 0),
            )
        )
    streams = {run["target"]: run for run in results["streams"]}
    one, two_workers = streams[PULSE], streams[PULSE2]
    rows.append(
        (
            f"RSS per worker at {one['count']:,} concurrent streams (MB, peak)",
            f"1 worker {max(one['peak_rss_mb']):.0f} (peak {one['peak_open']:,} open); "
            f"2 workers {' + '.join(f'{v:.0f}' for v in two_workers['peak_rss_mb'])}",
            f"{max(streams[LITELLM]['peak_rss_mb']):.0f} (peak {streams[LITELLM]['peak_open']:,} open)",
            "< 200 MB",
            verdict(max(one["peak_rss_mb"] + two_workers["peak_rss_mb"]) < 200 and one["peak_open"] == one["count"]),
        )
    )
    # Under load: after start-up, with requests in flight (the pacer's full collections wait for none).
    under_load = [p for p in long_gc_pauses(results) if p["phase"] != START_PHASE and p.get("in_flight", 1)]
    worst = max((p["ms"] for p in under_load), default=0.0)
    working = [p for p in under_load if p.get("cpu_ms", p["ms"]) > 10]
    rows.append(
        (
            "GC pauses over 10 ms under load (all Pulse workers, after start-up, requests in flight; wall clock, "
            "and those where the collector itself used over 10 ms of CPU)",
            f"{len(under_load)} (longest {worst:.1f} ms); {len(working)} over 10 ms of CPU",
            "not measured",
            "none",
            verdict(not under_load),
        )
    )
    return rows


def long_gc_pauses(results: dict) -> list[dict]:
    """Every GC pause over 10 ms, with its worker's pid and the phase it fell in."""
    pauses = []
    for worker in results["gc"]:
        for pause in worker["long_pauses"]:
            during = (p["name"] for p in results["phases"] if p["start"] <= pause["at"] <= p["end"])
            pauses.append(pause | {"pid": worker["pid"], "phase": next(during, "between phases")})
    return pauses


def open_loop_points(runs: list[dict]) -> list[list[dict]]:
    """The runs of each (delay, rate) point of the open loop: every target, every round."""
    points: dict[tuple, list[dict]] = {}
    for run in runs:
        points.setdefault((run["delay_ms"], run["target_rate"]), []).append(run)
    return list(points.values())


def p99_added(runs: list[dict], target: str) -> list[float]:
    """The target's p99 over the fake's called directly, per round in which both had answers to time."""
    answered = [run for run in runs if run["p99_ms"] is not None]
    return differences(answered, target, DIRECT, "p99_ms")


def open_loop_cell(runs: list[dict], target: str) -> str:
    """Achieved rate; p99 added over the fake called directly in the same round (median and range over
    rounds); errors in all."""
    mine = [run for run in runs if run["target"] == target]
    achieved = spread(run["achieved_rate"] for run in mine)
    errors = sum(run["errors"] for run in mine)
    return f"{achieved}; {spread(p99_added(runs, target), '{:,.1f}')}; {errors:,} errors"


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_tables(results: dict) -> list[str]:
    out = ["## Every run", "", "Rounds alternate the targets (order flipped every round). CPU in cores over the"]
    out += ["run's wall time: the gateway's own processes, the fake upstream, the load generator, and"]
    out += ["everything else on the machine (`other_cores`: PostgreSQL, Redis, and other people's work).", ""]
    fields = ["round", "target", "rps", "errors", "p50_ms", "p99_ms", *CPU_FIELDS]
    for title, key in (("Closed loop, wrk, 50 connections, 0 ms upstream", "throughput"),):
        out += [f"### {title}", "", table(fields, ([r.get(f, "") for f in fields] for r in results[key])), ""]
    out += ["### One request at a time (wrk, 1 connection, 5 s)", ""]
    out += [table(fields, ([r.get(f, "") for f in fields] for r in results["latency"])), ""]
    fields = ["round", "target", "ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms", *CPU_FIELDS]
    out += ["### Streaming, one at a time, 200 streams per run", ""]
    out += [table(fields, ([r.get(f, "") for f in fields] for r in results["ttft"])), ""]
    fields = ["delay_ms", "round", "target", "target_rate", "achieved_rate", "ok", "errors", "outcomes"]
    fields += ["p50_added_ms", "p99_added_ms", "p99.9_added_ms", "worst_second_p99_added_ms", "max_ms"]
    fields += ["client_start_lag_ms", *CPU_FIELDS]
    out += ["### Open loop (bench/openloop.py); `*_added_ms` = latency minus the upstream's delay", ""]
    out += [table(fields, ([r.get(f, "") for f in fields] for r in results["open_loop"])), ""]
    fields = ["target", "count", "peak_open", "outcomes", "seconds", "idle_rss_mb", "peak_rss_mb", *CPU_FIELDS]
    out += ["### Streams held open at once (20 chunks 500 ms apart: ~10 s each); RSS per worker, MB", ""]
    rounded = (
        {**r, "idle_rss_mb": [round(v) for v in r["idle_rss_mb"]], "seconds": round(r["seconds"], 1)}
        for r in results["streams"]
    )
    out += [table(fields, ([r.get(f, "") for f in fields] for r in rounded)), ""]
    return out


def gc_section(results: dict) -> list[str]:
    out = ["## Garbage collection in the Pulse workers (gc.callbacks, bench/pulse_app.py)", ""]
    names = {pid: name for name, pids in results["pids"].items() for pid in pids}
    rows = [
        (names.get(w["pid"], w["pid"]), w["pid"], " / ".join(map(str, w["collections"])))
        + (f"{w['total_ms']:.0f}", f"{w['max_ms']:.1f}", len(w["long_pauses"]))
        + (w.get("tracked_objects_at_shutdown", "?"), w.get("frozen_objects", "?"))
        for w in results["gc"]
    ]
    headers = ["worker", "pid", "collections gen 0 / 1 / 2", "total ms", "longest ms", "over 10 ms"]
    out += [table([*headers, "tracked objects at shutdown", "frozen objects"], rows), "", "Pauses over 10 ms:", ""]
    for p in long_gc_pauses(results):
        line = f"- pid {p['pid']}: {p['ms']} ms ({p.get('cpu_ms', '?')} ms CPU), generation {p['generation']}"
        line += f", {p['collected']:,} objects freed, {p.get('in_flight', '?')} requests in flight"
        out.append(f"{line}, during: {p['phase']}")
    return out + [""]


def log_section(results: dict) -> list[str]:
    out = ["## Pulse's own warnings and errors (its log, by message)", ""]
    problems = results.get("pulse_log") or []
    if not problems:
        return [*out, "None.", ""]
    rows = [(p["log"], p["level"], p["logger"], p["message"], p["count"], "; ".join(p["phases"])) for p in problems]
    return [*out, table(["log", "level", "logger", "message", "count", "during"], rows), ""]


def render(results: dict, args: argparse.Namespace) -> str:
    fake = results["fake_direct"]
    out = [
        "# Pulse vs LiteLLM proxy: `make bench`",
        "",
        f"Run {results['started']}, {results['total_s']} s in all (`bench/run_all.py --rounds {args.rounds}"
        f"{' --quick' if args.quick else ''}`). Absolute numbers move from run to run on this shared 2-core",
        "machine; the ratios are taken within one round, targets alternating. Cells are the median over",
        "rounds with the range in brackets.",
        "",
        f"The fake upstream alone, on core 1 with wrk on core 0 (50 connections): **{fake['rps']:,.0f} req/s**,",
        f"p50 {fake['p50_ms']:.2f} ms, {fake['errors']} errors; it is not the bottleneck (see `fake_cores` below for",
        "what it used during each run).",
        "",
        table(["figure", "Pulse (full pipeline)", "LiteLLM proxy", "target", "result"], summary_rows(results)),
        "",
    ]
    if results.get("interference"):
        warning = "; ".join(results["interference"])
        out[2:2] = [f"**Void: something else used the bench database during this run: {warning}.**", ""]
    out += run_tables(results) + gc_section(results) + log_section(results) + setup_section(results)
    out += ["## Versions", ""]
    out += [table(["what", "version"], results["versions"].items()), ""]
    return "\n".join(out)


def setup_section(results: dict) -> list[str]:
    env = results["pulse_env"]
    return [
        "## What ran, and what was on",
        "",
        "- **Cores**: core 0 runs the gateway under test (Pulse's one worker, or LiteLLM's one worker), both",
        "  `taskset -c 0`. Core 1 runs the fake upstream, the load generators (wrk, bench/openloop.py,",
        "  bench/streams.py) and the runner. Pulse's two workers (`taskset -c 0,1`) share both cores with them.",
        "  PostgreSQL and Redis are the machine's own servers, not pinned: their CPU is not in `gateway_cores`.",
        "- **Fake upstream** (bench/fake_upstream.py): raw asyncio on uvloop with httptools, one fixed chat",
        "  completion (or an SSE stream of 8 content chunks, all at once unless a chunk interval is set).",
        "  Delay 0 ms, 1 s or 10 s by its `/_bench/config` switch; for the held streams, 20 chunks 500 ms apart.",
        f"- **Request body** (identical for every target): `{json.dumps(results['body'])}`; streaming adds",
        '  `"stream": true`.',
        "- **Pulse**, as deployed: PostgreSQL (`manage.py migrate` on a bench database), Redis, one API key",
        "  made by `create_api_key`, providers from the environment by `sync_providers`, every request",
        "  authenticated by key, rate limited (Redis script), budget-checked, moderated (blocklist and PII",
        "  hooks, the defaults) and written to the ledger (one PostgreSQL row) before the answer completes;",
        "  uvicorn with uvloop and httptools, no access log, as scripts/run.sh serves it (no Celery worker:",
        "  chat does not use it). The app is `bench.pulse_app:application`: pulse.asgi's, plus the GC probe.",
        f"  Settings: {', '.join(f'`{k}={v}`' for k, v in env.items())}.",
        *(f"  - `{results['commands'][name]}`" for name in (PULSE, PULSE2)),
        "- **LiteLLM proxy**: its own virtual environment (bench/.litellm-venv, `litellm[proxy]==1.108.7` plus",
        "  httptools so its uvicorn parses HTTP like Pulse's); config bench/litellm/config.yaml: gpt-4o as an",
        "  `openai/` deployment on the fake upstream, master key auth only, **no database** (so no virtual",
        "  keys, spend logs, budgets or per-key rate limits), no cache, no callbacks, no guardrails, no",
        "  moderation; uvicorn access log off (bench/litellm/log_config.json), `LITELLM_LOG=ERROR`, local price",
        "  map. It does far less per request than Pulse does here.",
        f"  - `{results['commands'][LITELLM]}`",
        "- **Load**: wrk (one thread, Lua script bench/wrk/chat.lua) for closed loop; bench/openloop.py",
        "  (aiohttp, uvloop) starts requests on a fixed schedule and times each from when it was due; its",
        "  timeout is the upstream delay + 10 s. The Python clients run with their garbage collector off, so",
        "  that none of its pauses is timed as the gateway's. Open-loop `p99 added` in the summary is the",
        "  gateway's p99 minus the fake's own p99 at the same rate (the client's own delay cancels out); the",
        "  raw p99 minus the upstream delay is in the table above. Achieved rate: answers per second of",
        "  schedule, stretched when the last answer came late.",
        "",
    ]
