"""Helpers shared by test modules: test modules import from here (and tests.fakes, tests.live),
never from one another. Fixtures live in tests/conftest.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import openai

from billing.models import UsageRecord

ROOT = Path(__file__).resolve().parent.parent  # the project: where manage.py is

# --- one request through the ASGI application in this process, as uvicorn sends it --------------


async def asgi_post(application, path: str, body: bytes, key: str) -> list[dict]:
    """POST body to path; returns the ASGI messages the application sent (start, then body parts).
    Run in the caller's context, as uvicorn runs a request: Channels' HttpCommunicator runs the
    application in an empty one, and a database session opened there outlived the suite (PostgreSQL
    refused to drop the test database at teardown)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    answered = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop()
        await answered.wait()  # the client stays until the answer ends
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await application(scope, receive, send)
    return sent


# --- chat over real HTTP, against the live gateway ---------------------------------------------
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to me"}]


def post(gateway: str, key: str, body: dict, path: str = "/v1/chat/complete", **kwargs) -> httpx.Response:
    return httpx.post(gateway + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10, **kwargs)


def sse_events(response: httpx.Response) -> list[tuple[str | None, str]]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event"), lines["data"]))
    return events


def openai_client(gateway: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0, timeout=10)


# --- the usage ledger ---------------------------------------------------------------------------
_request_ids = itertools.count(1)


def ledger_row(
    user,
    at: dt.datetime,
    *,
    model: str = "gpt-4o",
    provider: str = "openai",
    cost: str = "0.001",
    input_tokens: int = 10,
    output_tokens: int = 5,
    **fields,
) -> UsageRecord:
    """One ledger row, written directly (as the gateway's metering would)."""
    fields.setdefault("status", UsageRecord.Status.SUCCEEDED)
    fields.setdefault("request_id", f"req_test_{next(_request_ids)}")
    return UsageRecord.objects.create(
        created_at=at,
        user=user,
        model=model,
        provider=provider,
        cost_usd=Decimal(cost),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        **fields,
    )


def at(text: str) -> dt.datetime:
    """An ISO 8601 time without zone, as UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --- a fresh process ----------------------------------------------------------------------------
def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run code in a fresh Python with Django set up from the given environment."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pulse.settings", **env}
    script = "import django; django.setup()\n" + code
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
