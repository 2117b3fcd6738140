"""The benchmark's arithmetic (bench/report.py, bench/openloop.py): what `make bench` concludes from
its runs. The runs themselves need wrk, LiteLLM and two quiet cores, so they are not tests; the verdicts
drawn from them are."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import openloop  # noqa: E402
import report  # noqa: E402
from report import DIRECT, LITELLM, PULSE, PULSE2  # noqa: E402


def closed(target: str, round_no: int, rps: float, cores: float, p50: float = 1.0, p99: float = 2.0) -> dict:
    return {"target": target, "round": round_no, "rps": rps, "gateway_cores": cores, "p50_ms": p50, "p99_ms": p99}


def open_run(target: str, round_no: int, p99_ms: float | None, errors: int = 0, achieved: float = 1000.0) -> dict:
    return {
        "target": target,
        "round": round_no,
        "delay_ms": 1000,
        "target_rate": 1000.0,
        "achieved_rate": achieved,
        "errors": errors,
        "p99_ms": p99_ms,
    }


def results(open_loop: list[dict]) -> dict:
    throughput = [closed(PULSE, r, 2000, 1.0) for r in range(3)] + [closed(LITELLM, r, 100, 1.0) for r in range(3)]
    throughput += [closed(PULSE2, r, 3000, 1.5) for r in range(3)]
    latency = [closed(DIRECT, 0, 0, 0, 0.01, 0.05), closed(PULSE, 0, 0, 0, 1.5, 3.0), closed(LITELLM, 0, 0, 0, 9, 12)]
    ttft = [{"target": t, "round": 0, "ttft_p50_ms": v} for t, v in ((DIRECT, 0.1), (PULSE, 1.0), (LITELLM, 10))]
    stream = {"count": 2000, "peak_open": 2000, "peak_rss_mb": [150.0]}
    streams = [stream | {"target": PULSE}, stream | {"target": PULSE2, "peak_rss_mb": [120.0, 125.0]}]
    streams.append(stream | {"target": LITELLM, "peak_rss_mb": [900.0]})
    return {
        "throughput": throughput,
        "latency": latency,
        "ttft": ttft,
        "open_loop": open_loop,
        "streams": streams,
        "gc": [],
        "phases": [],
    }


def row(rows: list[tuple], starts: str) -> tuple:
    return next(r for r in rows if r[0].startswith(starts))


def test_open_loop_point_is_the_median_over_rounds_of_pulse_minus_the_fake_in_the_same_round():
    runs = [open_run(DIRECT, r, 1005.0) for r in range(3)]
    runs += [open_run(PULSE, 0, 1075.0), open_run(PULSE, 1, 1045.0), open_run(PULSE, 2, 1025.0)]  # +70, +40, +20
    runs.append(open_run(LITELLM, 0, 10005.0, errors=900, achieved=50.0))  # the first round only
    figure, pulse, litellm, _, verdict = row(report.summary_rows(results(runs)), "open loop, 1 s upstream")

    assert pulse == "1,000 (1,000–1,000); 40.0 (20.0–70.0); 0 errors"
    assert litellm == "50; 9,000.0; 900 errors"
    assert verdict == "**met**"  # the median, not the worst round


def test_open_loop_point_is_not_met_with_any_error_or_a_round_without_an_answer():
    runs = [open_run(DIRECT, r, 1005.0) for r in range(2)]
    with_error = [*runs, open_run(PULSE, 0, 1010.0), open_run(PULSE, 1, 1010.0, errors=1)]
    assert row(report.summary_rows(results(with_error)), "open loop")[4] == "**not met**"
    unanswered = [*runs, open_run(PULSE, 0, 1010.0), open_run(PULSE, 1, None, errors=1000, achieved=0.0)]
    assert row(report.summary_rows(results(unanswered)), "open loop")[4] == "**not met**"


def test_throughput_ratio_and_two_worker_context():
    rows = report.summary_rows(results([open_run(DIRECT, 0, 1000.0), open_run(PULSE, 0, 1001.0)]))

    assert row(rows, "throughput")[4] == "20.0x (20.0x–20.0x): **not met**"
    assert row(rows, "2 workers vs 1")[1:] == ("1.50x (1.50x–1.50x)", "", ">= 1.8x", "**not met**")
    # Each side served 2,000 requests per CPU-second; the two workers got 1.5 cores.
    assert row(rows, "2 workers: cores")[1] == "1.50 (1.50–1.50) cores; 1.00x (1.00x–1.00x)"


def test_openloop_gives_the_p99_of_each_second_of_the_schedule():
    start = 100.0
    second_0 = [("ok", 1.001, start + i / 100) for i in range(99)] + [("ok", 1.200, start + 0.99)]
    second_1 = [("ok", 1.002, start + 1 + i / 100) for i in range(100)]
    timeouts = [("timeout", 11.0, start + 1.5)] * 5
    results = second_0 + second_1 + timeouts
    assert openloop.p99_by_second(results, start) == [1.200, 1.002]  # a timeout is not an answer

    latencies = sorted(latency for outcome, latency, _ in results if outcome == "ok")
    raw = {"count": 205, "ok": 200, "errors": 5, "wall_s": 3.2, "latencies_s": latencies}
    summary = openloop.summarize(raw | {"p99_s_by_second": [1.200, 1.002]}, rate=100, seconds=2, expected_s=1.0)

    assert summary["p99_added_ms_by_second"] == [200.0, 2.0]
    assert summary["worst_second_p99_added_ms"] == 200.0  # the run's p99 hides that second
    assert summary["p99_added_ms"] == pytest.approx(2.0)
