"""What metering and limits add to one chat request, step by step, on the configured stores.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pulse_bench REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/metering_bench.py [--iterations 2000]

Times, one at a time on one event loop as the chat consumer runs them: API-key
authentication (warm), the rate-limit script, the budget reservation (a user with a
cap), and the ledger write with and without settling a reservation. The database
named in DATABASE_URL is migrated and written to: do not point it at real data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pulse.settings")
os.environ.setdefault("RATE_LIMIT", "100000000/60s")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from billing.budget import Amounts, budget_reserve  # noqa: E402
from billing.ledger import UsageEvent, aledger_record_usage  # noqa: E402
from billing.ratelimit import rate_limiter  # noqa: E402
from core.caps import Caps  # noqa: E402
from gateway.auth import aauthenticate_key  # noqa: E402
from gateway.keys import api_key_create  # noqa: E402


async def timed(step, iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
    return samples


def event(user_id: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"bench_{uuid.uuid4().hex}",
        user_id=user_id,
        api_key_id=None,
        model="gpt-4o",
        status="succeeded",
        provider="openai",
        input_tokens=12,
        output_tokens=30,
        cost_usd=Decimal("0.000330"),
    )


async def run(iterations: int, user_id: int, raw_key: str) -> None:
    caps = Caps(spend_usd=Decimal("1000000"))
    reserve = database_sync_to_async(budget_reserve)
    want = Amounts(Decimal("0.001"), 100)

    async def reserve_and_settle():
        hold = await reserve(user_id=user_id, caps=caps, want=want)
        await aledger_record_usage(event(user_id), hold)

    steps = {
        "auth (warm key)": lambda: aauthenticate_key(raw_key),
        "rate limit": lambda: rate_limiter.acquire(f"bench:{user_id}", 10**8, 60),
        "ledger write (no cap)": lambda: aledger_record_usage(event(user_id)),
        "budget reserve": lambda: reserve(user_id=user_id, caps=caps, want=want),
        "reserve + ledger write with settle (capped user)": reserve_and_settle,
    }
    print(f"database: {settings.DATABASES['default']['ENGINE']}, redis: {settings.REDIS_URL or 'none'}")
    for name, step in steps.items():
        await timed(step, 50)  # warm-up
        samples = sorted(await timed(step, iterations))
        print(
            f"{name:50s} median {statistics.median(samples) * 1000:6.3f} ms   "
            f"p99 {samples[int(len(samples) * 0.99)] * 1000:6.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-{uuid.uuid4().hex[:8]}")
    _, raw_key = api_key_create(user=user)
    asyncio.run(run(args.iterations, user.pk, raw_key))


if __name__ == "__main__":
    main()
