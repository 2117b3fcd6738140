"""Handing a job to the workers, and telling its owner what changed.

Tasks are sent by name, so the web process needs none of the worker code; they are sent only
once the job row has committed (a worker never looks for a row that is not there yet).
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from celery import current_app
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

RUN_JOB = "gateway.jobs.tasks.run_job"
CANCEL_UPSTREAM = "gateway.jobs.tasks.cancel_upstream"


def enqueue(job_id: str, ticket: str, countdown: float = 0) -> None:
    current_app.send_task(RUN_JOB, args=[job_id, ticket], countdown=countdown or None)


def enqueue_cancel(job_id: str) -> None:
    current_app.send_task(CANCEL_UPSTREAM, args=[job_id])


def owner_group(user_id: int) -> str:
    """The channel-layer group of one user's job updates (the WebSocket joins it)."""
    return f"jobs.user.{user_id}"


def notify(user_id: int, update: dict[str, object]) -> None:
    """Push a job's new status to its owner's open sockets; best effort, never the job's failure."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(owner_group(user_id), {"type": "job.update", "job": update})
    except Exception:
        logger.warning("could not push a job update", exc_info=True)
