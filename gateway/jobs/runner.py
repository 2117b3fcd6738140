"""What a worker does with a job it holds (gateway.jobs.lifecycle leased it), through the same
pipeline as chat: the candidates loop with fallback and the breaker, and the meter.

An image job is one pipeline run: the provider's images are copied into Pulse's storage, then the
job is billed and finished in one transaction. A video job is a chain of short tasks: start the
first step (the candidates loop picks the provider), then poll its operation every JOB_POLL_S
seconds, start each extension step from the video before it, and when the last step is done copy
the video and bill the seconds delivered. No task holds a worker slot while a provider works.

When every provider failed with a retryable error, the job is tried again after a backoff, up to
JOB_MAX_RETRIES times; a poll that fails retryably is retried likewise. Anything else ends the job
(failed, at zero cost: nothing was delivered).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from billing.ledger import UsageEvent
from billing.models import UsageRecord
from core.errors import CONTENT_POLICY_VIOLATION
from core.principal import Principal
from gateway.errors import ApiError
from gateway.jobs import lifecycle
from gateway.jobs.queue import enqueue
from gateway.jobs.storage import StoredFile, delete_files, load_input, store_output
from gateway.models import Job
from gateway.pipeline import (
    Attempt,
    ImageGeneration,
    Meter,
    Prepared,
    RequestContext,
    VideoGeneration,
    finish,
    plan_candidates,
    record_failure,
    try_candidates,
)
from providers.clients import client_for
from providers.clients.base import MediaOutput, ProviderConfig, ProviderError, Usage, VideoOperation
from providers.routing import Candidate, Prices, Route, arouting_table

logger = logging.getLogger(__name__)
Ledger = UsageRecord.Status

# Every candidate failed for a reason that may pass (overload, timeouts, 5xx): worth a later retry.
RETRYABLE_OUTCOMES = frozenset({"upstream_timeout", "providers_unavailable", "upstream_error"})
CLIENT_ERRORS = frozenset({CONTENT_POLICY_VIOLATION, "model_not_found", "upstream_invalid_request", "invalid_value"})


def backoff_s(attempt: int) -> float:
    """JOB_RETRY_BACKOFF_S doubled per attempt, with jitter so retries of many jobs do not align."""
    return settings.JOB_RETRY_BACKOFF_S * 2**attempt * random.uniform(0.8, 1.2)


def error_type(code: str) -> str:
    return "invalid_request_error" if code in CLIENT_ERRORS else "api_error"


def principal_of(job: Job) -> Principal:
    """Who the job acts for, as the meter needs it (the hold was made when the job was created)."""
    return Principal(0, "", "", job.user_id, "", False, None)


class Keeper:
    """Copies a provider's outputs into Pulse's storage before the job is billed (URLs upstream
    expire); the files of a job that does not finish are deleted."""

    def __init__(self, job: Job):
        self.job = job
        self.files: list[StoredFile] = []

    async def __call__(self, provider: ProviderConfig, outputs: list[MediaOutput]) -> list[MediaOutput]:
        client = client_for(provider)
        limit = settings.JOB_MAX_OUTPUT_BYTES
        try:
            contents = await asyncio.gather(*(client.download(output, max_bytes=limit) for output in outputs))
        except ProviderError as error:
            raise ApiError(
                f"Could not copy the provider's output: {error.message}",
                status=502,
                type="api_error",
                code="upstream_error" if error.retryable else error.code,
            ) from error
        for output, data in zip(outputs, contents, strict=True):
            stored = await database_sync_to_async(store_output)(
                self.job.user_id, str(self.job.pk), len(self.files), output.content_type, data
            )
            self.files.append(stored)
        return [MediaOutput(f.content_type, url=f.name) for f in self.files]

    async def discard(self) -> None:
        if self.files:
            await database_sync_to_async(delete_files)([f.name for f in self.files])
            self.files = []


class JobMeter(Meter):
    """A job's meter: the hold lives in the job row (made when the job was created), and the ledger
    row is written together with the job's final state. A failure that a later retry may cure
    (every provider overloaded, say) is not recorded while the job has retries left."""

    def __init__(self, job: Job, operation: Any, candidates: list[Candidate], kept: Sequence[StoredFile] = ()):
        super().__init__(RequestContext(principal_of(job), str(job.pk), job.endpoint), operation, candidates)
        self.job, self.kept = job, kept
        self.error: dict[str, str] | None = None
        self.retry_later = False
        self.finished = False

    async def reserve(self) -> None:
        raise RuntimeError("a job's budget is held when the job is created")

    async def nothing_billed(
        self, status: str, error_code: str, attempts: Sequence[dict[str, Any]] = (), *, message: str = ""
    ) -> None:
        retryable = status == Ledger.FAILED and error_code in RETRYABLE_OUTCOMES
        if retryable and self.job.retries < settings.JOB_MAX_RETRIES:
            self.retry_later, self.job.attempts = True, list(attempts)
            return
        self.error = lifecycle.failure(error_code, message or error_code, error_type(error_code))
        await super().nothing_billed(status, error_code, attempts, message=message)

    async def write(self, event: UsageEvent, reservation: object) -> None:
        self.finished = await database_sync_to_async(lifecycle.finish)(str(self.job.pk), event, self.kept, self.error)


async def retry_later(job: Job, **progress: Any) -> None:
    """Every provider failed for now: hand the job back, to be tried again after a backoff."""
    logger.info("job %s: retrying in a while (retry %d)", job.pk, job.retries + 1)
    fields = {"retries": job.retries + 1, "attempts": job.attempts, **progress}
    await database_sync_to_async(lifecycle.hand_over)(job, backoff_s(job.retries), **fields)


async def fail(job: Job, code: str, message: str) -> None:
    await database_sync_to_async(lifecycle.fail)(job, code, message)


# ----------------------------------------------------------------- images
async def run_image(job: Job) -> None:
    params = job.request
    keeper = Keeper(job)
    operation = ImageGeneration(
        job.model,
        params["prompt"],
        tuple(job.fallbacks),
        count=params["count"],
        size=params.get("size"),
        aspect_ratio=params.get("aspect_ratio"),
        image=await database_sync_to_async(load_input)(params.get("image")),
        keep=keeper,
    )
    try:
        candidates = plan_candidates(operation, await arouting_table())
    except ApiError as error:  # the route was removed or disabled after the job was made
        await fail(job, error.code, error.message)
        return
    meter = JobMeter(job, operation, candidates, keeper.files)
    try:
        await finish(Prepared(operation, candidates, meter))
    except ApiError:  # what finish() raises; a provider error reached it as one
        if meter.retry_later:
            await retry_later(job)
    finally:
        if not meter.finished:
            await keeper.discard()


# ----------------------------------------------------------------- video
def video_generation(job: Job) -> VideoGeneration:
    params = job.request
    return VideoGeneration(
        job.model,
        params["prompt"],
        tuple(job.fallbacks),
        duration_s=params["duration_s"],
        aspect_ratio=params.get("aspect_ratio"),
        resolution=params.get("resolution"),
    )


async def advance_video(job: Job) -> None:
    if "operation" not in job.progress:
        await start_video(job)
    else:
        await continue_video(job)


async def start_video(job: Job) -> None:
    """The first step, through the candidates loop: the first provider that takes it serves the job."""
    operation = video_generation(job)
    operation = VideoGeneration(
        **{**operation.__dict__, "image": await database_sync_to_async(load_input)(job.request.get("image"))}
    )
    try:
        candidates = plan_candidates(operation, await arouting_table())
    except ApiError as error:
        await fail(job, error.code, error.message)
        return
    meter = JobMeter(job, operation, candidates)
    try:
        settled = await try_candidates(candidates, operation)
    except ApiError as error:  # every candidate failed, or none would take it
        await record_failure(meter, error)
        if meter.retry_later:
            await retry_later(job)
        return
    started, candidate = settled.result, settled.candidate
    progress = {
        "steps": list(started.steps),
        "step": 0,
        "operation": started.operation.as_dict(),
        "delivered": "0",
        # The price in force when the job started is the one it is billed at.
        "usd_per_video_second": str(candidate.route.prices.usd_per_video_second),
        "poll_errors": 0,
    }
    handed = await database_sync_to_async(lifecycle.hand_over)(
        job,
        settings.JOB_POLL_S,
        progress=progress,
        route=candidate.route.name,
        provider=candidate.provider.name,
        upstream_model=candidate.upstream_model,
        attempts=[a.as_dict() for a in settled.attempts],
    )
    if not handed:  # canceled while the provider was starting it
        await client_for(candidate.provider).cancel_video(started.operation)


def candidate_of(job: Job, route: Route) -> Candidate:
    """The candidate that took the job, at the price in force when it started."""
    prices = Prices(usd_per_video_second=Decimal(job.progress["usd_per_video_second"]))
    return Candidate(replace(route, prices=prices), job.upstream_model)


async def continue_video(job: Job) -> None:
    """Poll the running step; start the next one from the video it made; deliver after the last."""
    route = (await arouting_table()).match(job.route)
    if route is None:
        await fail(job, "route_removed", f"The route {job.route!r} was removed while the job ran.")
        return
    candidate = candidate_of(job, route)
    client = client_for(candidate.provider)
    progress = dict(job.progress)
    current = VideoOperation.from_dict(progress["operation"])
    if not current.done:
        try:
            current = await client.poll_video(current)
        except ProviderError as error:
            await step_failed(job, progress, error)
            return
        if not current.done:
            progress["operation"] = current.as_dict()
            await database_sync_to_async(lifecycle.hand_over)(job, settings.JOB_POLL_S, progress=progress)
            return
        # Done: kept, so a failure starting the next step resumes from here rather than redoing this one.
        progress["operation"] = current.as_dict()
        progress["delivered"] = str(Decimal(progress["delivered"]) + current.usage.video_seconds)
        if not await database_sync_to_async(lifecycle.checkpoint)(job, progress=progress):
            return
    step = progress["step"] + 1
    if step < len(progress["steps"]):
        request = video_generation(job).step_request(progress["steps"][step], extends=current.video)
        try:
            started = await client.start_video(request, model=candidate.upstream_model)
        except ProviderError as error:
            await step_failed(job, progress, error)
            return
        progress.update(step=step, operation=started.as_dict())
        await database_sync_to_async(lifecycle.hand_over)(job, settings.JOB_POLL_S, progress=progress)
        return
    await deliver_video(job, candidate, current, Decimal(progress["delivered"]), progress)


async def retried_step(job: Job, progress: dict[str, Any]) -> bool:
    """Hand the step back to be tried again after a backoff, unless it has had its retries."""
    errors = progress.get("poll_errors", 0)
    if errors >= settings.JOB_MAX_RETRIES:
        return False
    progress["poll_errors"] = errors + 1
    await database_sync_to_async(lifecycle.hand_over)(job, backoff_s(errors), progress=progress)
    return True


async def step_failed(job: Job, progress: dict[str, Any], error: ProviderError) -> None:
    if error.retryable and await retried_step(job, progress):
        return
    status = Ledger.BLOCKED if error.code == CONTENT_POLICY_VIOLATION else Ledger.FAILED
    event = lifecycle.ended_event(job, status, error.code)
    detail = lifecycle.failure(error.code, f"{error.provider}: {error.message}", error_type(error.code))
    await database_sync_to_async(lifecycle.finish)(str(job.pk), event, (), detail)


async def deliver_video(
    job: Job, candidate: Candidate, last: VideoOperation, seconds: Decimal, progress: dict[str, Any]
) -> None:
    """Copy the finished video into storage, then bill the seconds every step delivered and finish."""
    keeper = Keeper(job)
    meter = JobMeter(job, video_generation(job), [candidate], keeper.files)
    try:
        await keeper(candidate.provider, last.outputs)
        attempts = [Attempt(**a) for a in job.attempts]
        await meter.bill(Ledger.SUCCEEDED, candidate, Usage(video_seconds=seconds), attempts)
    except ApiError as error:
        if error.code == "upstream_error" and progress.get("poll_errors", 0) < settings.JOB_MAX_RETRIES:
            progress["poll_errors"] = progress.get("poll_errors", 0) + 1
            await database_sync_to_async(lifecycle.hand_over)(
                job, backoff_s(progress["poll_errors"] - 1), progress=progress
            )
        else:
            await fail(job, error.code, error.message)
    finally:
        if not meter.finished:
            await keeper.discard()


async def cancel_upstream(job: Job) -> None:
    """Stop a canceled job's operation at the provider (where the provider allows it)."""
    route = (await arouting_table()).match(job.route) if job.route else None
    operation = job.progress.get("operation")
    if route is None or not operation:
        return
    await client_for(candidate_of(job, route).provider).cancel_video(VideoOperation.from_dict(operation))


# ----------------------------------------------------------------- one task
async def advance(job_id: str, ticket: str) -> None:
    """Do the job's next step if this message is the one it waits for and no live worker holds it."""
    claimed = await database_sync_to_async(lifecycle.claim)(job_id, ticket)
    job = claimed.job
    if job is None:
        if claimed.retry_in_s is not None:  # another worker holds it: look again when its lease ends
            await database_sync_to_async(enqueue)(job_id, ticket, claimed.retry_in_s)
        return
    if job.takeovers > settings.JOB_MAX_TAKEOVERS:
        await fail(job, "worker_lost", f"The workers running this job stopped {job.takeovers} times.")
        return
    try:
        if job.kind == Job.Kind.IMAGE:
            await run_image(job)
        else:
            await advance_video(job)
    except Exception:
        logger.exception("job %s failed unexpectedly", job_id)
        await fail(job, "internal_error", "The job failed unexpectedly.")
