"""Rate limits and monthly caps through the gateway: 429s with headers, shared across processes, never overspent."""

import asyncio
import os
import subprocess
import sys
import tempfile
from decimal import Decimal

import httpx
import pytest

from billing.models import BudgetPeriod, UsageRecord, UserLimits
from providers.models import ModelRoute
from tests.helpers import MESSAGES, ROOT, post


@pytest.mark.django_db(transaction=True)
def test_rate_limited_requests_get_429_with_headers_on_chat_and_drf(gateway, live_key, fake_providers, settings):
    settings.RATE_LIMIT = (2, 60.0)
    first = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    assert httpx.get(gateway + "/v1/models", headers={"Authorization": f"Bearer {live_key}"}).status_code == 200

    chat = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})
    models = httpx.get(gateway + "/v1/models", headers={"Authorization": f"Bearer {live_key}"})

    for response in (chat, models):
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(response.headers["Retry-After"]) >= 59
        assert response.headers["X-RateLimit-Remaining"] == "0"
    assert fake_providers["openai"].calls == 1


@pytest.mark.django_db(transaction=True)
def test_a_per_user_limit_set_in_the_admin_applies_at_once(
    gateway, live_key, fake_providers, django_user_model, settings
):
    settings.RATE_LIMIT = (100, 60.0)
    UserLimits.objects.create(
        user=django_user_model.objects.get(username="live-user"), rate_limit_requests=1, rate_limit_window_s=30
    )
    assert post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES}).status_code == 200
    refused = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Limit"] == "1"


def _manage(env, *args) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def test_two_gateway_processes_share_one_limit_through_redis(redis_url):
    var_dir = tempfile.mkdtemp(prefix="pulse-two-workers-")
    env = {
        **os.environ,
        "PULSE_VAR_DIR": var_dir,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": "5/60s",
        "DATABASE_URL": f"sqlite:///{var_dir}/db.sqlite3",
        "LOG_LEVEL": "WARNING",
    }
    _manage(env, "migrate", "--noinput", "-v", "0")
    key = _manage(env, "create_api_key", "shared").strip().splitlines()[-1]
    servers = []
    try:
        for port in (_free_port(), _free_port()):
            servers.append(
                (
                    port,
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "pulse.asgi:application",
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                        ],
                        cwd=ROOT,
                        env=env,
                    ),
                )
            )
        statuses = asyncio.run(_alternate([port for port, _ in servers], key, 10))
    finally:
        for _, server in servers:
            server.terminate()
            server.wait(timeout=10)
    assert sorted(statuses) == [200] * 5 + [429] * 5


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _alternate(ports: list[int], key: str, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=5) as client:
        for port in ports:  # wait until both answer
            for _ in range(200):
                try:
                    await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        responses = [
            await client.get(f"http://127.0.0.1:{ports[i % 2]}/v1/models", headers={"Authorization": f"Bearer {key}"})
            for i in range(count)
        ]
    return [r.status_code for r in responses]


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_requests_never_overspend_a_budget_with_room_for_ten(
    gateway, live_key, fake_providers, django_user_model
):
    route = ModelRoute.objects.get(name="gpt-4o")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 92}], "max_tokens": 100}
    # Worst case per request: (92 chars + 16 framing) input and 100 output tokens = 208 tokens.
    worst = (Decimal(108) * route.input_usd_per_mtok + Decimal(100) * route.output_usd_per_mtok) / 1_000_000
    cap = worst * 10
    UserLimits.objects.create(user=django_user_model.objects.get(username="live-user"), monthly_spend_cap_usd=cap)
    fake_providers["openai"].reply("fine", input_tokens=108, output_tokens=100)  # each costs its worst case
    fake_providers["openai"].delay(0.5, times=50)  # all fifty hold their reservation at once

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {live_key}"}) as client:
            return await asyncio.gather(*(client.post(gateway + "/v1/chat/complete", json=body) for _ in range(50)))

    responses = asyncio.run(fire())

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert refused.headers["x-should-retry"] == "false"
    spent = sum(r.cost_usd for r in UsageRecord.objects.all())
    assert spent <= cap
    budget = BudgetPeriod.objects.get()
    assert budget.spent_usd == spent and budget.reserved_e8_usd == 0
