#!/usr/bin/env bash
# `make bench`, first step: what the benchmark needs besides Pulse's own venv. Each step is skipped
# when already done: wrk (Debian package), PostgreSQL and Redis on 127.0.0.1 (as .ci/run starts them),
# and LiteLLM proxy, pinned, in a virtual environment of its own (bench/.litellm-venv, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
LITELLM_VERSION=1.108.7  # the newest whose [proxy] extra installs from the registry here
HTTPTOOLS_VERSION=0.9.0  # the same HTTP parser as Pulse's uvicorn
VENV=bench/.litellm-venv

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

pg_isready -q -h 127.0.0.1 -p 5432 \
  || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 \
  || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
  sleep 1
done

installed() {
  "$VENV/bin/python" - "$LITELLM_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
assert m.version("litellm") == sys.argv[1]
for name in ("fastapi", "uvicorn", "uvloop", "httptools", "litellm-proxy-extras"):  # the proxy extra's
    m.version(name)
PY
}
if ! installed; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION" "httptools==$HTTPTOOLS_VERSION"
fi
