"""Start, watch and stop what bench/run_all.py measures: the fake upstream, Pulse, the LiteLLM proxy.

Each server is a child process pinned with taskset; `Server` reads its worker processes' CPU time
and resident memory from /proc, so a run can say how much CPU each side used.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
LITELLM_BIN = BENCH / ".litellm-venv" / "bin"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def is_worker(pid: int) -> bool:
    """uvicorn's spawned workers, not multiprocessing's resource tracker beside them."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process) since boot."""
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + sum(rest)) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024
    except OSError:
        return 0.0


@dataclass
class Server:
    name: str
    base_url: str
    chat_url: str
    process: subprocess.Popen
    auth: str = ""  # the Authorization header's value
    settings: dict[str, str] = field(default_factory=dict)  # what the report says was on

    def workers(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers when it has a supervisor, else itself."""
        return [pid for pid in children(self.process.pid) if is_worker(pid)] or [self.process.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in {self.process.pid, *children(self.process.pid)})

    def rss_mb(self) -> list[float]:
        return [rss_mb(pid) for pid in self.workers()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_http(url: str, seconds: float = 90.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {seconds:.0f} s")


def spawn(command: list[str], cores: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(["taskset", "-c", cores, *command], cwd=ROOT, env=env, stdout=out, stderr=out)


# ---- the fake upstream ----------------------------------------------------------------------


def start_fake(cores: str, logs: Path) -> Server:
    port = free_port()
    command = [PYTHON, str(BENCH / "fake_upstream.py"), "--port", str(port)]
    process = spawn(command, cores, dict(os.environ), logs / "fake_upstream.log")
    base = f"http://127.0.0.1:{port}"
    server = Server("fake upstream", base, base + "/v1/chat/completions", process)
    wait_http(base + "/healthz")
    return server


def configure_fake(fake: Server, **settings: float) -> None:
    query = "&".join(f"{name}={value}" for name, value in settings.items())
    request = urllib.request.Request(f"{fake.base_url}/_bench/config?{query}", method="POST")
    urllib.request.urlopen(request, timeout=5).close()


# ---- Pulse ----------------------------------------------------------------------------------

POSTGRES = "postgres://postgres@127.0.0.1:5432"
PULSE_DATABASE = "pulse_bench"
# Redis database of the bench's own: rate-limit windows, circuit-breaker state and snapshot versions
# are shared through Redis, so a Pulse of somebody else's on the same database would steer this one.
PULSE_REDIS = "redis://127.0.0.1:6379/12"
LOCK_KEY = 0x70756C7365  # pg_advisory_lock key: "pulse"


_lock: Any = None  # the connection that holds the lock, open until this process ends


def hold_bench_lock(wait_s: float = 1800.0) -> None:
    """One benchmark at a time on this machine. Two at once would share the bench database (the second's
    sync_providers repoints the first's Pulse at its own fake upstream) and fight over two cores; so
    whoever prepares Pulse (bench/run_all.py, bench/ws_bench.py) takes a PostgreSQL advisory lock and
    keeps it until its process ends, and the next one waits for it."""
    global _lock
    if _lock is not None:
        return
    import psycopg

    connection = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True)
    deadline = time.monotonic() + wait_s
    while not connection.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise SystemExit(f"another benchmark held the lock for {wait_s:.0f} s; giving up")
        print("another benchmark is running; waiting for it to end", flush=True)
        time.sleep(10)
    _lock = connection


def ensure_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def foreign_changes(fake: Server, started: float) -> list[str]:
    """What someone else did to the bench database during the run (it voids the figures)."""
    import psycopg

    problems = []
    with psycopg.connect(f"{POSTGRES}/{PULSE_DATABASE}", autocommit=True) as connection:
        urls = [row[0] for row in connection.execute("SELECT base_url FROM providers_provider WHERE kind = 'openai'")]
        if urls != [fake.base_url + "/v1"]:
            problems.append(f"the openai provider's base URL changed to {urls} (another sync_providers)")
        keys = connection.execute(
            "SELECT count(*) FROM gateway_apikey WHERE created_at > to_timestamp(%s)", [started]
        ).fetchone()
        if keys and keys[0] > 1:
            problems.append(f"{keys[0] - 1} more API keys were created in the bench database during the run")
    return problems


def pulse_env(fake: Server, var_dir: Path, gc_dir: Path) -> dict[str, str]:
    """Pulse's settings as a production deployment has them, pointed at the fake upstream."""
    keep = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL", "_API_TOKEN"))}
    return keep | {
        "DATABASE_URL": f"{POSTGRES}/{PULSE_DATABASE}",
        "REDIS_URL": PULSE_REDIS,
        "OPENAI_API_KEY": "sk-bench-upstream",
        "OPENAI_BASE_URL": fake.base_url + "/v1",
        "RATE_LIMIT": "1000000000/60s",
        "MODERATION_BLOCKLIST": "forbidden-term,credit card dump,make a bomb,ssn list,leaked password",
        "SECRET_KEY": "bench-secret-key-not-for-production-use-0123456789",
        "DEBUG": "false",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        "PULSE_VAR_DIR": str(var_dir),
        "BENCH_GC_DIR": str(gc_dir),
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def prepare_pulse(env: dict[str, str]) -> str:
    """Migrate the bench database, sync providers from the environment, and return a new API key."""
    hold_bench_lock()
    ensure_database(PULSE_DATABASE)
    subprocess.run(["redis-cli", "-u", PULSE_REDIS, "FLUSHDB"], check=True, capture_output=True)  # no stale breaker
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "sync_providers")
    return manage(env, "create_api_key", "bench-gateway").strip().splitlines()[-1]


def start_pulse(env: dict[str, str], key: str, workers: int, cores: str, logs: Path) -> Server:
    port = free_port()
    command = [PYTHON, "-m", "uvicorn", "bench.pulse_app:application", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = spawn(command, cores, env, logs / f"pulse_{workers}w.log")
    base = f"http://127.0.0.1:{port}"
    server = Server(f"Pulse, {workers} worker{'s' * (workers > 1)}", base, base + "/v1/chat/completions", process)
    server.auth = f"Bearer {key}"
    server.settings = {"command": " ".join(["taskset", "-c", cores, "python", *command[1:]])}
    wait_http(base + "/readyz")
    while len(server.workers()) < workers:
        time.sleep(0.2)
    return server


# ---- LiteLLM proxy --------------------------------------------------------------------------

LITELLM_MASTER_KEY = "sk-litellm-bench-master"


def start_litellm(fake: Server, cores: str, logs: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "BENCH_UPSTREAM_BASE": fake.base_url + "/v1",
        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet at start
        "LITELLM_LOG": "ERROR",
    }
    config = BENCH / "litellm" / "config.yaml"
    command = [str(LITELLM_BIN / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1", "--log_config", str(BENCH / "litellm" / "log_config.json")]
    process = spawn(command, cores, env, logs / "litellm.log")
    base = f"http://127.0.0.1:{port}"
    server = Server("LiteLLM proxy, 1 worker", base, base + "/v1/chat/completions", process)
    server.auth = f"Bearer {LITELLM_MASTER_KEY}"
    server.settings = {"command": " ".join(["taskset", "-c", cores, "litellm", *command[1:]])}
    wait_http(base + "/health/liveliness", seconds=180)
    return server
