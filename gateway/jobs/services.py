"""Submitting a job through the pipeline's front half, and waiting for one (Prefer: wait)."""

from __future__ import annotations

import asyncio
import time
import uuid

from channels.db import database_sync_to_async

from core.principal import Principal
from gateway.jobs import lifecycle
from gateway.jobs.requests import JobOperation, check_for_model, job_request
from gateway.jobs.storage import save_input
from gateway.models import Job
from gateway.pipeline import Prepared, RequestContext, plan_candidates, prepare, record_failure
from providers.routing import arouting_table

WAIT_STEP_S = 0.25


async def submit(operation: JobOperation, principal: Principal, endpoint: str) -> Job:
    """Check the request against the model, hold the worst case, moderate the prompt, then save the
    job and hand it to the workers. A refused request makes no job (a blocked prompt still has its
    ledger row, as in chat)."""
    job_id = uuid.uuid4()
    candidates = plan_candidates(operation, await arouting_table())
    check_for_model(operation, candidates[0])
    prepared = await prepare(RequestContext(principal, str(job_id), endpoint), operation)
    try:
        return await database_sync_to_async(_save)(job_id, principal, prepared, endpoint)
    except BaseException as error:
        await record_failure(prepared.meter, error)  # gives the hold back
        raise


def _save(job_id: uuid.UUID, principal: Principal, prepared: Prepared[JobOperation], endpoint: str) -> Job:
    operation = prepared.operation  # as moderated
    request = job_request(operation)
    if operation.image is not None:
        request["image"] = save_input(principal.user_id, str(job_id), operation.image)
    job = Job(
        id=job_id,
        user_id=principal.user_id,
        api_key_id=principal.key_id,
        kind=Job.Kind(operation.modality),
        model=operation.model,
        request=request,
        fallbacks=list(operation.fallbacks),
        endpoint=endpoint,
    )
    reservation, prepared.meter.reservation = prepared.meter.reservation, None  # the job holds it now
    return lifecycle.create_job(job, reservation)


async def wait_for(job: Job, seconds: float) -> Job:
    """The job once it has finished, or as it is when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while not job.is_finished and time.monotonic() < deadline:
        await asyncio.sleep(min(WAIT_STEP_S, max(deadline - time.monotonic(), 0)))
        job = await Job.objects.aget(pk=job.pk)
    return job


def preferred_wait(prefer: str, longest: float) -> float | None:
    """N from a `Prefer: wait=N` header (RFC 7240), at most `longest`; None when absent or malformed."""
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return min(float(value.strip()), longest)
    return None
