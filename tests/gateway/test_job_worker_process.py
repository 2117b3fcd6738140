"""A real Celery worker process against Redis and PostgreSQL, as production runs it: it takes jobs
from the broker, and when it is killed mid-job, another worker takes the job over and finishes it
(billed once). Needs the services, as CI's second pass has them."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest
from django.db import connection

from billing.models import UsageRecord
from gateway.jobs import lifecycle
from gateway.models import Job
from tests.helpers import ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="a worker process needs a shared broker and database (REDIS_URL, PostgreSQL DATABASE_URL)",
    ),
]
LEASE_S = 2


def start_worker(media_root: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "JOB_LEASE_S": str(LEASE_S),
        "JOB_STALE_GRACE_S": "0",
        "MEDIA_ROOT": media_root,
    }
    command = [str(ROOT / ".venv/bin/celery"), "-A", "pulse", "worker", "--concurrency", "1", "--loglevel", "WARNING"]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_a_killed_worker_process_loses_no_job(gateway, live_key, fake_providers, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    gemini = fake_providers["gemini"]
    gemini.image_delay_s = 5  # long enough to kill the worker mid-call
    first = start_worker(str(tmp_path))
    second = None
    try:
        answer = httpx.post(
            f"{gateway}/v1/images/generate",
            json={"model": "nano-banana", "prompt": "A lighthouse", "count": 1},
            headers={"Authorization": f"Bearer {live_key}"},
            timeout=10,
        )
        assert answer.status_code == 202
        job_id = answer.json()["id"]
        wait_for(lambda: Job.objects.get(pk=job_id).status == "running" and gemini.calls > 0)
        os.killpg(first.pid, signal.SIGKILL)  # the whole worker: nothing tells the broker
        first.wait(timeout=10)
        gemini.image_delay_s = 0
        second = start_worker(str(tmp_path))
        time.sleep(LEASE_S + 0.5)  # the dead worker's lease runs out ...
        assert lifecycle.reap() == 1  # ... and the reaper hands the job back
        wait_for(lambda: Job.objects.get(pk=job_id).is_finished)
        job = Job.objects.get(pk=job_id)
        assert job.status == "succeeded" and job.takeovers == 1 and job.outputs.count() == 1
        assert UsageRecord.objects.filter(request_id=job_id).count() == 1
        download = httpx.get(f"{gateway}/v1/jobs/{job_id}/outputs/0", headers={"Authorization": f"Bearer {live_key}"})
        assert download.status_code == 200
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=20)
