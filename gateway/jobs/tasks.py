"""The Celery tasks. Each takes ids only and is safe to run twice (gateway.jobs.lifecycle): acks_late
with reject_on_worker_lost puts the message of a killed worker back, and the lease decides who runs.
A task is one short step; a provider still working is polled by a later task, never waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from core.shutdown import run_shutdown_hooks
from gateway.jobs import lifecycle, runner
from gateway.models import Job

logger = logging.getLogger(__name__)

# A task's soft limit ends it cleanly (the job fails as timed out) before its lease runs out.
SOFT_LIMIT_S = max(settings.JOB_LEASE_S - 30, 30)


def run_async(step: Callable[[], Awaitable[None]]) -> None:
    """One task's coroutine on a fresh event loop, closing the loop's pools (HTTP, database) after."""

    async def bounded() -> None:
        try:
            await step()
        finally:
            await run_shutdown_hooks()

    close_old_connections()
    try:
        asyncio.run(bounded())
    finally:
        close_old_connections()


# A step whose database call failed for a reason that passes (SQLite's "locked", a PostgreSQL failover,
# a dropped connection) is run again, as its own message would be: the lease makes a second run safe.
# Without this the message was spent and the job waited for the reaper (JOB_STALE_GRACE_S and more).
DATABASE_RETRIES = 5


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_LIMIT_S,
    time_limit=SOFT_LIMIT_S + 20,
)
def run_job(self: Task, job_id: str, ticket: str) -> None:
    try:
        run_async(lambda: runner.advance(job_id, ticket))
    except (OperationalError, InterfaceError) as error:
        # Celery logs the retry, and past max_retries raises the error itself.
        countdown = runner.backoff_s(self.request.retries)
        raise self.retry(exc=error, countdown=countdown, max_retries=DATABASE_RETRIES) from error
    except SoftTimeLimitExceeded:
        job = Job.objects.filter(pk=job_id).first()
        if job is not None:
            lifecycle.fail(job, "job_timeout", f"A step of the job ran longer than {SOFT_LIMIT_S:.0f} seconds.")


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def cancel_upstream(job_id: str) -> None:
    job = Job.objects.filter(pk=job_id).first()
    if job is not None:
        run_async(lambda: runner.cancel_upstream(job))


@shared_task
def reap_jobs() -> int:
    return lifecycle.reap()
