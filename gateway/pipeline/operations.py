"""What a request asks a provider to do, one class per operation: chat complete, chat stream,
image generation, the start of a video generation.

The pipeline is the same for all of them; an operation supplies what differs: the modality
(so the routes and prices that apply), the prompt texts moderation screens, the worst case
the budget holds, the provider call, whether an answer is a refusal, any check of the answer,
and the usage billed (tokens for chat, images; video seconds come with video jobs, whose
seconds are billed when the job ends rather than when the call returns).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any, ClassVar, Generic, Self, TypeVar

from django.conf import settings

from billing.budget import estimate_tokens, worst_case_tokens
from billing.pricing import dearest_chat_usage
from core.modality import Modality
from core.principal import Principal
from gateway.chat_formats import ChatCall
from gateway.moderation.pipeline import moderate_answer
from providers.clients import client_for
from providers.clients.base import (
    CONTENT_FILTER,
    UNSUPPORTED_CAPABILITY,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ImageRequest,
    ImageResult,
    InputImage,
    MediaOutput,
    ProviderConfig,
    ProviderError,
    Tool,
    Unsupported,
    Usage,
    VideoOperation,
    VideoRequest,
)
from providers.routing import Candidate, Route

R = TypeVar("R")


class Operation(ABC, Generic[R]):
    """One provider call, whichever candidate makes it; R is what a call returns."""

    modality: ClassVar[str]
    model: str  # the public model name the client asked for
    fallbacks: tuple[str, ...] = ()  # the request's own fallback models, after the route's chain

    @abstractmethod
    def prompt(self) -> tuple[list[str], Sequence[str]]:
        """The texts moderation screens, and the request param naming each (for a block's error)."""

    @abstractmethod
    def with_prompt(self, texts: list[str]) -> Self:
        """This operation with the texts moderation let through (redacted); self when unchanged."""

    @abstractmethod
    def worst_case(self, candidate: Candidate) -> Usage:
        """The most this operation can use on this candidate: what the budget holds."""

    @abstractmethod
    async def call(self, candidate: Candidate) -> R:
        """Ask the candidate's provider; any failure is a ProviderError."""

    def unsupported(self, candidate: Candidate) -> Unsupported | None:
        """The first thing in the request this candidate's provider cannot honour (None: it can do it all)."""
        return None

    def refused(self, result: R) -> bool:
        """Whether the provider declined the prompt (content policy) in an otherwise normal answer."""
        return False

    async def checked(self, result: R, *, route: Route, principal: Principal, request_id: str) -> R:
        """The result as the client may see it, after any check of the provider's answer (a
        ContentBlocked withholds it); the result itself by default."""
        return result

    async def discard(self, result: R) -> None:
        """Release a result that will not be used (a refused stream's connection)."""

    @abstractmethod
    def usage_of(self, result: R) -> Usage:
        """What result is billed for."""

    def estimate(self, output_chars: int, known: Usage | None = None) -> Usage:
        """Usage when the provider did not report all of it (a cut stream): marked estimated. known:
        the part it did report, if any."""
        return known or Usage(estimated=True)

    def usage_billed(self, reported: Usage | None, output_chars: int = 0) -> Usage:
        """The provider's usage; when it reported none or only part (None, or a Usage marked
        estimated), an estimate from what was produced and what it did report."""
        return reported if reported is not None and not reported.estimated else self.estimate(output_chars, reported)


# --------------------------------------------------------------------------- chat
# The most input tokens one image in a chat message costs at any provider Pulse routes to (OpenAI's
# high detail tops out near 1,500 for gpt-4o and 2,500 for the patch-based models, Anthropic's near
# 1,600, Gemini 3's high media resolution at 1,120): what the budget holds per image.
IMAGE_TOKENS_AT_MOST = 2_500


def message_bytes(message: ChatMessage) -> int:
    calls = sum(len(call.name) + len(call.arguments.encode()) for call in message.tool_calls)
    return len(message.content.encode()) + calls


def tool_bytes(tool: Tool) -> int:
    return len(tool.name) + len(tool.description.encode()) + len(json.dumps(tool.parameters or {}).encode())


def with_text(message: ChatMessage, text: str) -> ChatMessage:
    """The message with its text replaced (moderation's redaction), its images kept, before the text."""
    if not message.parts:
        return replace(message, content=text)
    return replace(message, content=text, parts=(*message.images, text))


@lru_cache(maxsize=64)
def _message_params(count: int) -> tuple[str, ...]:
    return tuple(f"messages.{index}.content" for index in range(count))


@dataclass(frozen=True)
class ChatOperation(Operation[R]):
    chat: ChatCall
    modality: ClassVar[str] = Modality.CHAT

    # Read-only views of the call (the base class declares them as plain attributes).
    @property
    def model(self) -> str:  # type: ignore[override]
        return self.chat.model

    @property
    def fallbacks(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.chat.fallbacks

    def prompt(self) -> tuple[list[str], Sequence[str]]:
        messages = self.chat.request.messages
        return [message.content for message in messages], _message_params(len(messages))

    def with_prompt(self, texts: list[str]) -> Self:
        messages = self.chat.request.messages
        if [message.content for message in messages] == texts:
            return self
        redacted = tuple(
            with_text(message, text) if text != message.content else message
            for message, text in zip(messages, texts, strict=True)
        )
        return replace(self, chat=replace(self.chat, request=replace(self.chat.request, messages=redacted)))

    def request_for(self, candidate: Candidate) -> ChatRequest:
        """The request as sent to one candidate: the route's default max_tokens when the client gave none,
        so every call has a bounded cost (and Anthropic, which requires it, gets one)."""
        request = self.chat.request
        if request.max_tokens is not None:
            return request
        return replace(request, max_tokens=candidate.route.default_max_tokens)

    def unsupported(self, candidate: Candidate) -> Unsupported | None:
        client = client_for(candidate.provider)
        return client.unsupported_param(self.request_for(candidate), model=candidate.upstream_model)

    def worst_case(self, candidate: Candidate) -> Usage:
        # UTF-8 bytes, not characters: an emoji or a rare CJK character can be several tokens, but no
        # tokenizer makes more tokens than bytes. Tool definitions and calls are prompt text too.
        request = self.chat.request
        prompt_bytes = sum(message_bytes(m) for m in request.messages) + sum(tool_bytes(t) for t in request.tools)
        max_tokens = request.max_tokens or candidate.route.default_max_tokens
        input_tokens, output_tokens = worst_case_tokens(prompt_bytes, max_tokens * request.n, len(request.messages))
        images = sum(len(m.images) for m in request.messages)
        return dearest_chat_usage(input_tokens + images * IMAGE_TOKENS_AT_MOST, output_tokens, candidate.route.prices)

    def estimate(self, output_chars: int, known: Usage | None = None) -> Usage:
        output_tokens = estimate_tokens(output_chars)
        if known is not None and known.input_tokens:  # the prompt as the provider counted it, before a cut
            return replace(known, output_tokens=max(known.output_tokens, output_tokens), estimated=True)
        prompt_chars = sum(message_bytes(m) for m in self.chat.request.messages)
        return Usage(estimate_tokens(prompt_chars), output_tokens, estimated=True)


@dataclass(frozen=True)
class ChatCompletion(ChatOperation[ChatResult]):
    async def call(self, candidate: Candidate) -> ChatResult:
        client = client_for(candidate.provider)
        return await client.complete(self.request_for(candidate), model=candidate.upstream_model)

    def refused(self, result: ChatResult) -> bool:
        return result.finish_reason == CONTENT_FILTER

    def usage_of(self, result: ChatResult) -> Usage:
        return self.usage_billed(result.usage, len(result.content))

    async def checked(self, result: ChatResult, *, route: Route, principal: Principal, request_id: str) -> ChatResult:
        """MODERATION_CHECK_RESPONSES: the answer through the moderation hooks before the client sees it."""
        if not settings.MODERATION_CHECK_RESPONSES:
            return result
        content = await moderate_answer(result.content, route=route, principal=principal, request_id=request_id)
        return result if content == result.content else replace(result, content=content)


@dataclass
class OpenedStream:
    """A stream that has produced its first delta: from here on the provider is fixed."""

    first: ChatDelta
    rest: AsyncGenerator[ChatDelta]

    async def aclose(self) -> None:
        await self.rest.aclose()


@dataclass(frozen=True)
class ChatStreaming(ChatOperation[OpenedStream]):
    """Opening a stream: a candidate answers once its first delta arrives (nothing has reached the
    client yet, so a failure before then still falls back)."""

    async def call(self, candidate: Candidate) -> OpenedStream:
        deltas = client_for(candidate.provider).stream(self.request_for(candidate), model=candidate.upstream_model)
        try:
            first = await anext(deltas)
        except StopAsyncIteration:
            raise ProviderError(
                "the stream ended before any output", candidate.provider.name, True, code="upstream_stream_cut"
            ) from None
        except BaseException:
            await deltas.aclose()
            raise
        return OpenedStream(first, deltas)

    def refused(self, result: OpenedStream) -> bool:
        return result.first.finish_reason == CONTENT_FILTER and not result.first.content

    async def discard(self, result: OpenedStream) -> None:
        await result.aclose()

    def usage_of(self, result: OpenedStream) -> Usage:
        # Billed here only when a stream is refused at its start; a stream that runs is metered as it
        # ends (gateway.pipeline.run.MeteredStream).
        return self.usage_billed(result.first.usage, result.first.produced_chars())


# --------------------------------------------------------------------------- media
@dataclass(frozen=True)
class MediaOperation(Operation[R]):
    model: str
    prompt_text: str
    fallbacks: tuple[str, ...] = ()

    def prompt(self) -> tuple[list[str], Sequence[str]]:
        return [self.prompt_text], ("prompt",)

    def with_prompt(self, texts: list[str]) -> Self:
        [text] = texts
        return self if text == self.prompt_text else replace(self, prompt_text=text)


# Copies a provider's outputs into Pulse's storage (a media job's): URLs upstream expire.
Keep = Callable[[ProviderConfig, list[MediaOutput]], Awaitable[list[MediaOutput]]]


@dataclass(frozen=True)
class ImageGeneration(MediaOperation[ImageResult]):
    count: int = 1
    size: str | None = None
    aspect_ratio: str | None = None
    image: InputImage | None = None  # the image to edit
    keep: Keep | None = None  # the outputs are kept before the request is billed SUCCEEDED
    modality: ClassVar[str] = Modality.IMAGE

    def worst_case(self, candidate: Candidate) -> Usage:
        return Usage(images=self.count)

    async def call(self, candidate: Candidate) -> ImageResult:
        request = ImageRequest(self.prompt_text, self.count, self.size, self.aspect_ratio, self.image)
        return await client_for(candidate.provider).generate_image(request, model=candidate.upstream_model)

    def usage_of(self, result: ImageResult) -> Usage:
        return result.usage

    async def checked(self, result: ImageResult, *, route: Route, principal: Principal, request_id: str) -> ImageResult:
        if self.keep is None:
            return result
        return replace(result, images=await self.keep(route.provider, result.images))


@dataclass
class VideoStarted:
    """A video's first step, accepted by a provider: the operation to poll, and the seconds of each
    step the whole duration takes on this provider's model (a generation, then extensions)."""

    operation: VideoOperation
    steps: tuple[int, ...]


@dataclass(frozen=True)
class VideoGeneration(MediaOperation[VideoStarted]):
    """Starting a video. Only the start goes through the candidates loop (a provider that does not
    take the job falls back); polling, the further steps and the bill happen as the job runs, and
    the seconds are billed when it ends."""

    duration_s: int = 8
    aspect_ratio: str | None = None
    resolution: str | None = None
    image: InputImage | None = None  # the first frame
    modality: ClassVar[str] = Modality.VIDEO

    def worst_case(self, candidate: Candidate) -> Usage:
        return Usage(video_seconds=Decimal(self.duration_s))

    def steps_on(self, candidate: Candidate) -> tuple[int, ...]:
        """The steps that make duration_s on this candidate's model (one, when the model is unknown:
        the provider checks the duration itself)."""
        client = client_for(candidate.provider)
        spec = client.video_spec(candidate.upstream_model)
        steps = (self.duration_s,) if spec is None else spec.steps(self.duration_s)
        if steps is None:  # this fallback's model cannot make it: the next candidate may
            raise client.error(
                f"{candidate.upstream_model} cannot make a {self.duration_s}-second video",
                retryable=True,
                code=UNSUPPORTED_CAPABILITY,
            )
        return steps

    def step_request(self, seconds: int, extends: dict[str, Any] | None = None) -> VideoRequest:
        """One step: the generation (with the first frame), or an extension of the video so far."""
        image = None if extends else self.image
        return VideoRequest(self.prompt_text, seconds, self.aspect_ratio, self.resolution, image, extends)

    async def call(self, candidate: Candidate) -> VideoStarted:
        steps = self.steps_on(candidate)
        client = client_for(candidate.provider)
        operation = await client.start_video(self.step_request(steps[0]), model=candidate.upstream_model)
        return VideoStarted(operation, steps)

    def usage_of(self, result: VideoStarted) -> Usage:
        return Usage()  # nothing is delivered yet: the job bills the seconds when it ends
