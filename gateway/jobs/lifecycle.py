"""A job's life, kept in its row: created (with its budget hold), leased to one worker at a time,
finished exactly once.

Celery delivers a task at least once: with acks_late a message whose worker dies is delivered
again, and the reaper re-sends work nobody is doing. Exactly-once comes from the row:
- ticket: each message names the step it is for; a job moves to a new ticket when it hands the
  next step on (a poll later), so a duplicate of an older message finds nothing to do;
- lease: a worker takes the job with one conditional UPDATE and holds it until lease_until; a
  second delivery meanwhile comes back when the lease ends, and takes over only if the first
  worker is gone (counted; a job that keeps losing its workers fails as worker_lost);
- finish: the ledger row (request id = the job id, unique) and the job's final state are written
  in one transaction under the row lock, so a job canceled meanwhile stays canceled, and its late
  result is thrown away, never billed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.budget import Amounts, Reservation
from billing.ledger import UsageEvent, ledger_record_usage
from billing.models import UsageRecord
from gateway.jobs.queue import enqueue, enqueue_cancel, notify
from gateway.jobs.storage import StoredFile
from gateway.models import Job, JobOutput

Status = Job.Status
LEDGER_TO_JOB = {
    UsageRecord.Status.SUCCEEDED: Status.SUCCEEDED,
    UsageRecord.Status.FAILED: Status.FAILED,
    UsageRecord.Status.BLOCKED: Status.FAILED,
    UsageRecord.Status.CANCELED: Status.CANCELED,
}


def new_ticket() -> str:
    return secrets.token_hex(8)


# ----------------------------------------------------------------- the budget hold, as JSON
def hold_json(reservation: Reservation | None) -> dict[str, Any] | None:
    if reservation is None:
        return None
    amounts = reservation.amounts
    return {
        "user_id": reservation.user_id,
        "period": reservation.period.isoformat(),
        "cost_usd": str(amounts.cost_usd),
        "tokens": amounts.tokens,
        "images": amounts.images,
        "video_seconds": str(amounts.video_seconds),
    }


def hold_of(data: dict[str, Any] | None) -> Reservation | None:
    if not data:
        return None
    amounts = Amounts(Decimal(data["cost_usd"]), data["tokens"], data["images"], Decimal(data["video_seconds"]))
    return Reservation(data["user_id"], date.fromisoformat(data["period"]), amounts)


# ----------------------------------------------------------------- creating
def create_job(job: Job, hold: Reservation | None) -> Job:
    """Save a new job with the budget it holds, and hand it to the workers once it has committed."""
    job.ticket = new_ticket()
    job.hold = hold_json(hold)
    job.stale_after = timezone.now() + timedelta(seconds=settings.JOB_STALE_GRACE_S)
    with transaction.atomic():
        job.save(force_insert=True)
        transaction.on_commit(lambda: enqueue(str(job.id), job.ticket))
    return job


# ----------------------------------------------------------------- leasing
@dataclass(frozen=True)
class Claim:
    """The job, leased to this worker; or None and, when another worker holds it, when to look again."""

    job: Job | None
    retry_in_s: float | None = None


def claim(job_id: str, ticket: str) -> Claim:
    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.JOB_LEASE_S)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    # One UPDATE: two deliveries of the same message cannot both take the job. Every SET sees the
    # row as it was, so an expired lease (not a released one) counts as a takeover.
    taken = Job.objects.filter(free, pk=job_id, ticket=ticket, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.RUNNING,
        lease_until=lease_until,
        stale_after=lease_until + timedelta(seconds=settings.JOB_STALE_GRACE_S),
        started_at=Coalesce(F("started_at"), Value(now)),
        takeovers=F("takeovers") + Case(When(lease_until__isnull=False, then=Value(1)), default=Value(0)),
    )
    job = Job.objects.filter(pk=job_id).first()
    if taken and job is not None:
        if job.started_at == now:  # its first start: tell the owner it runs (a takeover changes nothing)
            user_id = job.user_id
            transaction.on_commit(lambda: notify(user_id, {"id": job_id, "status": Status.RUNNING}))
        return Claim(job)
    if job is not None and not job.is_finished and job.ticket == ticket and job.lease_until is not None:
        return Claim(None, max((job.lease_until - now).total_seconds(), 0) + 1)  # another worker has it
    return Claim(None)  # finished, canceled, or a stale message


def checkpoint(job: Job, **fields: Any) -> bool:
    """Save progress while holding the job; False when it was canceled (or taken over) meanwhile."""
    saved = Job.objects.filter(pk=job.pk, status=Status.RUNNING, ticket=job.ticket).update(**fields)
    for name, value in fields.items():
        setattr(job, name, value)
    return bool(saved)


def hand_over(job: Job, after_s: float, **fields: Any) -> bool:
    """Release the job and send its next step (a poll, a retry) in after_s seconds, under a new ticket."""
    ticket = new_ticket()
    due = timezone.now() + timedelta(seconds=after_s + settings.JOB_STALE_GRACE_S)
    if not checkpoint(job, ticket=ticket, lease_until=None, stale_after=due, **fields):
        return False
    enqueue(str(job.pk), ticket, countdown=after_s)
    return True


# ----------------------------------------------------------------- finishing
def failure(code: str, message: str, type: str = "api_error") -> dict[str, str]:
    return {"type": type, "code": code, "message": message}


def finish(
    job_id: str, event: UsageEvent, outputs: Sequence[StoredFile] = (), error: dict[str, str] | None = None
) -> bool:
    """Write the job's ledger row (settling its hold) and its final state, in one transaction. False,
    and nothing written, when the job had already finished (canceled meanwhile, say)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return False
        ledger_record_usage(replace(event, api_key_id=job.api_key_id), hold_of(job.hold))
        JobOutput.objects.bulk_create(
            JobOutput(job=job, index=index, file=f.name, content_type=f.content_type, bytes=f.bytes)
            for index, f in enumerate(outputs)
        )
        status = LEDGER_TO_JOB[UsageRecord.Status(event.status)]
        Job.objects.filter(pk=job_id).update(
            status=status,
            finished_at=timezone.now(),
            route=event.route or job.route,
            provider=event.provider or job.provider,
            upstream_model=event.upstream_model or job.upstream_model,
            attempts=event.attempts or job.attempts,
            images=event.images,
            video_seconds=event.video_seconds,
            cost_usd=event.cost_usd,
            error=error,
            hold=None,
            lease_until=None,
            stale_after=None,
        )
        user_id = job.user_id
        transaction.on_commit(lambda: notify(user_id, {"id": job_id, "status": status}))
    return True


def ended_event(job: Job, status: str, error_code: str) -> UsageEvent:
    """The ledger row of a job that produced nothing billable."""
    return UsageEvent(
        request_id=str(job.pk),
        user_id=job.user_id,
        api_key_id=job.api_key_id,
        model=job.model,
        status=status,
        endpoint=job.endpoint,
        route=job.route,
        provider=job.provider,
        upstream_model=job.upstream_model,
        modality=job.kind,
        error_code=error_code,
        attempts=job.attempts,
    )


def fail(job: Job, code: str, message: str) -> bool:
    return finish(str(job.pk), ended_event(job, UsageRecord.Status.FAILED, code), error=failure(code, message))


def cancel(job: Job) -> bool:
    """Cancel a job that has not finished; False when it already had (or did meanwhile). The provider's
    operation, if one is running, is canceled upstream by a worker."""
    if job.is_finished:
        return False
    event = ended_event(job, UsageRecord.Status.CANCELED, "canceled")
    if not finish(str(job.pk), event, error=failure("canceled", "The job was canceled.", "canceled")):
        return False
    if job.progress.get("operation"):
        job_id = str(job.pk)
        transaction.on_commit(lambda: enqueue_cancel(job_id))
    return True


# ----------------------------------------------------------------- the reaper
def reap() -> int:
    """Hand back to the workers every unfinished job with no progress by its stale_after (its message
    was lost, or its worker died without the broker noticing): the lease decides who runs it."""
    now = timezone.now()
    stuck = list(
        Job.objects.filter(status__in=[Status.QUEUED, Status.RUNNING], stale_after__lt=now).values_list("pk", "ticket")
    )
    grace = timedelta(seconds=settings.JOB_STALE_GRACE_S)
    for job_id, ticket in stuck:
        Job.objects.filter(pk=job_id, ticket=ticket).update(stale_after=now + grace)
        enqueue(str(job_id), ticket)
    return len(stuck)
