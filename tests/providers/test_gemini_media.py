"""GeminiClient's media: Nano Banana images and Veo videos, against FakeGemini over real sockets.

Images are one generateContent call each, made concurrently; a video is a long-running
operation (start, poll, download through a redirect to storage), and Veo 3.1 extends a video
it made by 7 s a call, answering one combined video.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from yarl import URL

from core.shutdown import run_shutdown_hooks
from providers.clients.base import (
    ImageRequest,
    InputImage,
    MediaOutput,
    ProviderConfig,
    ProviderError,
    Usage,
    VideoOperation,
    VideoRequest,
)
from providers.clients.gemini import GeminiClient
from tests.fakes import FakeGemini
from tests.fakes.gemini import IMAGE_TOKENS, INPUT_IMAGE_TOKENS, PNG_PIXEL, RAI_REASON, STORAGE_PATH, mp4_seconds

NANO_BANANA = "gemini-2.5-flash-image"
VEO = "veo-3.1-fast-generate-preview"
FOX = ImageRequest("a red fox", aspect_ratio="16:9")  # 3 prompt words
FRAME = InputImage("image/png", PNG_PIXEL)
MAX_BYTES = 10**6


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini.start() as fake:
        yield fake


@pytest.fixture
def gem(gemini_server: FakeGemini) -> FakeGemini:
    gemini_server.reset()
    return gemini_server


@pytest.fixture(autouse=True)
async def _close_loop_resources() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await run_shutdown_hooks()


def client_of(fake: FakeGemini) -> GeminiClient:
    return GeminiClient(ProviderConfig("fake-gemini", "gemini", fake.base_url, fake.api_key))


async def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


async def finished(client: GeminiClient, operation: VideoOperation) -> VideoOperation:
    """Poll until done (the fake answers without delay, so no sleep between polls)."""
    for _ in range(10):
        operation = await client.poll_video(operation)
        if operation.done:
            return operation
    raise AssertionError("the operation never finished")


async def made_video(client: GeminiClient, request: VideoRequest, model: str = VEO) -> VideoOperation:
    return await finished(client, await client.start_video(request, model=model))


# ---- Nano Banana ---------------------------------------------------------------------------


async def test_a_count_of_four_is_four_concurrent_calls_and_four_images(gem: FakeGemini) -> None:
    gem.image_delay_s = 0.2  # long enough for all four calls to be in progress at once
    result = await client_of(gem).generate_image(ImageRequest("a red fox", count=4), model=NANO_BANANA)
    assert gem.calls == 4 and gem.peak_image_calls == 4
    assert [(image.content_type, image.data) for image in result.images] == [("image/png", PNG_PIXEL)] * 4
    assert result.usage == Usage(input_tokens=4 * 3, output_tokens=4 * IMAGE_TOKENS, images=4)
    assert result.upstream_model == NANO_BANANA


async def test_an_image_call_asks_for_images_only_at_the_aspect_ratio(gem: FakeGemini) -> None:
    await client_of(gem).generate_image(FOX, model=f"models/{NANO_BANANA}")
    received = gem.requests[0]
    assert received.path == f"/v1beta/models/{NANO_BANANA}:generateContent"
    assert received.headers["x-goog-api-key"] == gem.api_key
    assert received.json == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }


async def test_an_edit_sends_the_image_as_inline_data_beside_the_prompt(gem: FakeGemini) -> None:
    edit = ImageRequest("make it blue", image=InputImage("image/jpeg", b"\xff\xd8\xff fake jpeg"))
    result = await client_of(gem).generate_image(edit, model=NANO_BANANA)
    [parts] = [content["parts"] for content in gem.requests[0].json["contents"]]
    encoded = base64.b64encode(b"\xff\xd8\xff fake jpeg").decode()
    assert parts == [{"text": "make it blue"}, {"inlineData": {"mimeType": "image/jpeg", "data": encoded}}]
    assert "imageConfig" not in gem.requests[0].json["generationConfig"]
    assert result.usage.input_tokens == 3 + INPUT_IMAGE_TOKENS  # the fake counts the picture


async def test_an_aspect_ratio_the_model_lacks_is_the_upstreams_final_400(gem: FakeGemini) -> None:
    error = await failure(client_of(gem).generate_image(ImageRequest("a fox", aspect_ratio="7:3"), model=NANO_BANANA))
    assert (error.status, error.retryable, error.code) == (400, False, "upstream_invalid_request")


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "NO_IMAGE", "SAFETY"])
async def test_an_image_the_model_refuses_is_a_final_content_policy_violation(gem: FakeGemini, reason: str) -> None:
    gem.refuse_image(reason)
    error = await failure(client_of(gem).generate_image(FOX, model=NANO_BANANA))
    assert (error.code, error.retryable, error.status) == ("content_policy_violation", False, 400)
    assert reason in error.message


async def test_a_blocked_image_prompt_is_a_final_content_policy_violation(gem: FakeGemini) -> None:
    gem.block_prompt("PROHIBITED_CONTENT")
    error = await failure(client_of(gem).generate_image(FOX, model=NANO_BANANA))
    assert (error.code, error.retryable) == ("content_policy_violation", False)


async def test_a_503_on_one_call_cancels_the_others_and_is_retryable(gem: FakeGemini) -> None:
    # Three calls are held for 2 s, and the fourth to arrive fails: all four are in flight by then
    # (none is left to land on the next test's script).
    gem.delay(2.0, times=3, path=":generateContent")
    gem.fail(503, path=":generateContent")
    started = time.monotonic()
    error = await failure(client_of(gem).generate_image(ImageRequest("a fox", count=4), model=NANO_BANANA))
    assert time.monotonic() - started < 1.0 and gem.calls == 4  # nobody waited for the held calls
    assert (error.status, error.retryable, error.code) == (503, True, "upstream_overloaded")
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []


async def test_a_thinking_models_draft_images_are_not_results(gem: FakeGemini) -> None:
    draft = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"draft").decode()}, "thought": True}
    final = {"inlineData": {"mimeType": "image/webp", "data": base64.b64encode(b"final").decode()}}
    answer = {
        "candidates": [{"content": {"role": "model", "parts": [draft, final]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1290, "thoughtsTokenCount": 40},
        "modelVersion": "gemini-3-pro-image-preview",
    }
    gem.fail(200, body=answer)
    result = await client_of(gem).generate_image(FOX, model="gemini-3-pro-image-preview")
    assert result.images == [MediaOutput("image/webp", data=b"final")]
    assert result.usage == Usage(input_tokens=3, output_tokens=1330, reasoning_tokens=40, images=1)


async def test_an_answer_without_an_image_or_a_refusal_is_a_bad_response(gem: FakeGemini) -> None:
    text_only = {"candidates": [{"content": {"parts": [{"text": "A fox is..."}]}, "finishReason": "STOP"}]}
    gem.fail(200, body=text_only)
    error = await failure(client_of(gem).generate_image(FOX, model=NANO_BANANA))
    assert (error.code, error.retryable) == ("upstream_bad_response", True)


def test_nano_banana_models_have_an_image_spec_and_other_gemini_models_none() -> None:
    client = GeminiClient(ProviderConfig("gemini", "gemini", "http://127.0.0.1:9", "AIza-x"))
    for model in ("gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "models/gemini-3-pro-image-preview"):
        spec = client.image_spec(model)
        assert spec is not None and (spec.max_count, spec.sizes, spec.edits) == (10, (), True)
        assert set(spec.aspect_ratios) == {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
    assert client.image_spec("gemini-2.5-flash") is None


# ---- Veo -------------------------------------------------------------------------------------


async def test_a_video_is_started_polled_until_done_and_downloaded(gem: FakeGemini) -> None:
    gem.video_script(polls=2)
    client = client_of(gem)
    request = VideoRequest("a cat surfing", 6, aspect_ratio="9:16", resolution="720p", image=FRAME)
    operation = await client.start_video(request, model=VEO)
    assert gem.requests[0].json == {
        "instances": [
            {
                "prompt": "a cat surfing",
                "image": {"bytesBase64Encoded": base64.b64encode(PNG_PIXEL).decode(), "mimeType": "image/png"},
            }
        ],
        "parameters": {"aspectRatio": "9:16", "durationSeconds": 6, "resolution": "720p"},
    }
    assert operation.upstream_id.startswith(f"models/{VEO}/operations/") and not operation.done
    for _ in range(2):  # running: the fake, like proto3 JSON, sends no `done` at all
        assert await client.poll_video(operation) == operation
    done = await client.poll_video(operation)
    [video] = gem.videos.values()
    assert gem.requests[-1].path == f"/v1beta/{operation.upstream_id}"
    assert done.done and done.outputs == [MediaOutput("video/mp4", url=gem.download_url(video.id))]
    assert done.usage.video_seconds == Decimal(6) and done.video == {"uri": gem.download_url(video.id)}
    assert mp4_seconds(await client.download(done.outputs[0], max_bytes=MAX_BYTES)) == 6


async def test_a_video_request_sends_only_the_fields_set(gem: FakeGemini) -> None:
    await client_of(gem).start_video(VideoRequest("a quiet lake", 8), model="veo-3.0-generate-001")
    assert gem.requests[0].path == "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
    assert gem.requests[0].json == {"instances": [{"prompt": "a quiet lake"}], "parameters": {"durationSeconds": 8}}


async def test_an_extension_sends_the_earlier_video_and_answers_both_as_one(gem: FakeGemini) -> None:
    client = client_of(gem)
    first = await made_video(client, VideoRequest("a fox runs", 8, aspect_ratio="16:9"))
    extension = await client.start_video(
        VideoRequest("it jumps", 7, aspect_ratio="16:9", extends=first.video), model="veo-3.1-generate-preview"
    )
    # durationSeconds is left out: the API wants none (or 8) on an extension, which always adds 7 s.
    assert gem.last_request is not None and gem.last_request.json == {
        "instances": [{"prompt": "it jumps", "video": {"uri": first.video["uri"]}}],
        "parameters": {"aspectRatio": "16:9", "resolution": "720p"},
    }
    done = await finished(client, extension)
    assert done.usage.video_seconds == Decimal(7)  # the step bills its own 7 s ...
    assert mp4_seconds(await client.download(done.outputs[0], max_bytes=MAX_BYTES)) == 15  # ... of one 15 s video
    [made] = [video for video in gem.videos.values() if video.extends]
    assert made.extends == first.video["uri"].split("/files/")[1].split(":")[0]


async def test_fifteen_seconds_on_veo_3_1_is_a_generation_and_one_extension(gem: FakeGemini) -> None:
    client = client_of(gem)
    spec = client.video_spec(VEO)
    assert spec is not None and spec.steps(15) == (8, 7)
    operation = await made_video(client, VideoRequest("waves", 8))
    for seconds in spec.steps(15)[1:]:
        operation = await made_video(client, VideoRequest("more waves", seconds, extends=operation.video))
    assert mp4_seconds(await client.download(operation.outputs[0], max_bytes=MAX_BYTES)) == 15


@pytest.mark.parametrize(
    ("model", "extends"),
    [
        ("veo-3.0-generate-001", None),  # Veo 3 does not extend
        (VEO, {"uri": "https://example.com/somebody-elses.mp4"}),  # Veo extends only its own videos
    ],
)
async def test_an_extension_the_api_refuses_is_a_final_400(gem: FakeGemini, model: str, extends: Any) -> None:
    client = client_of(gem)
    if extends is None:
        extends = (await made_video(client, VideoRequest("a fox", 8), model=model)).video
    error = await failure(client.start_video(VideoRequest("more", 7, extends=extends), model=model))
    assert (error.status, error.retryable, error.code) == (400, False, "upstream_invalid_request")


@pytest.mark.parametrize(
    "request_",
    [
        VideoRequest("a fox", 5),  # durations are 4, 6 or 8
        VideoRequest("a fox", 4, resolution="1080p"),  # 1080p is 8 s only
        VideoRequest("a fox", 8, aspect_ratio="1:1"),
    ],
)
async def test_values_veo_does_not_take_are_the_upstreams_final_400(gem: FakeGemini, request_: VideoRequest) -> None:
    error = await failure(client_of(gem).start_video(request_, model=VEO))
    assert (error.status, error.retryable) == (400, False)


async def test_a_video_the_safety_filter_withholds_is_a_final_content_policy_violation(gem: FakeGemini) -> None:
    gem.video_script(polls=1, outcome="filtered")
    client = client_of(gem)
    operation = await client.start_video(VideoRequest("a fox", 8), model=VEO)
    assert not (await client.poll_video(operation)).done
    error = await failure(client.poll_video(operation))
    assert (error.code, error.retryable, error.status) == ("content_policy_violation", False, 400)
    assert RAI_REASON in error.message


@pytest.mark.parametrize(
    ("rpc_code", "status", "retryable", "code"),
    [
        (13, 500, False, "upstream_error"),
        (14, 503, True, "upstream_overloaded"),
        (3, 400, False, "upstream_invalid_request"),
    ],
)
async def test_a_failed_operation_says_why_and_only_a_busy_model_is_worth_another_try(
    gem: FakeGemini, rpc_code: int, status: int, retryable: bool, code: str
) -> None:
    gem.video_script(outcome="error", error_code=rpc_code)
    client = client_of(gem)
    error = await failure(client.poll_video(await client.start_video(VideoRequest("a fox", 8), model=VEO)))
    assert (error.status, error.retryable, error.code) == (status, retryable, code)
    assert error.message and error.details == {"upstream_code": rpc_code}


async def test_a_download_never_sends_the_key_to_storage(gem: FakeGemini) -> None:
    client = client_of(gem)
    done = await made_video(client, VideoRequest("a fox", 4))
    assert mp4_seconds(await client.download(done.outputs[0], max_bytes=MAX_BYTES)) == 4
    file_get, storage_get = gem.requests[-2:]
    assert file_get.headers["x-goog-api-key"] == gem.api_key
    assert storage_get.path.startswith(STORAGE_PATH) and "x-goog-api-key" not in storage_get.headers


async def test_the_fakes_storage_fails_a_client_that_leaks_the_key(gem: FakeGemini) -> None:
    class Leaky(GeminiClient):
        def sends_key_to(self, url: URL) -> bool:
            return True

    done = await made_video(client_of(gem), VideoRequest("a fox", 4))
    leaky = Leaky(ProviderConfig("leaky", "gemini", gem.base_url, gem.api_key))
    error = await failure(leaky.download(done.outputs[0], max_bytes=MAX_BYTES))
    assert error.status == 400


async def test_faults_reach_the_operation_and_storage_endpoints(gem: FakeGemini) -> None:
    client = client_of(gem)
    operation = await client.start_video(VideoRequest("a fox", 4), model=VEO)
    gem.fail(503, path="/operations/")
    assert (await failure(client.poll_video(operation))).retryable
    done = await client.poll_video(operation)  # the fault is used up: the operation carries on
    gem.fail(500, path=STORAGE_PATH)
    error = await failure(client.download(done.outputs[0], max_bytes=MAX_BYTES))
    assert (error.status, error.retryable) == (500, True)


async def test_an_operation_survives_as_json_between_polls(gem: FakeGemini) -> None:
    gem.video_script(polls=1)
    client = client_of(gem)
    operation = await client.start_video(VideoRequest("a fox", 6), model=VEO)
    restored = VideoOperation.from_dict(operation.as_dict())
    assert restored == operation and restored.usage.video_seconds == Decimal(6)
    restored = VideoOperation.from_dict((await client.poll_video(restored)).as_dict())
    done = await client.poll_video(restored)
    assert VideoOperation.from_dict(done.as_dict()) == done
    assert done.done and done.usage.video_seconds == Decimal(6) and done.outputs[0].url


def test_veo_specs_say_which_durations_each_model_reaches() -> None:
    client = GeminiClient(ProviderConfig("gemini", "gemini", "http://127.0.0.1:9", "AIza-x"))
    veo_3_1 = client.video_spec("models/veo-3.1-generate-preview")
    assert veo_3_1 is not None and veo_3_1 == client.video_spec("veo-3.1-fast-generate-preview")
    assert (veo_3_1.extension_s, veo_3_1.max_extensions, veo_3_1.extension_resolutions) == (7, 20, ("720p",))
    assert veo_3_1.first_frame and veo_3_1.steps(15) == (8, 7) and veo_3_1.steps(8) == (8,)
    assert veo_3_1.allowed_durations()[:6] == [4, 6, 8, 11, 13, 15] and veo_3_1.allowed_durations()[-1] == 148
    veo_3 = client.video_spec("veo-3.0-fast-generate-001")
    assert veo_3 is not None and veo_3.allowed_durations() == [4, 6, 8] and veo_3.steps(15) is None
    assert (veo_3.aspect_ratios, veo_3.resolutions) == (("16:9", "9:16"), ("720p", "1080p"))
    assert client.video_spec("veo-2.0-generate-001") is None and client.video_spec("gemini-2.5-flash") is None
