"""The two create requests, parsed and checked: the fields by DRF serializers (which also document
the endpoints), then the values against what the requested model accepts (its provider client's
ImageSpec or VideoSpec), so a request a provider would refuse gets a 400 naming the allowed values
before any job exists."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from gateway.chat_formats import validated
from gateway.errors import InvalidRequest
from gateway.jobs.storage import data_url_image
from gateway.pipeline import ImageGeneration, VideoGeneration
from providers.clients import client_for
from providers.clients.base import InputImage
from providers.routing import Candidate

MAX_PROMPT_CHARS = 32_000


def _image_field() -> serializers.CharField:
    return serializers.CharField(required=False, help_text="A data URL (data:image/png;base64,...): PNG, JPEG or WebP.")


class MediaRequest(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    prompt = serializers.CharField(max_length=MAX_PROMPT_CHARS, trim_whitespace=False)
    aspect_ratio = serializers.CharField(max_length=10, required=False)
    fallbacks = serializers.ListField(child=serializers.CharField(max_length=200), max_length=5, required=False)

    def validate_image(self, value: str) -> InputImage:
        try:
            return data_url_image(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class ImageGenerateRequest(MediaRequest):
    count = serializers.IntegerField(min_value=1, max_value=10, default=1)
    size = serializers.CharField(max_length=20, required=False, help_text="Pixel size, e.g. 1024x1024.")
    image = _image_field()


class VideoGenerateRequest(MediaRequest):
    duration_s = serializers.IntegerField(min_value=1, max_value=600, default=8)
    resolution = serializers.CharField(max_length=10, required=False, help_text="e.g. 720p, 1080p.")
    image = _image_field()


# What a job runs: the pipeline's two media operations.
JobOperation = ImageGeneration | VideoGeneration


def job_request(operation: JobOperation) -> dict[str, Any]:
    """The request as the job row keeps it: the prompt as moderation let it through (the input image is
    stored apart, gateway.jobs.storage)."""
    fields: dict[str, Any] = {"prompt": operation.prompt_text, "aspect_ratio": operation.aspect_ratio}
    if isinstance(operation, ImageGeneration):
        fields.update(count=operation.count, size=operation.size)
    else:
        fields.update(duration_s=operation.duration_s, resolution=operation.resolution)
    return {name: value for name, value in fields.items() if value is not None}


def parse_image(body: Any) -> ImageGeneration:
    data = validated(ImageGenerateRequest(data=body))
    return ImageGeneration(
        data["model"],
        data["prompt"],
        tuple(data.get("fallbacks", ())),
        count=data["count"],
        size=data.get("size"),
        aspect_ratio=data.get("aspect_ratio"),
        image=data.get("image"),
    )


def parse_video(body: Any) -> VideoGeneration:
    data = validated(VideoGenerateRequest(data=body))
    return VideoGeneration(
        data["model"],
        data["prompt"],
        tuple(data.get("fallbacks", ())),
        duration_s=data["duration_s"],
        aspect_ratio=data.get("aspect_ratio"),
        resolution=data.get("resolution"),
        image=data.get("image"),
    )


def _allowed(param: str, value: Any, allowed: tuple[Any, ...] | list[Any], model: str) -> None:
    if value is not None and value not in allowed:
        listed = ", ".join(str(v) for v in allowed) if allowed else "none: leave it out"
        raise InvalidRequest(
            f"{param}: {value!r} is not accepted by {model}; allowed: {listed}.", code="invalid_value", param=param
        )


def check_for_model(op: JobOperation, candidate: Candidate) -> None:
    """The request's values against what the requested model's upstream model accepts (unknown
    upstream models are left to the provider)."""
    client = client_for(candidate.provider)
    model = op.model
    if isinstance(op, ImageGeneration):
        image_spec = client.image_spec(candidate.upstream_model)
        if image_spec is None:
            return
        if op.count > image_spec.max_count:
            raise InvalidRequest(
                f"count: {model} makes at most {image_spec.max_count} image(s) per request.",
                code="invalid_value",
                param="count",
            )
        _allowed("size", op.size, image_spec.sizes, model)
        _allowed("aspect_ratio", op.aspect_ratio, image_spec.aspect_ratios, model)
        if op.image is not None and not image_spec.edits:
            raise InvalidRequest(f"image: {model} does not edit images.", code="invalid_value", param="image")
        return
    video_spec = client.video_spec(candidate.upstream_model)
    if video_spec is None:
        return
    steps = video_spec.steps(op.duration_s)
    if steps is None:
        _allowed("duration_s", op.duration_s, video_spec.allowed_durations(), model)
    _allowed("aspect_ratio", op.aspect_ratio, video_spec.aspect_ratios, model)
    _allowed("resolution", op.resolution, video_spec.resolutions, model)
    if steps and len(steps) > 1 and video_spec.extension_resolutions:
        extended = f"{model} at {op.duration_s} s (an extended video)"
        _allowed("resolution", op.resolution, video_spec.extension_resolutions, extended)
    if op.image is not None and not video_spec.first_frame:
        raise InvalidRequest(f"image: {model} takes no first frame.", code="invalid_value", param="image")
