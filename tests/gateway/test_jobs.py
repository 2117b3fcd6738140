"""Media jobs end to end, as a client uses them: the live gateway, a real Celery worker taking tasks
from the broker, and the fake Gemini speaking generateContent and Veo's long-running operations."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
from django.db import OperationalError

from billing.models import UsageRecord
from gateway.jobs import lifecycle
from gateway.keys import api_key_create
from gateway.models import Job
from tests.helpers import post

pytestmark = pytest.mark.django_db(transaction=True)

SUNSET = {"model": "nano-banana", "prompt": "Beautiful sunset", "count": 4}
WAVES = {"model": "veo3", "prompt": "Ocean waves", "duration_s": 15}


def create(gateway: str, key: str, body: dict, path: str = "/v1/images/generate", wait: int | None = 20):
    headers = {"Authorization": f"Bearer {key}"}
    if wait is not None:
        headers["Prefer"] = f"wait={wait}"
    return httpx.post(gateway + path, json=body, headers=headers, timeout=wait + 10 if wait else 10)


def get(gateway: str, key: str, path: str) -> httpx.Response:
    return httpx.get(gateway + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_until_finished(job_id: str, seconds: float = 20) -> Job:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {Job.objects.get(pk=job_id).status}")


def test_nano_banana_four_images_as_a_job(gateway, live_key, job_worker, fake_providers):
    answer = create(gateway, live_key, SUNSET)
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded" and job["kind"] == "image" and job["model"] == "nano-banana"
    assert job["provider"] == "gemini" and job["usage"] == {"images": 4} and job["cost_usd"] == "0.15600000"
    assert [o["content_type"] for o in job["outputs"]] == ["image/png"] * 4
    assert answer.headers["Location"] == f"/v1/jobs/{job['id']}"
    # One image per generateContent call, to the real upstream model.
    calls = [r for r in fake_providers["gemini"].requests if r.path.endswith(":generateContent")]
    assert [r.path for r in calls] == ["/v1beta/models/gemini-2.5-flash-image:generateContent"] * 4
    [row] = UsageRecord.objects.filter(request_id=job["id"])
    assert (row.status, row.images, row.cost_usd, row.modality) == ("succeeded", 4, Decimal("0.156"), "image")

    # The signed URL serves the file without a key; a tampered one is a 404.
    url = job["outputs"][0]["url"]
    image = httpx.get(url, timeout=5)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert int(job["outputs"][0]["bytes"]) == len(image.content)
    assert httpx.get(url[:-3] + "abc", timeout=5).status_code == 404


def test_jobs_are_their_owners_only(gateway, live_key, job_worker, django_user_model):
    job = create(gateway, live_key, {**SUNSET, "count": 1}).json()
    other = api_key_create(user=django_user_model.objects.create_user("other"), name="x")[1]
    assert get(gateway, other, f"/v1/jobs/{job['id']}").status_code == 404
    assert get(gateway, other, f"/v1/jobs/{job['id']}/outputs/0").status_code == 404
    assert post(gateway, other, {}, path=f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert get(gateway, other, "/v1/jobs").json()["data"] == []
    mine = get(gateway, live_key, f"/v1/jobs/{job['id']}/outputs/0")
    assert mine.status_code == 200 and mine.headers["content-type"] == "image/png"
    listed = get(gateway, live_key, "/v1/jobs?status=succeeded&kind=image").json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    assert get(gateway, live_key, "/v1/jobs?status=done").json()["error"]["param"] == "status"


def test_veo3_fifteen_seconds_is_a_generation_and_an_extension(gateway, live_key, job_worker, fake_providers):
    gemini = fake_providers["gemini"]
    gemini.video_script(polls=2)
    answer = create(gateway, live_key, WAVES, path="/v1/video/generate")
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "succeeded" and job["usage"] == {"video_seconds": "15.000"}
    assert job["cost_usd"] == "6.00000000"  # 15 s at $0.40
    starts = [r.json for r in gemini.requests if r.path.endswith(":predictLongRunning")]
    assert len(starts) == 2 and starts[0]["parameters"]["durationSeconds"] == 8
    assert "video" in starts[1]["instances"][0]  # the extension (7 s) names the video it extends
    [extended] = [v for v in gemini.videos.values() if v.extends]
    assert extended.seconds == 15
    models = {r.path.split(":")[0].split("/operations")[0] for r in gemini.requests if "/models/" in r.path}
    assert models == {"/v1beta/models/veo-3.1-generate-preview"}
    video = httpx.get(job["outputs"][0]["url"], timeout=5)
    assert video.status_code == 200 and job["outputs"][0]["content_type"] == "video/mp4"
    [row] = UsageRecord.objects.filter(request_id=job["id"])
    assert (row.status, row.video_seconds, row.cost_usd) == ("succeeded", Decimal("15"), Decimal("6"))


def test_durations_no_chain_reaches_are_refused_with_the_allowed_list(gateway, live_key, job_worker):
    answer = create(gateway, live_key, {**WAVES, "duration_s": 12}, path="/v1/video/generate")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "duration_s" and "4, 6, 8, 11, 13, 15" in error["message"]
    assert not Job.objects.exists() and not UsageRecord.objects.exists()


def test_aspect_ratios_the_model_does_not_take_are_refused(gateway, live_key, job_worker):
    answer = create(gateway, live_key, {**SUNSET, "aspect_ratio": "7:3"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "aspect_ratio"
    assert "16:9" in answer.json()["error"]["message"]


def test_without_prefer_wait_the_answer_is_202_and_the_job_finishes(gateway, live_key, job_worker):
    answer = create(gateway, live_key, {**SUNSET, "count": 2}, wait=None)
    assert answer.status_code == 202 and answer.json()["status"] in ("queued", "running")
    job = wait_until_finished(answer.json()["id"])
    assert job.status == "succeeded" and job.images == 2 and job.outputs.count() == 2


def test_a_step_whose_database_call_fails_runs_again(gateway, live_key, job_worker, monkeypatch):
    # SQLite's "table is locked" (a reader in another thread), or a PostgreSQL failover, as the worker
    # takes the job: the message must not be spent with the job left queued.
    claims = []

    def locked_once(job_id: str, ticket: str) -> lifecycle.Claim:
        claims.append(job_id)
        if len(claims) == 1:
            raise OperationalError("database table is locked: gateway_job")
        return claim(job_id, ticket)

    claim = lifecycle.claim
    monkeypatch.setattr(lifecycle, "claim", locked_once)
    answer = create(gateway, live_key, {**SUNSET, "count": 1}, wait=None)
    job = wait_until_finished(answer.json()["id"])
    assert job.status == "succeeded" and job.images == 1
    assert len(claims) == 2


def test_filtered_video_fails_at_zero_cost(gateway, live_key, job_worker, fake_providers):
    fake_providers["gemini"].video_script(polls=1, outcome="filtered")
    job = create(gateway, live_key, {**WAVES, "duration_s": 8}, path="/v1/video/generate").json()
    assert job["status"] == "failed" and job["error"]["code"] == "content_policy_violation"
    assert job["cost_usd"] == "0.00000000" and job["outputs"] == []
    [row] = UsageRecord.objects.filter(request_id=job["id"])
    assert (row.status, row.cost_usd) == ("blocked", Decimal(0))


def test_providers_down_retry_then_fail_cleanly(gateway, live_key, job_worker, fake_providers, settings):
    settings.JOB_MAX_RETRIES = 1
    fake_providers["gemini"].fail(503, times=10)
    job = create(gateway, live_key, {**SUNSET, "count": 1}).json()
    assert job["status"] == "failed" and job["error"]["code"] == "providers_unavailable"
    assert Job.objects.get(pk=job["id"]).retries == 1
    [row] = UsageRecord.objects.filter(request_id=job["id"])
    assert (row.status, row.cost_usd) == ("failed", Decimal(0))


def test_cancel_stops_a_running_video(gateway, live_key, job_worker, fake_providers):
    fake_providers["gemini"].video_script(polls=10_000)
    job = create(gateway, live_key, {**WAVES, "duration_s": 8}, path="/v1/video/generate", wait=1).json()
    assert job["status"] == "running"
    canceled = post(gateway, live_key, {}, path=f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    polls = fake_providers["gemini"].calls
    time.sleep(0.5)
    assert fake_providers["gemini"].calls <= polls + 1  # at most the poll already in flight
    assert post(gateway, live_key, {}, path=f"/v1/jobs/{job['id']}/cancel").status_code == 409
    [row] = UsageRecord.objects.filter(request_id=job["id"])
    assert (row.status, row.cost_usd) == ("canceled", Decimal(0))


def test_a_redelivered_task_neither_generates_nor_bills_again(gateway, live_key, job_worker, fake_providers):
    from gateway.jobs.tasks import run_job

    job = create(gateway, live_key, {**SUNSET, "count": 1}).json()
    calls = fake_providers["gemini"].calls
    stored = Job.objects.get(pk=job["id"])
    run_job.apply(args=[job["id"], stored.ticket])  # the same message, delivered again
    assert fake_providers["gemini"].calls == calls
    assert UsageRecord.objects.filter(request_id=job["id"]).count() == 1


def test_a_second_delivery_waits_for_the_lease(transactional_db, user):
    job = Job.objects.create(user=user, kind="image", model="m", request={}, endpoint="/x", ticket="t1")
    first = lifecycle.claim(str(job.pk), "t1")
    second = lifecycle.claim(str(job.pk), "t1")
    assert first.job is not None and second.job is None and second.retry_in_s > 0
    assert lifecycle.claim(str(job.pk), "stale").job is None


def test_a_lost_worker_is_taken_over_and_the_job_finishes(gateway, live_key, job_worker, settings):
    from django.utils import timezone

    settings.JOB_STALE_GRACE_S = 0
    answer = create(gateway, live_key, {**SUNSET, "count": 1}, wait=None).json()
    wait_until_finished(answer["id"])
    # A job whose worker died holding it: leased, past its lease, nothing in the queue.
    job = Job.objects.create(
        user_id=Job.objects.get(pk=answer["id"]).user_id,
        kind="image",
        model="nano-banana",
        request={"prompt": "A lost one", "count": 1},
        endpoint="/v1/images/generate",
        status="running",
        ticket="lost",
        lease_until=timezone.now() - timezone.timedelta(seconds=1),
        stale_after=timezone.now() - timezone.timedelta(seconds=1),
    )
    assert lifecycle.reap() == 1
    finished = wait_until_finished(str(job.pk))
    assert finished.status == "succeeded" and finished.takeovers == 1


def test_a_job_that_keeps_losing_workers_fails(transactional_db, user, settings):
    from django.utils import timezone

    past = timezone.now() - timezone.timedelta(seconds=1)
    job = Job.objects.create(
        user=user,
        kind="image",
        model="m",
        request={},
        endpoint="/x",
        status="running",
        ticket="t",
        lease_until=past,
        takeovers=settings.JOB_MAX_TAKEOVERS,
    )
    from gateway.jobs.tasks import run_job

    run_job.apply(args=[str(job.pk), "t"])
    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "worker_lost"
    assert UsageRecord.objects.get(request_id=str(job.pk)).status == "failed"


def test_a_replicate_video_is_polled_and_billed_by_the_second(gateway, live_key, job_worker, fake_providers):
    replicate = fake_providers["replicate"]
    replicate.finish_after(polls=2)
    body = {"model": "kling-v2.5", "prompt": "A fox in snow", "duration_s": 5}
    job = create(gateway, live_key, body, path="/v1/video/generate").json()
    assert job["status"] == "succeeded" and job["provider"] == "replicate", job
    assert job["usage"] == {"video_seconds": "5.000"} and job["cost_usd"] == "0.35000000"
    [prediction] = replicate.predictions
    assert prediction.model == "kwaivgi/kling-v2.5-turbo-pro" and prediction.input["duration"] == 5
    assert httpx.get(job["outputs"][0]["url"], timeout=5).status_code == 200


def test_kling_durations_are_checked_per_model(gateway, live_key, job_worker):
    body = {"model": "kling-v2.5", "prompt": "A fox", "duration_s": 7}
    error = create(gateway, live_key, body, path="/v1/video/generate").json()["error"]
    assert error["param"] == "duration_s" and "5, 10" in error["message"]


def test_canceling_a_replicate_job_cancels_the_prediction(gateway, live_key, job_worker, fake_providers):
    replicate = fake_providers["replicate"]
    replicate.finish_after(polls=10_000)
    body = {"model": "kling-v2.5", "prompt": "A fox in snow", "duration_s": 5}
    job = create(gateway, live_key, body, path="/v1/video/generate", wait=1).json()
    assert post(gateway, live_key, {}, path=f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    [prediction] = replicate.predictions
    deadline = time.monotonic() + 10
    while prediction.id not in replicate.cancels and time.monotonic() < deadline:
        time.sleep(0.05)
    assert prediction.id in replicate.cancels


def test_dall_e_3_makes_one_image_per_request(gateway, live_key, job_worker):
    from providers.models import ModelRoute

    route = ModelRoute.objects.get(name="dall-e-3")  # shipped unpriced: an admin prices it
    route.usd_per_image = Decimal("0.04")
    route.save()
    error = create(gateway, live_key, {"model": "dall-e-3", "prompt": "A cat", "count": 2}).json()["error"]
    assert error["param"] == "count" and "at most 1" in error["message"]
