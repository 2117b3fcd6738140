"""Replicate: every model is a prediction. Create it (`POST /v1/models/{owner}/{name}/predictions`,
or `POST /v1/predictions` with a version), then read it until it succeeds, fails or is canceled.

Images are one synchronous call: the create holds the request (`Prefer: wait`) and the client
polls if the model outlasts that. Videos are long-running: start_video creates the prediction
and returns at once, poll_video reads it. Each model takes its own input fields, so the models
Pulse knows are a table (MODELS) from "owner/name" to their specs and input builders; any other
model gets a generic input and the provider checks it.

Errors are RFC 7807 problem objects (`{"type", "title", "status", "detail"}`), not OpenAI's
`{"error": {...}}`. Outputs are URLs on replicate.delivery that expire in about an hour; the
generic download copies them and never sends the token there (another host).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
from yarl import URL

from core.errors import CONTENT_POLICY_VIOLATION
from providers.clients.base import (
    RETRYABLE_STATUSES,
    ImageRequest,
    ImageResult,
    ImageSpec,
    InputImage,
    MediaOutput,
    ProviderError,
    Usage,
    VideoOperation,
    VideoRequest,
    VideoSpec,
)
from providers.clients.http_client import (
    STATUS_CODES,
    TRANSPORT_ERRORS,
    HttpProviderClient,
    retry_after_s,
    seconds,
    set_fields,
)

logger = logging.getLogger(__name__)

Input = dict[str, Any]

RUNNING = frozenset({"starting", "processing"})
MAX_WAIT_S = 60  # the longest `Prefer: wait=N` Replicate takes
CANCEL_TIMEOUT_S = 10.0
# A 429's detail: "Request was throttled. Expected available in 1 second."
THROTTLED = re.compile(r"available in (\d+(?:\.\d+)?) second", re.IGNORECASE)
# A prediction the model's safety checker stopped fails like any other, with one of these in `error`:
# the NSFW checkers of the image models, and Replicate's own "flagged as sensitive (E005)".
SAFETY_FAILURE = re.compile(r"\bNSFW\b|flagged as sensitive|\(E005\)", re.IGNORECASE)
OUTPUT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
}


def data_uri(image: InputImage) -> str:
    """File inputs go inline as a data URI. Replicate recommends that only under 1 MB (beyond, its
    Files API takes an upload, which Pulse does not use yet)."""
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode()}"


# ---- the models Pulse knows: one entry each -----------------------------------------------

FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


def flux_schnell_input(request: ImageRequest) -> Input:
    """black-forest-labs/flux-schnell: prompt, num_outputs 1-4, aspect_ratio from FLUX_ASPECT_RATIOS
    (default 1:1); output_format is left at its default (webp)."""
    return {"prompt": request.prompt, "num_outputs": request.count, **set_fields(aspect_ratio=request.aspect_ratio)}


def kling_v25_input(request: VideoRequest) -> Input:
    """kwaivgi/kling-v2.5-turbo-pro: prompt, duration 5 or 10, aspect_ratio 16:9/9:16/1:1, or a
    start_image as the first frame (the model then ignores aspect_ratio, so it is not sent)."""
    if request.image is not None:
        return {"prompt": request.prompt, "duration": request.duration_s, "start_image": data_uri(request.image)}
    return {"prompt": request.prompt, "duration": request.duration_s, **set_fields(aspect_ratio=request.aspect_ratio)}


def generic_image_input(request: ImageRequest) -> Input:
    """A model Pulse has no entry for. num_outputs only when more than one: many image models have
    no such field, and the default of those that do is one."""
    count = request.count if request.count != 1 else None
    return {"prompt": request.prompt, **set_fields(num_outputs=count, aspect_ratio=request.aspect_ratio)}


def generic_video_input(request: VideoRequest) -> Input:
    image = data_uri(request.image) if request.image is not None else None
    fields = set_fields(aspect_ratio=request.aspect_ratio, resolution=request.resolution, image=image)
    return {"prompt": request.prompt, "duration": request.duration_s, **fields}


@dataclass(frozen=True)
class ReplicateModel:
    """A model on Replicate as Pulse knows it: what it accepts, and Pulse's request as its input."""

    image_spec: ImageSpec | None = None
    image_input: Callable[[ImageRequest], Input] = generic_image_input
    video_spec: VideoSpec | None = None
    video_input: Callable[[VideoRequest], Input] = generic_video_input


UNKNOWN_MODEL = ReplicateModel()
MODELS = {
    "black-forest-labs/flux-schnell": ReplicateModel(
        image_spec=ImageSpec(max_count=4, aspect_ratios=FLUX_ASPECT_RATIOS), image_input=flux_schnell_input
    ),
    "kwaivgi/kling-v2.5-turbo-pro": ReplicateModel(
        video_spec=VideoSpec(durations=(5, 10), aspect_ratios=("16:9", "9:16", "1:1"), first_frame=True),
        video_input=kling_v25_input,
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """A route's upstream model: "owner/name", or "owner/name:version" to pin a version."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        name, _, version = model.partition(":")
        owner, _, model_name = name.partition("/")
        if not owner or not model_name or "/" in model_name:
            raise ValueError(f"{model!r} is not a Replicate model (owner/name or owner/name:version)")
        return cls(name, version or None)

    @property
    def known(self) -> ReplicateModel:
        return MODELS.get(self.name, UNKNOWN_MODEL)

    def create(self, input: Input) -> tuple[str, Input]:
        """The create endpoint's path and body: a pinned version goes through /v1/predictions."""
        if self.version:
            return "/v1/predictions", {"version": self.version, "input": input}
        return f"/v1/models/{self.name}/predictions", {"input": input}


# ---- reading a prediction -------------------------------------------------------------------


def output_type(url: str) -> str:
    extension = URL(url).path.rpartition(".")[2].lower()
    return OUTPUT_TYPES.get(extension, "application/octet-stream")


def prediction_outputs(prediction: Mapping[str, Any]) -> list[MediaOutput]:
    """A succeeded prediction's files: its output is one URL, or a list of them."""
    output = prediction["output"]
    urls = [output] if isinstance(output, str) else list(output)
    if not urls or not all(isinstance(url, str) and url.startswith(("https://", "http://")) for url in urls):
        raise ValueError(f"output is not file URLs: {str(output)[:100]}")
    return [MediaOutput(output_type(url), url=url) for url in urls]


def prediction_id(prediction: Mapping[str, Any]) -> str:
    value = prediction["id"]
    if not isinstance(value, str) or not value:
        raise ValueError("a prediction without an id")
    return value


def problem_codes(problem: Mapping[str, Any]) -> dict[str, Any]:
    """The problem's title and type, for logs (e.g. "Input validation failed")."""
    names = ("title", "type")
    return {f"upstream_{name}": problem[name] for name in names if isinstance(problem.get(name), str)}


class ReplicateClient(HttpProviderClient):
    # Polling a prediction: quick at first (most images take a few seconds), then less often.
    first_poll_s = 0.5
    max_poll_s = 5.0
    poll_growth = 1.5

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider.api_key}"}

    # ---- errors -----------------------------------------------------------------------

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        problem = body if isinstance(body, dict) else {}
        return self.error(
            self.upstream_message(problem.get("detail") or problem.get("title") or f"HTTP {status}"),
            retryable=status in RETRYABLE_STATUSES,
            status=status,
            code=STATUS_CODES.get(status, "upstream_error"),
            retry_after_s=self.retry_delay(headers, problem),
            details=problem_codes(problem),
        )

    def retry_delay(self, headers: Mapping[str, str], error: Mapping[str, Any]) -> float | None:
        """retry-after when sent, else the wait a 429's detail names."""
        from_headers = retry_after_s(headers)
        if from_headers is not None:
            return from_headers
        match = THROTTLED.search(str(error.get("detail") or ""))
        return seconds(match.group(1)) if match else None

    def failed(self, prediction: Mapping[str, Any]) -> ProviderError:
        """A prediction that ended without output. The model's own failure is not retried (the same
        input would fail again); a safety checker's refusal is a content policy violation."""
        status, error = prediction.get("status"), str(prediction.get("error") or "the prediction failed")
        if status == "canceled":
            # Pulse cancels only what it has stopped waiting for: this was canceled upstream.
            return self.error("the prediction was canceled upstream", retryable=True, code="upstream_canceled")
        code = CONTENT_POLICY_VIOLATION if SAFETY_FAILURE.search(error) else "upstream_error"
        return self.error(self.upstream_message(error), retryable=False, code=code)

    def reference(self, model: str) -> ModelRef:
        try:
            return ModelRef.parse(model)
        except ValueError as exc:
            # The route names no Replicate model: Pulse's own configuration, so another candidate may serve.
            raise self.error(str(exc), retryable=True, code="model_not_found") from exc

    # ---- predictions ------------------------------------------------------------------------

    async def send(self, path: str, body: Input | None = None, *, wait_s: int | None = None) -> dict[str, Any]:
        """POST to the API and return the prediction answered; `wait_s` holds the request until the
        prediction ends or that many seconds pass (so the read timeout must outlast it)."""
        headers = self.headers() | ({"Prefer": f"wait={wait_s}"} if wait_s else {})
        read_s = max(self.provider.read_timeout_s, (wait_s or 0) + 5)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.provider.connect_timeout_s, sock_read=read_s)
        try:
            async with self.session.post(self.endpoint(path), json=body, headers=headers, timeout=timeout) as response:
                await self.raise_for_status(response)
                raw = await response.read()
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        return self.decode(raw)

    async def create(self, ref: ModelRef, input: Input, *, wait_s: int | None = None) -> dict[str, Any]:
        path, body = ref.create(input)
        return await self.send(path, body, wait_s=wait_s)

    async def read(self, prediction_id: str) -> dict[str, Any]:
        return await self.get_json(self.endpoint(f"/v1/predictions/{prediction_id}"))

    async def cancel(self, prediction_id: str) -> None:
        await self.send(f"/v1/predictions/{prediction_id}/cancel")

    async def cancel_quietly(self, prediction_id: str) -> None:
        """Best effort, in a task of its own so that the caller's cancellation does not stop it: a
        prediction nobody will collect still runs, and bills, until it is canceled."""
        task = asyncio.ensure_future(asyncio.wait_for(self.cancel(prediction_id), CANCEL_TIMEOUT_S))
        try:
            await asyncio.shield(task)
        except (ProviderError, TimeoutError) as exc:
            logger.warning("could not cancel Replicate prediction %s: %s", prediction_id, exc)

    async def finish(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """Poll until the prediction ends, at most the provider's read timeout. When Pulse stops
        waiting first (cancelled, timed out, a poll failed), the prediction is canceled upstream."""
        if prediction.get("status") not in RUNNING:
            return prediction
        upstream_id = self.parse(prediction_id, prediction)
        try:
            async with asyncio.timeout(self.provider.read_timeout_s):
                return await self.poll_until_done(upstream_id)
        except (asyncio.CancelledError, TimeoutError, ProviderError) as exc:
            await self.cancel_quietly(upstream_id)
            if isinstance(exc, TimeoutError):
                message = "timed out waiting for the prediction"
                raise self.error(message, retryable=True, code="upstream_timeout") from exc
            raise

    async def poll_until_done(self, upstream_id: str) -> dict[str, Any]:
        delay = self.first_poll_s
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * self.poll_growth, self.max_poll_s)
            prediction = await self.read(upstream_id)
            if prediction.get("status") not in RUNNING:
                return prediction

    def outputs(self, prediction: Mapping[str, Any]) -> list[MediaOutput]:
        if prediction.get("status") != "succeeded":
            raise self.failed(prediction)
        return self.parse(prediction_outputs, prediction)

    # ---- images --------------------------------------------------------------------------------

    def image_spec(self, model: str) -> ImageSpec | None:
        return MODELS.get(model.partition(":")[0], UNKNOWN_MODEL).image_spec

    async def generate_image(self, request: ImageRequest, *, model: str) -> ImageResult:
        ref = self.reference(model)
        wait_s = max(1, min(MAX_WAIT_S, int(self.provider.read_timeout_s)))
        prediction = await self.create(ref, ref.known.image_input(request), wait_s=wait_s)
        images = self.outputs(await self.finish(prediction))
        return ImageResult(images, model, Usage(images=len(images)))

    # ---- videos --------------------------------------------------------------------------------

    def video_spec(self, model: str) -> VideoSpec | None:
        return MODELS.get(model.partition(":")[0], UNKNOWN_MODEL).video_spec

    async def start_video(self, request: VideoRequest, *, model: str) -> VideoOperation:
        if request.extends is not None:
            raise self.unsupported("video extensions")  # no model in MODELS has them
        ref = self.reference(model)
        prediction = await self.create(ref, ref.known.video_input(request))
        # Replicate bills these models by the seconds asked for; they are delivered once it is done.
        usage = Usage(video_seconds=Decimal(request.duration_s))
        return self.settled(VideoOperation(self.parse(prediction_id, prediction), model, usage=usage), prediction)

    async def poll_video(self, operation: VideoOperation) -> VideoOperation:
        return self.settled(operation, await self.read(operation.upstream_id))

    def settled(self, operation: VideoOperation, prediction: Mapping[str, Any]) -> VideoOperation:
        """The operation as the prediction stands: still running, or done with its outputs."""
        if prediction.get("status") in RUNNING:
            return operation
        outputs = self.outputs(prediction)
        return VideoOperation(operation.upstream_id, operation.upstream_model, True, outputs, operation.usage)

    async def cancel_video(self, operation: VideoOperation) -> None:
        await self.cancel(operation.upstream_id)
