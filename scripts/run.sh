#!/usr/bin/env bash
# `make run`: prepare the database, then serve ASGI on $PORT with a Celery worker beside it.
# Ctrl-C (or either process dying) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8081}

"$BIN/python" manage.py migrate --noinput
"$BIN/python" manage.py sync_providers

trap 'trap - EXIT INT TERM; kill 0 2>/dev/null; wait' EXIT INT TERM
# -B: the beat beside the worker runs the reaper (jobs whose worker died are handed back).
"$BIN/celery" -A pulse worker -B --loglevel INFO --concurrency 2 &
"$BIN/uvicorn" pulse.asgi:application --host "${HOST:-127.0.0.1}" --port "$PORT" \
    --loop uvloop --http httptools --no-access-log &
wait -n
