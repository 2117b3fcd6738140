"""OpenAI chat completions, also spoken by OpenAI-compatible servers (vLLM, Ollama, ...), and
OpenAI's Images API (generations, and edits of an uploaded image).

Pulse's normalised request is already OpenAI-shaped, so the translation is thin; what
differs between `openai` and `openai_compatible` is the name of the token limit and how
complete the usage report is.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import aiohttp

from core.errors import CONTENT_POLICY_VIOLATION
from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    TOOL_CALLS,
    ChatDelta,
    ChatRequest,
    ChatResult,
    ImageRequest,
    ImageResult,
    ImageSpec,
    InputImage,
    MediaOutput,
    ProviderError,
    Usage,
)
from providers.clients.http_client import TRANSPORT_ERRORS, HttpProviderClient, error_object, set_fields

FINISH_REASONS = {
    "stop": STOP,
    "length": LENGTH,
    "content_filter": CONTENT_FILTER,
    "tool_calls": TOOL_CALLS,
    "function_call": TOOL_CALLS,  # the legacy name of tool_calls
}
DONE = "[DONE]"

# What each image model takes (openai-python's image_generate_params / image_edit_params).
GPT_IMAGE = ImageSpec(max_count=10, sizes=("1024x1024", "1536x1024", "1024x1536", "auto"), edits=True)
IMAGE_SPECS = {
    "gpt-image-1": GPT_IMAGE,
    "gpt-image-1-mini": GPT_IMAGE,
    "dall-e-3": ImageSpec(max_count=1, sizes=("1024x1024", "1792x1024", "1024x1792")),
    "dall-e-2": ImageSpec(max_count=10, sizes=("256x256", "512x512", "1024x1024"), edits=True),
}
# The safety system's refusal: gpt-image says moderation_blocked, DALL-E content_policy_violation.
SAFETY_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# output_format -> content type; gpt-image answers PNG unless asked otherwise, DALL-E always PNG.
IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
UPLOAD_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def openai_usage(usage: dict[str, Any] | None) -> Usage:
    """prompt_tokens already includes the cached ones and completion_tokens the reasoning
    ones. Compatible servers often leave the *_details objects out, or null."""
    if not usage:
        return Usage(estimated=True)  # a server that reports nothing: the gateway estimates
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=prompt_details.get("cached_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "", STOP)


def completion_result(completion: dict[str, Any], model: str) -> ChatResult:
    choice = completion["choices"][0]
    return ChatResult(
        content=choice["message"].get("content") or "",
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=openai_usage(completion.get("usage")),
        upstream_model=completion.get("model") or model,
        upstream_id=completion.get("id"),
    )


def read_chunk(chunk: dict[str, Any]) -> tuple[str, str | None, Usage | None]:
    """(text, raw finish reason, usage) of one chunk; the usage chunk has `choices: []`."""
    choices = chunk.get("choices") or []
    choice = choices[0] if choices else {}
    text = (choice.get("delta") or {}).get("content") or ""
    usage = openai_usage(chunk["usage"]) if chunk.get("usage") else None
    return text, choice.get("finish_reason"), usage


def image_output(item: dict[str, Any], content_type: str) -> MediaOutput:
    """gpt-image answers the bytes (b64_json); DALL-E a URL that expires after an hour."""
    if item.get("b64_json"):
        return MediaOutput(content_type, data=base64.b64decode(item["b64_json"], validate=True))
    return MediaOutput(content_type, url=str(item["url"]))


def image_result(answer: dict[str, Any], model: str) -> ImageResult:
    content_type = IMAGE_FORMATS.get(answer.get("output_format") or "png", "image/png")
    images = [image_output(item, content_type) for item in answer["data"]]
    if not images:
        raise ValueError("no images in data")
    tokens = answer.get("usage") or {}  # gpt-image bills tokens as well; DALL-E reports none
    usage = Usage(
        input_tokens=tokens.get("input_tokens") or 0, output_tokens=tokens.get("output_tokens") or 0, images=len(images)
    )
    return ImageResult(images, model, usage)


def edit_form(request: ImageRequest, image: InputImage, model: str) -> aiohttp.FormData:
    """The edits endpoint takes multipart/form-data. The image part must say its content type: the API
    checks the part's type, and a part without one is application/octet-stream, which it refuses.
    One image goes in the `image` part, which every edit model takes (`image[]` is gpt-image's
    name for several)."""
    form = aiohttp.FormData()
    for name, value in set_fields(model=model, prompt=request.prompt, n=str(request.count), size=request.size).items():
        form.add_field(name, value)
    filename = f"image.{UPLOAD_EXTENSIONS.get(image.content_type, 'png')}"
    form.add_field("image", image.data, filename=filename, content_type=image.content_type)
    return form


class OpenAIClient(HttpProviderClient):
    # Current OpenAI models reject max_tokens; vLLM and Ollama only know max_tokens.
    token_limit_field = "max_completion_tokens"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider.api_key}"}

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = super().status_error(status, body, headers)
        if error_object(body).get("code") in SAFETY_CODES:
            # OpenAI's safety system refused the prompt: Pulse does not shop a refused prompt around.
            return replace(error, retryable=False, code=CONTENT_POLICY_VIOLATION)
        return error

    @property
    def url(self) -> str:
        return self.endpoint("/chat/completions")  # base_url already ends in /v1

    def body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            **set_fields(temperature=request.temperature, top_p=request.top_p, stop=list(request.stop)),
            **set_fields(**{self.token_limit_field: request.max_tokens}),
        }

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        completion = await self.post_json(self.url, self.body(request, model))
        return self.parse(completion_result, completion, model)

    async def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        # Without include_usage a stream carries no usage at all, and Pulse meters every stream.
        body = self.body(request, model) | {"stream": True, "stream_options": {"include_usage": True}}
        finish, usage = STOP, Usage(estimated=True)
        async with aclosing(self.post_events(self.url, body)) as events:
            async for _event, data in events:
                if data == DONE:
                    yield ChatDelta(finish_reason=finish, usage=usage)
                    return
                chunk = self.decode(data)
                if "error" in chunk:
                    raise self.stream_error(error_object(chunk))
                text, reason, chunk_usage = self.parse(read_chunk, chunk)
                if text:
                    yield ChatDelta(content=text)
                finish = finish_reason(reason) if reason else finish
                usage = chunk_usage or usage
        raise self.stream_cut()

    async def moderate(self, texts: list[str], *, model: str, timeout_s: float) -> list[dict[str, Any]]:
        """POST /moderations: one result object per text, in order."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        body = await self.post_json(self.endpoint("/moderations"), {"input": texts, "model": model}, timeout=timeout)
        return self.parse(moderation_results, body, len(texts))

    def image_spec(self, model: str) -> ImageSpec | None:
        return IMAGE_SPECS.get(model)

    async def generate_image(self, request: ImageRequest, *, model: str) -> ImageResult:
        if request.image is not None:
            answer = await self.post_form(self.endpoint("/images/edits"), edit_form(request, request.image, model))
        else:
            body = {"model": model, "prompt": request.prompt, "n": request.count, **set_fields(size=request.size)}
            answer = await self.post_json(self.endpoint("/images/generations"), body)
        return self.parse(image_result, answer, model)

    async def post_form(self, url: str, form: aiohttp.FormData) -> dict[str, Any]:
        """POST multipart/form-data and return the JSON object answered; failures are ProviderErrors."""
        try:
            async with self.session.post(url, data=form, headers=self.headers(), timeout=self.timeout) as response:
                await self.raise_for_status(response)
                raw = await response.read()
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        return self.decode(raw)


class OpenAICompatibleClient(OpenAIClient):
    """vLLM, Ollama, LiteLLM and other servers that speak the chat completions protocol."""

    token_limit_field = "max_tokens"


def moderation_results(body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    results = body["results"]
    if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"expected {count} results")
    return results
