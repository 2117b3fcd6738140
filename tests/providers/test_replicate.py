"""ReplicateClient against FakeReplicate (real HTTP on 127.0.0.1).

Images: one create held by `Prefer: wait`, then polls if the model outlasts it; a prediction
Pulse stops waiting for is canceled upstream. Videos: start, poll, download. Errors: RFC 7807
problems, a 429's wait read from its detail. Outputs come from a delivery host that must never
see the API token.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from core.errors import CONTENT_POLICY_VIOLATION
from core.shutdown import run_shutdown_hooks
from providers.clients import CLIENTS, ReplicateClient, client_for
from providers.clients.base import (
    ImageRequest,
    ImageSpec,
    InputImage,
    MediaOutput,
    ProviderConfig,
    ProviderError,
    Usage,
    VideoOperation,
    VideoRequest,
    VideoSpec,
)
from tests.fakes import NSFW_ERROR, FakeReplicate
from tests.fakes.openai import FAKE_PNG
from tests.fakes.replicate import FAKE_MP4, SENSITIVE_ERROR

FLUX = "black-forest-labs/flux-schnell"
FLUX_VERSION = "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e"
KLING = "kwaivgi/kling-v2.5-turbo-pro"
FOXES = ImageRequest("a red fox in the snow", count=2, aspect_ratio="16:9")
FOX_RUNS = VideoRequest("a fox runs through the snow", duration_s=5, aspect_ratio="9:16")


@pytest.fixture(scope="module")
def replicate_server() -> Iterator[FakeReplicate]:
    with FakeReplicate.start() as fake:
        yield fake


@pytest.fixture
def rep(replicate_server: FakeReplicate) -> FakeReplicate:
    replicate_server.reset()
    return replicate_server


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplicateClient, "first_poll_s", 0.01)
    monkeypatch.setattr(ReplicateClient, "max_poll_s", 0.05)


@pytest.fixture(autouse=True)
async def _close_loop_resources() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await run_shutdown_hooks()


def client_of(fake: FakeReplicate, **config: Any) -> ReplicateClient:
    provider = ProviderConfig("fake-replicate", "replicate", fake.base_url, fake.api_key)
    client = client_for(dataclasses.replace(provider, **config))
    assert isinstance(client, ReplicateClient)
    return client


async def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


def gets(fake: FakeReplicate) -> int:
    return sum(1 for received in fake.requests if received.method == "GET")


async def until(condition: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


# ---- images ----------------------------------------------------------------------------------


async def test_an_image_finished_within_the_wait_takes_one_request(rep: FakeReplicate) -> None:
    result = await client_of(rep).generate_image(FOXES, model=FLUX)
    assert [image.content_type for image in result.images] == ["image/webp", "image/webp"]
    assert all(image.url and image.url.startswith(rep.delivery_url) for image in result.images)
    assert result.usage == Usage(images=2)
    [sent] = rep.requests
    assert sent.path == f"/v1/models/{FLUX}/predictions"
    assert (sent.headers["authorization"], sent.headers["prefer"]) == (f"Bearer {rep.api_key}", "wait=60")
    assert sent.json == {"input": {"prompt": "a red fox in the snow", "num_outputs": 2, "aspect_ratio": "16:9"}}


async def test_an_image_still_running_after_the_wait_is_polled_until_it_succeeds(rep: FakeReplicate) -> None:
    rep.finish_after(polls=3)
    result = await client_of(rep).generate_image(FOXES, model=FLUX)
    assert len(result.images) == 2
    assert gets(rep) == 4  # three reads saw it running, the fourth finished
    assert len(rep.predictions) == 1 and rep.cancels == []  # polled, never created twice


async def test_the_wait_asked_for_fits_the_read_timeout(rep: FakeReplicate) -> None:
    await client_of(rep, read_timeout_s=20.0).generate_image(FOXES, model=FLUX)
    assert rep.requests[0].headers["prefer"] == "wait=20"


async def test_a_failed_prediction_is_final_with_replicates_error(rep: FakeReplicate) -> None:
    rep.fail_prediction("CUDA out of memory", polls=1)
    error = await failure(client_of(rep).generate_image(FOXES, model=FLUX))
    assert (error.code, error.retryable, error.message) == ("upstream_error", False, "CUDA out of memory")


@pytest.mark.parametrize("refusal", [NSFW_ERROR, SENSITIVE_ERROR])
async def test_a_safety_checker_failure_is_a_content_policy_violation(rep: FakeReplicate, refusal: str) -> None:
    rep.fail_prediction(refusal)
    error = await failure(client_of(rep).generate_image(FOXES, model=FLUX))
    assert (error.code, error.retryable) == (CONTENT_POLICY_VIOLATION, False)


async def test_a_prediction_canceled_upstream_may_be_tried_elsewhere(rep: FakeReplicate) -> None:
    rep.cancel_upstream(polls=1)
    error = await failure(client_of(rep).generate_image(FOXES, model=FLUX))
    assert (error.code, error.retryable) == ("upstream_canceled", True)


async def test_cancelling_the_call_cancels_the_prediction_upstream(rep: FakeReplicate) -> None:
    rep.finish_after(polls=10_000)
    task = asyncio.create_task(client_of(rep).generate_image(FOXES, model=FLUX))
    await until(lambda: gets(rep) >= 2)  # it is polling
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [prediction] = rep.predictions
    assert rep.cancels == [prediction.id]
    assert prediction.status == "canceled"


async def test_giving_up_at_the_read_timeout_cancels_the_prediction(rep: FakeReplicate) -> None:
    rep.finish_after(polls=10_000)
    error = await failure(client_of(rep, read_timeout_s=0.3).generate_image(FOXES, model=FLUX))
    assert (error.code, error.retryable) == ("upstream_timeout", True)
    assert rep.cancels == [rep.predictions[0].id]


async def test_a_poll_that_fails_cancels_the_prediction_it_abandons(rep: FakeReplicate) -> None:
    rep.finish_after(polls=5)
    rep.fail(503, path="/v1/predictions/")  # the first read; the cancel goes through
    error = await failure(client_of(rep).generate_image(FOXES, model=FLUX))
    assert (error.status, error.code, error.retryable) == (503, "upstream_overloaded", True)
    assert rep.cancels == [rep.predictions[0].id]


async def test_a_pinned_version_is_created_through_the_predictions_endpoint(rep: FakeReplicate) -> None:
    result = await client_of(rep).generate_image(ImageRequest("a fox"), model=f"{FLUX}:{FLUX_VERSION}")
    assert len(result.images) == 1
    [sent] = rep.requests
    assert (sent.path, sent.json) == (
        "/v1/predictions",
        {"version": FLUX_VERSION, "input": {"prompt": "a fox", "num_outputs": 1}},
    )


async def test_a_model_unknown_to_pulse_gets_the_generic_input(rep: FakeReplicate) -> None:
    client = client_of(rep)
    await failure(client.generate_image(ImageRequest("a fox"), model="someone/new-model"))
    await failure(client.generate_image(ImageRequest("a fox", count=3, aspect_ratio="1:1"), model="someone/new-model"))
    assert [r.json for r in rep.requests] == [
        {"input": {"prompt": "a fox"}},
        {"input": {"prompt": "a fox", "num_outputs": 3, "aspect_ratio": "1:1"}},
    ]


async def test_a_model_replicate_does_not_have_is_model_not_found(rep: FakeReplicate) -> None:
    error = await failure(client_of(rep).generate_image(ImageRequest("a fox"), model="someone/new-model"))
    assert (error.status, error.code, error.retryable) == (404, "model_not_found", False)


async def test_a_route_that_names_no_replicate_model_is_pulses_own_problem(rep: FakeReplicate) -> None:
    error = await failure(client_of(rep).generate_image(ImageRequest("a fox"), model="flux-schnell"))
    assert (error.code, error.retryable) == ("model_not_found", True)
    assert rep.requests == []


# ---- errors -------------------------------------------------------------------------------------


async def test_input_the_model_refuses_is_a_final_invalid_request(rep: FakeReplicate) -> None:
    error = await failure(client_of(rep).generate_image(ImageRequest("a fox", count=5), model=FLUX))
    assert (error.status, error.code, error.retryable) == (422, "upstream_invalid_request", False)
    assert "input.num_outputs: Must be less than or equal to 4" in error.message
    assert error.details["upstream_title"] == "Input validation failed"


@pytest.mark.parametrize(("headers", "wait_s"), [(None, 1.0), ({"retry-after": "3"}, 3.0)])
async def test_throttling_is_retryable_with_the_wait_replicate_names(
    rep: FakeReplicate, headers: dict[str, str] | None, wait_s: float
) -> None:
    rep.fail(429, headers=headers)  # the detail says "Expected available in 1 second."
    error = await failure(client_of(rep).generate_image(FOXES, model=FLUX))
    assert (error.status, error.code, error.retryable, error.retry_after_s) == (
        429,
        "upstream_rate_limited",
        True,
        wait_s,
    )
    assert error.message == "Request was throttled. Expected available in 1 second."


async def test_a_bad_token_is_pulses_own_credentials_so_retryable_and_never_echoed(rep: FakeReplicate) -> None:
    error = await failure(client_of(rep, api_key="r8_wrong_secret_token").generate_image(FOXES, model=FLUX))
    assert (error.status, error.code, error.retryable) == (401, "upstream_auth_error", True)
    assert error.message == "You did not pass a valid authentication token"
    assert "r8_wrong_secret_token" not in str(error)


# ---- videos ---------------------------------------------------------------------------------------


async def test_a_video_is_started_polled_then_downloaded(rep: FakeReplicate) -> None:
    rep.finish_after(polls=1)
    client = client_of(rep)
    operation = await client.start_video(FOX_RUNS, model=KLING)
    [created] = rep.requests
    assert "prefer" not in created.headers  # a video is never held: it takes minutes
    assert created.json == {"input": {"prompt": "a fox runs through the snow", "duration": 5, "aspect_ratio": "9:16"}}
    assert (operation.upstream_id, operation.done) == (rep.predictions[0].id, False)
    assert operation.usage.video_seconds == Decimal(5)

    operation = await client.poll_video(VideoOperation.from_dict(operation.as_dict()))  # kept as JSON between polls
    assert operation.done is False
    operation = await client.poll_video(VideoOperation.from_dict(operation.as_dict()))
    assert operation.done is True
    [video] = operation.outputs
    assert video.content_type == "video/mp4" and video.url
    assert operation.usage.video_seconds == Decimal(5)
    assert await client.download(video, max_bytes=10_000) == FAKE_MP4


async def test_a_first_frame_goes_as_start_image_and_the_ratio_is_left_to_it(rep: FakeReplicate) -> None:
    request = dataclasses.replace(FOX_RUNS, duration_s=10, image=InputImage("image/png", FAKE_PNG))
    await client_of(rep).start_video(request, model=KLING)
    sent = rep.requests[0].json["input"]
    assert sent == {
        "prompt": "a fox runs through the snow",
        "duration": 10,
        "start_image": "data:image/png;base64," + base64.b64encode(FAKE_PNG).decode(),
    }


async def test_a_duration_the_model_does_not_make_is_refused(rep: FakeReplicate) -> None:
    error = await failure(client_of(rep).start_video(dataclasses.replace(FOX_RUNS, duration_s=8), model=KLING))
    assert (error.code, error.retryable) == ("upstream_invalid_request", False)
    assert "duration must be one of the following: 5, 10" in error.message


async def test_a_video_that_fails_raises_on_the_poll(rep: FakeReplicate) -> None:
    rep.fail_prediction("Generation failed", polls=1)
    client = client_of(rep)
    operation = await client.start_video(FOX_RUNS, model=KLING)
    assert (await client.poll_video(operation)).done is False
    error = await failure(client.poll_video(operation))
    assert (error.code, error.retryable, error.message) == ("upstream_error", False, "Generation failed")


async def test_a_video_canceled_upstream_raises_upstream_canceled(rep: FakeReplicate) -> None:
    rep.cancel_upstream()
    client = client_of(rep)
    error = await failure(client.poll_video(await client.start_video(FOX_RUNS, model=KLING)))
    assert error.code == "upstream_canceled"


async def test_cancel_video_posts_to_the_cancel_endpoint(rep: FakeReplicate) -> None:
    rep.finish_after(polls=10)
    client = client_of(rep)
    operation = await client.start_video(FOX_RUNS, model=KLING)
    await client.cancel_video(operation)
    assert rep.requests[-1].path == f"/v1/predictions/{operation.upstream_id}/cancel"
    assert rep.cancels == [operation.upstream_id]
    assert rep.predictions[0].status == "canceled"


async def test_an_extension_step_is_unsupported(rep: FakeReplicate) -> None:
    request = dataclasses.replace(FOX_RUNS, extends={"uri": "x"})
    error = await failure(client_of(rep).start_video(request, model=KLING))
    assert (error.code, error.retryable) == ("unsupported_capability", True)
    assert rep.requests == []


# ---- outputs never see the token ---------------------------------------------------------------


async def test_downloads_never_send_the_token_to_the_delivery_host(rep: FakeReplicate) -> None:
    client = client_of(rep)
    result = await client.generate_image(FOXES, model=FLUX)
    assert [await client.download(image, max_bytes=10_000) for image in result.images] == [FAKE_PNG, FAKE_PNG]
    assert len(rep.deliveries) == 2
    assert all("authorization" not in received.headers for received in rep.deliveries)
    # The fake's check is real: the same URL with the token is refused.
    url = result.images[0].url
    assert url is not None
    assert httpx.get(url, headers={"authorization": f"Bearer {rep.api_key}"}).status_code == 400


async def test_output_types_follow_the_file_extension(rep: FakeReplicate) -> None:
    result = await client_of(rep).generate_image(dataclasses.replace(FOXES, count=1), model=FLUX)
    assert result.images == [MediaOutput("image/webp", url=result.images[0].url)]


# ---- specs and registry -------------------------------------------------------------------------


def test_specs_of_the_known_models_and_none_for_the_others() -> None:
    client = client_for(ProviderConfig("replicate", "replicate", "http://127.0.0.1:9", "r8_x"))
    ratios = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
    assert client.image_spec(FLUX) == client.image_spec(f"{FLUX}:{FLUX_VERSION}") == ImageSpec(4, aspect_ratios=ratios)
    video = client.video_spec(KLING)
    assert video == VideoSpec(durations=(5, 10), aspect_ratios=("16:9", "9:16", "1:1"), first_frame=True)
    assert (video.steps(10), video.steps(15)) == ((10,), None)
    assert (client.video_spec(FLUX), client.image_spec(KLING), client.image_spec("someone/new-model")) == (
        None,
        None,
        None,
    )
    assert client.image_spec("flux-schnell") is None  # not a Replicate model name: no spec, no error
    assert CLIENTS["replicate"] is ReplicateClient


# ---- the fake speaks Replicate's protocol -------------------------------------------------------


def post(fake: FakeReplicate, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{fake.base_url}{path}", json=body, headers={"authorization": f"Bearer {fake.api_key}"} | headers
    )


def test_the_fake_answers_problems_like_replicate(rep: FakeReplicate) -> None:
    invalid = post(rep, f"/v1/models/{FLUX}/predictions", {"input": {"prompt": 3, "aspect_ratio": "7:5"}})
    assert invalid.status_code == 422
    assert invalid.json()["title"] == "Input validation failed"
    assert [(f["field"], f["type"]) for f in invalid.json()["invalid_fields"]] == [
        ("input.prompt", "invalid_type"),
        ("input.aspect_ratio", "enum"),
    ]
    unauthenticated = httpx.post(f"{rep.base_url}/v1/models/{FLUX}/predictions", json={"input": {"prompt": "a"}})
    assert unauthenticated.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    assert post(rep, f"/v1/models/{FLUX}/predictions", {"input": {"prompt": "a"}}, prefer="wait=90").status_code == 400
    assert post(rep, "/v1/models/nobody/nothing/predictions", {"input": {"prompt": "a"}}).status_code == 404


def test_the_fake_holds_a_waiting_create_only_as_long_as_the_script_says(rep: FakeReplicate) -> None:
    rep.finish_after(polls=1)
    running = post(rep, f"/v1/models/{FLUX}/predictions", {"input": {"prompt": "a"}}, prefer="wait")
    assert (running.status_code, running.json()["status"], running.json()["output"]) == (202, "processing", None)
    done = post(rep, f"/v1/models/{FLUX}/predictions", {"input": {"prompt": "a"}}, prefer="wait=5")
    assert (done.status_code, done.json()["status"]) == (201, "succeeded")
    started = post(rep, f"/v1/models/{FLUX}/predictions", {"input": {"prompt": "a"}})
    assert (started.status_code, started.json()["status"]) == (201, "starting")
