"""Gemini generateContent / streamGenerateContent, Nano Banana images and Veo videos.

The assistant role is "model", system text is `systemInstruction`, sampling settings
live in `generationConfig`, and a stream has no end marker: only a finishReason tells
a finished stream from a cut one. The chat translation (function calls, images, structured
output, thinking, thought signatures) is in gemini_chat.py.

Nano Banana (the gemini-*-image models) answers on the same generateContent, one image per
call, as base64 `inlineData` parts. Veo is a long-running operation: `:predictLongRunning`
answers an operation name, polled with GET until `done`; its video is a URL on the API's
host that redirects to storage. The facts behind the Veo requests (extension included) are
written down, with their sources, at the top of tests/fakes/gemini/videos.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import replace
from decimal import Decimal
from typing import Any, NamedTuple

from core.errors import CONTENT_POLICY_VIOLATION
from providers.clients.base import (
    CONTENT_FILTER,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ImageRequest,
    ImageResult,
    ImageSpec,
    InputImage,
    MediaOutput,
    ProviderError,
    Unsupported,
    Usage,
    VideoOperation,
    VideoRequest,
    VideoSpec,
)
from providers.clients.gemini_chat import (
    FINISH_REASONS,
    calls_finish,
    count_tokens_body,
    gemini_usage,
    images_fetched,
    request_body,
    response_result,
    stream_piece,
    total_tokens,
    unsupported_param,
)
from providers.clients.http_client import (
    STATUS_CODES,
    HttpProviderClient,
    error_object,
    retry_after_s,
    seconds,
    set_fields,
)
from providers.clients.remote_images import ImageFetchError

# ---- Nano Banana: the gemini-*-image models on generateContent ----------------------------
# gemini-3-pro-image-preview answers images the same way (the google-genai README's image example).
NANO_BANANA_MODELS = frozenset(
    {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview"}
)
IMAGE_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# The API makes one image per call; Pulse fans a request for several out into concurrent calls.
NANO_BANANA = ImageSpec(max_count=10, aspect_ratios=IMAGE_ASPECT_RATIOS, edits=True)
# A candidate that ends for one of these without an image was refused, not broken. Another
# provider's filter may differ, but Pulse does not shop a refused prompt around.
REFUSED_IMAGE = frozenset(
    {"IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "NO_IMAGE"}
    | {reason for reason, ours in FINISH_REASONS.items() if ours == CONTENT_FILTER}
)

# ---- Veo: predictLongRunning, then polling the operation --------------------------------
VEO_3 = VideoSpec(durations=(4, 6, 8), aspect_ratios=("16:9", "9:16"), resolutions=("720p", "1080p"), first_frame=True)
# Veo 3.1 extends a video it made by 7 s a call, up to 20 times (an input of at most 141 s), at 720p only.
# It also makes 4k (8 s only), left out: a route has one price per video second, and 4k costs more.
VEO_3_1 = replace(VEO_3, extension_s=7, max_extensions=20, extension_resolutions=("720p",))
VIDEO_SPECS = {
    "veo-3.0-generate-001": VEO_3,
    "veo-3.0-fast-generate-001": VEO_3,
    "veo-3.1-generate-preview": VEO_3_1,
    "veo-3.1-fast-generate-preview": VEO_3_1,
}
# A failed operation says why in google.rpc.Code numbers: the HTTP status the same failure has as an answer.
RPC_STATUSES = {3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 11: 400, 13: 500, 14: 503, 16: 401}
# RESOURCE_EXHAUSTED and UNAVAILABLE: the model was busy, so another candidate may make the video.
RPC_RETRYABLE = frozenset({8, 14})


def error_details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    """google.rpc.Status details: ErrorInfo, RetryInfo, BadRequest."""
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def retry_info_delay(error: Mapping[str, Any]) -> float | None:
    """The RetryInfo detail ({"retryDelay": "34s"}): Gemini says how long to wait there, not in a header."""
    for detail in error_details(error):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return seconds(str(detail.get("retryDelay", "")).removesuffix("s"))
    return None


def bare_model(model: str) -> str:
    # Routes may hold the resource name ("models/gemini-2.5-flash") or the bare id.
    return model.removeprefix("models/")


def inline_data(image: InputImage) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.content_type, "data": base64.b64encode(image.data).decode()}}


class ImageAnswer(NamedTuple):
    """What one generateContent call for an image answered."""

    images: list[MediaOutput]
    finish_reason: str | None
    usage: Usage
    model_version: str | None


def image_answer(response: dict[str, Any]) -> ImageAnswer:
    """The images of candidate 0, decoded; a thinking model's draft images (thought parts) left out."""
    candidate = (response.get("candidates") or [{}])[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    images = [
        MediaOutput(part["inlineData"]["mimeType"], data=base64.b64decode(part["inlineData"]["data"], validate=True))
        for part in parts
        if "inlineData" in part and not part.get("thought")
    ]
    usage = gemini_usage(response.get("usageMetadata"))
    return ImageAnswer(images, candidate.get("finishReason"), usage, response.get("modelVersion"))


def images_usage(usages: list[Usage]) -> Usage:
    """One call per image: the tokens of every call together, and the images delivered."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        images=len(usages),
        estimated=any(u.estimated for u in usages),
    )


def operation_name(response: dict[str, Any]) -> str:
    name = response["name"]
    if not isinstance(name, str) or not name:
        raise TypeError("the operation name is not a string")
    return name


def generated_videos(response: dict[str, Any]) -> dict[str, Any]:
    """A finished operation's GenerateVideoResponse ({} when it has none)."""
    result = (response.get("response") or {}).get("generateVideoResponse") or {}
    if not isinstance(result, dict):
        raise TypeError("generateVideoResponse is not an object")
    return result


def video_uri(response: dict[str, Any]) -> str | None:
    """The first generated video's URL; None when the operation finished without one."""
    samples = generated_videos(response).get("generatedSamples") or []
    if not samples:
        return None
    uri = samples[0]["video"]["uri"]
    if not isinstance(uri, str) or not uri:
        raise TypeError("video.uri is not a string")
    return uri


class GeminiClient(HttpProviderClient):
    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.provider.api_key}

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = super().status_error(status, body, headers)
        if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in error_details(error_object(body))):
            # Gemini answers a wrong key with 400: Pulse's own credentials, so another provider may serve.
            return replace(error, retryable=True, code="upstream_auth_error")
        return error

    def retry_delay(self, headers: Mapping[str, str], error: Mapping[str, Any]) -> float | None:
        from_headers = retry_after_s(headers)
        return from_headers if from_headers is not None else retry_info_delay(error)

    def url(self, model: str, action: str) -> str:
        return self.endpoint(f"/v1beta/models/{bare_model(model)}:{action}")

    def check_prompt_allowed(self, response: dict[str, Any]) -> None:
        """A blocked prompt is a 200 with promptFeedback.blockReason and no candidates. Another
        provider's filter may differ, but Pulse does not shop a refused prompt around."""
        reason = (response.get("promptFeedback") or {}).get("blockReason")
        if reason and not response.get("candidates"):
            raise self.error(
                f"the provider's safety filter blocked the prompt (blockReason {reason})",
                retryable=False,
                status=400,
                code=CONTENT_POLICY_VIOLATION,
            )

    def unsupported_param(self, request: ChatRequest, *, model: str) -> Unsupported | None:
        return unsupported_param(request, bare_model(model))

    async def chat_body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        return request_body(await self.with_image_bytes(request), bare_model(model))

    async def with_image_bytes(self, request: ChatRequest) -> ChatRequest:
        """Gemini takes images as bytes only: those given by URL are fetched first. A URL that may
        not be fetched, or gives no image, is the client's mistake: no other provider would do better."""
        try:
            return await images_fetched(request)
        except ImageFetchError as exc:
            raise self.error(str(exc), retryable=False, status=400, code="invalid_image_url") from exc

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        response = await self.post_json(self.url(model, "generateContent"), await self.chat_body(request, model))
        self.check_prompt_allowed(response)
        return self.parse(response_result, response, model)

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        url = self.url(model, "streamGenerateContent?alt=sse")
        reason, metadata, calls = None, None, 0
        async with aclosing(self.post_events(url, await self.chat_body(request, model))) as events:
            async for _event, data in events:
                chunk = self.decode(data)
                self.check_prompt_allowed(chunk)
                delta, chunk_reason = self.parse(stream_piece, chunk, calls)
                if delta.content or delta.reasoning or delta.tool_calls:
                    yield delta
                calls += len(delta.tool_calls)
                reason = chunk_reason or reason
                # Each chunk's usageMetadata is the running total: keep the last, never add.
                metadata = chunk.get("usageMetadata") or metadata
        if reason is None:
            cut = self.stream_cut()
            # The running usageMetadata counts the prompt exactly; the output so far is marked estimated.
            cut.usage = replace(gemini_usage(metadata), estimated=True) if metadata else None
            raise cut
        yield ChatDelta(finish_reason=calls_finish(reason, calls > 0), usage=self.parse(gemini_usage, metadata))

    async def count_tokens(self, request: ChatRequest, *, model: str) -> int:
        body = count_tokens_body(await self.with_image_bytes(request), bare_model(model))
        return self.parse(total_tokens, await self.post_json(self.url(model, "countTokens"), body))

    # ---- Nano Banana images ----------------------------------------------------------

    def image_spec(self, model: str) -> ImageSpec | None:
        return NANO_BANANA if bare_model(model) in NANO_BANANA_MODELS else None

    async def generate_image(self, request: ImageRequest, *, model: str) -> ImageResult:
        """`count` images as that many concurrent calls. The first failure cancels the calls still
        running and is raised: a request is delivered (and billed) whole or not at all."""
        try:
            async with asyncio.TaskGroup() as calls:
                tasks = [calls.create_task(self.one_image(request, model)) for _ in range(request.count)]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        answers = [task.result() for task in tasks]
        return ImageResult(
            images=[answer.images[0] for answer in answers],
            upstream_model=answers[0].model_version or model,
            usage=images_usage([answer.usage for answer in answers]),
        )

    async def one_image(self, request: ImageRequest, model: str) -> ImageAnswer:
        response = await self.post_json(self.url(model, "generateContent"), self.image_body(request))
        self.check_prompt_allowed(response)
        answer = self.parse(image_answer, response)
        if not answer.images:
            raise self.no_image(answer.finish_reason)
        return answer

    @staticmethod
    def image_body(request: ImageRequest) -> dict[str, Any]:
        # Only IMAGE: text beside the picture would be output tokens billed and never shown.
        config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
        if request.aspect_ratio:
            config["imageConfig"] = {"aspectRatio": request.aspect_ratio}
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        if request.image is not None:  # an edit: the picture goes beside the instruction
            parts.append(inline_data(request.image))
        return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}

    def no_image(self, reason: str | None) -> ProviderError:
        if reason in REFUSED_IMAGE:
            return self.error(
                f"the provider refused to make the image (finishReason {reason})",
                retryable=False,
                status=400,
                code=CONTENT_POLICY_VIOLATION,
            )
        return self.bad_response(f"an answer without an image (finishReason {reason})")

    # ---- Veo videos --------------------------------------------------------------------
    # cancel_video stays the base no-op: the Gemini API documents only GET (and list) for these
    # operations, and the google-genai SDK's operations module has no cancel, so a started
    # video runs to its end upstream.

    def video_spec(self, model: str) -> VideoSpec | None:
        return VIDEO_SPECS.get(bare_model(model))

    async def start_video(self, request: VideoRequest, *, model: str) -> VideoOperation:
        body = {"instances": [self.video_instance(request)], "parameters": self.video_parameters(request)}
        response = await self.post_json(self.url(model, "predictLongRunning"), body)
        # The step's seconds ride on the operation (as_dict keeps them): the poll that finds it
        # done, maybe in another worker, has nothing else to go on.
        usage = Usage(video_seconds=Decimal(request.duration_s))
        return VideoOperation(self.parse(operation_name, response), model, usage=usage)

    @staticmethod
    def video_instance(request: VideoRequest) -> dict[str, Any]:
        instance: dict[str, Any] = set_fields(prompt=request.prompt)
        if request.extends is not None:  # the video an earlier step made: Veo extends only its own
            instance["video"] = {"uri": request.extends["uri"]}
        elif request.image is not None:
            image = request.image
            instance["image"] = {
                "bytesBase64Encoded": base64.b64encode(image.data).decode(),
                "mimeType": image.content_type,
            }
        return instance

    @staticmethod
    def video_parameters(request: VideoRequest) -> dict[str, Any]:
        if request.extends is not None:
            # An extension always adds 7 s; durationSeconds would have to say 8 ("must be 8 when
            # using extension"), so it is left out. Only 720p is extended, hence the default.
            return set_fields(aspectRatio=request.aspect_ratio, resolution=request.resolution or "720p")
        return set_fields(
            aspectRatio=request.aspect_ratio, durationSeconds=request.duration_s, resolution=request.resolution
        )

    async def poll_video(self, operation: VideoOperation) -> VideoOperation:
        response = await self.get_json(self.endpoint(f"/v1beta/{operation.upstream_id}"))
        # Proto3 JSON leaves `done: false` out: a missing `done` is a running operation.
        if response.get("done") is not True:
            return operation
        if "error" in response:
            raise self.operation_failed(error_object(response))
        uri = self.parse(video_uri, response)
        if uri is None:
            raise self.video_withheld(response)
        return replace(operation, done=True, outputs=[MediaOutput("video/mp4", url=uri)], video={"uri": uri})

    def operation_failed(self, error: Mapping[str, Any]) -> ProviderError:
        rpc_code = error.get("code") if isinstance(error.get("code"), int) else None
        status = RPC_STATUSES.get(rpc_code or 0)
        return self.error(
            self.upstream_message(error.get("message") or "the video generation failed"),
            retryable=rpc_code in RPC_RETRYABLE,
            status=status,
            code=STATUS_CODES.get(status or 0, "upstream_error"),
            details=self.upstream_codes(error),
        )

    def video_withheld(self, response: dict[str, Any]) -> ProviderError:
        """Done without a video: the safety filter's doing when it says it filtered one."""
        result = self.parse(generated_videos, response)
        if not result.get("raiMediaFilteredCount"):
            return self.bad_response("a finished video operation without a video")
        reasons = "; ".join(str(reason) for reason in result.get("raiMediaFilteredReasons") or [])
        return self.error(
            self.upstream_message(f"the provider's safety filter withheld the video: {reasons or 'no reason given'}"),
            retryable=False,
            status=400,
            code=CONTENT_POLICY_VIOLATION,
        )
