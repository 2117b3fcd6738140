"""The shape every provider client shares: Pulse's normalised requests and answers (chat,
images, video), one error type that says whether another candidate may be tried, and the
small base class that owns the pooled HTTP session and the timeouts.

A client implements the capabilities its provider has (`complete`, `stream`,
`generate_image`, `start_video` / `poll_video` / `cancel_video`); the others answer
`unsupported_capability`, which the pipeline treats like any provider that cannot serve.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp

from providers.http import shared_session

# Finish reasons, normalised (the OpenAI vocabulary).
STOP, LENGTH, CONTENT_FILTER, TOOL_CALLS = "stop", "length", "content_filter", "tool_calls"

# Upstream statuses worth another candidate: overload, throttling, server faults.
# 401/403 mean Pulse's own provider credentials are wrong: not the client's fault,
# so another provider may still answer.
# 402 is Anthropic's billing_error: Pulse's own account is out of credit.
# A client asked for a capability its provider does not have (a route set up for the wrong provider).
UNSUPPORTED_CAPABILITY = "unsupported_capability"

RETRYABLE_STATUSES = frozenset({401, 402, 403, 408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class ProviderConfig:
    """A provider as the hot path sees it (from the routing snapshot, key decrypted)."""

    name: str
    kind: str
    base_url: str
    api_key: str = field(repr=False)  # decrypted: never in a repr, a log line or a traceback
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0


@dataclass(frozen=True)
class ChatImage:
    """An image in a chat message: the bytes (sent as a data: URL, or fetched by Pulse), or an
    https URL for the providers that fetch images themselves."""

    url: str | None = None  # a remote https URL; None when the bytes are here
    content_type: str | None = None  # image/png, image/jpeg, image/gif, image/webp (with data)
    data: bytes | None = field(default=None, repr=False)
    detail: str | None = None  # OpenAI's "auto" | "low" | "high"

    def data_url(self) -> str:
        """The image as OpenAI takes it: its URL, or its bytes as a data: URL."""
        if self.data is None:
            return str(self.url)
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


# Gemini 3 signs its function calls and wants the signature back; OpenAI clients only echo a call's
# id, so the Gemini client carries the signature inside the id, after this separator.
CALL_ID_SIGNATURE = "__thought__"


def portable_call_id(call_id: str) -> str:
    """A call id as other providers take it: without a Gemini signature (OpenAI refuses ids over 40
    characters), so a conversation can move to another provider midway through a tool loop."""
    return call_id.partition(CALL_ID_SIGNATURE)[0]


@dataclass(frozen=True)
class ToolCall:
    """A function the model asked the client to run. arguments: JSON text, as OpenAI carries it."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call `index` has its id and name, the
    rest add to its arguments (OpenAI's chunk format)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Reasoning:
    """A model's visible thinking, kept so it can be sent back on the next turn (Anthropic requires
    the signed thinking blocks before a tool_use when thinking is on). redacted: `text` holds the
    provider's encrypted data."""

    text: str
    signature: str | None = None
    redacted: bool = False


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str  # its text: every text part, joined
    # Text and images in the order sent, when the message has images; () when `content` says it all.
    parts: tuple[str | ChatImage, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made
    tool_call_id: str | None = None  # tool: the call this result answers
    reasoning: tuple[Reasoning, ...] = ()  # assistant: its thinking, before its text and calls
    cache_control: dict[str, Any] | None = None  # Anthropic's cache breakpoint, on the message's last block
    is_error: bool = False  # tool: the result is an error (Anthropic's tool_result is_error)

    def pieces(self) -> tuple[str | ChatImage, ...]:
        """The content in order: text and images."""
        return self.parts or ((self.content,) if self.content else ())

    @property
    def images(self) -> tuple[ChatImage, ...]:
        return tuple(part for part in self.parts if isinstance(part, ChatImage))


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its parameters are a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool = False
    cache_control: dict[str, Any] | None = None  # Anthropic's cache breakpoint after this tool


@dataclass(frozen=True)
class ToolChoice:
    """auto: the model decides; none: no calls; required: at least one call; tool: call `name`."""

    mode: str  # "auto" | "none" | "required" | "tool"
    name: str | None = None


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object (json_object), or JSON matching `schema` (json_schema)."""

    type: str  # "json_object" | "json_schema"
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None  # None: the provider's default (auto when there are tools)
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    n: int = 1  # choices to generate
    seed: int | None = None
    user: str | None = None  # the end user, for the provider's abuse monitoring
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning_effort: str | None = None  # "minimal" | "low" | "medium" | "high" (OpenAI's scale)
    thinking_budget: int | None = None  # thinking tokens, when the client set a budget (Anthropic's)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None

    @property
    def system_text(self) -> str:
        """All system messages joined: the providers that take system text apart want one string."""
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def dialogue(self) -> tuple[ChatMessage, ...]:
        return tuple(m for m in self.messages if m.role != "system")

    def tool_name(self, call_id: str | None) -> str:
        """The name of the function an earlier assistant turn called with this id ("" if none did):
        the providers that answer a call by name (Gemini) need it; OpenAI's tool message has only the id."""
        for message in self.messages:
            for call in message.tool_calls:
                if call.id == call_id:
                    return call.name
        return ""


@dataclass
class Usage:
    """What a call produced, in every unit a provider bills by: tokens for chat, images, video seconds."""

    input_tokens: int = 0  # the whole prompt: cache reads and writes included
    output_tokens: int = 0  # reasoning included
    cached_input_tokens: int = 0  # read from the provider's prompt cache
    cache_write_tokens: int = 0  # written to the prompt cache (Anthropic: its 5-minute cache)
    cache_write_1h_tokens: int = 0  # written to Anthropic's 1-hour cache
    reasoning_tokens: int = 0
    images: int = 0
    video_seconds: Decimal = Decimal(0)
    estimated: bool = False  # True when the provider never reported usage (e.g. a cut stream)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatChoice:
    """One more answer to the same prompt, when the request asked for n > 1."""

    content: str
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: Any = None


@dataclass
class ChatResult:
    content: str
    finish_reason: str
    usage: Usage
    upstream_model: str
    upstream_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: tuple[Reasoning, ...] = ()
    logprobs: Any = None  # OpenAI's choice logprobs object, as the provider gave it
    more_choices: tuple[ChatChoice, ...] = ()  # choices 1..n-1 when n > 1


@dataclass
class ChatDelta:
    """One piece of a stream: text, tool-call pieces, thinking, and on the last pieces the finish
    reason and/or usage."""

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    reasoning: str = ""  # a piece of visible thinking
    reasoning_signature: str | None = None  # the signature that closes a thinking block
    redacted_reasoning: str = ""  # a whole block of encrypted thinking (Anthropic's redacted_thinking data)
    logprobs: Any = None

    def produced_chars(self) -> int:
        """Characters of output this piece carries (for estimating a cut stream's output)."""
        return len(self.content) + len(self.reasoning) + sum(len(d.arguments) for d in self.tool_calls)


@dataclass(frozen=True)
class InputImage:
    """An image the client sent along: the picture to edit, or a video's first frame."""

    content_type: str  # image/png, image/jpeg, image/webp
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    count: int = 1
    size: str | None = None  # "1024x1024", for providers that take pixel sizes
    aspect_ratio: str | None = None  # "16:9", for providers that take ratios
    image: InputImage | None = None  # edit this image rather than start from nothing


@dataclass(frozen=True)
class ImageSpec:
    """What one upstream image model accepts: requests are checked against it before a job is made."""

    max_count: int = 1  # images per request (Pulse makes several calls where the provider makes one per call)
    sizes: tuple[str, ...] = ()  # () = the model takes no pixel size
    aspect_ratios: tuple[str, ...] = ()  # () = the model takes no aspect ratio
    edits: bool = False  # takes an input image to edit


@dataclass(frozen=True)
class VideoSpec:
    """What one upstream video model accepts. A duration is made of steps: one generation of one of
    `durations`, then up to `max_extensions` extensions of `extension_s` seconds each (0: none)."""

    durations: tuple[int, ...]
    aspect_ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    extension_s: int = 0
    max_extensions: int = 0
    extension_resolutions: tuple[str, ...] = ()  # the resolutions an extended video may have (() = any)
    first_frame: bool = False  # takes an input image as the first frame

    def steps(self, duration_s: int) -> tuple[int, ...] | None:
        """The seconds each step makes, for exactly duration_s: the fewest steps (the longest first
        generation); None when no chain reaches it."""
        for extensions in range(self.max_extensions + 1 if self.extension_s else 1):
            first = duration_s - extensions * self.extension_s
            if first in self.durations:
                return (first,) + (self.extension_s,) * extensions
        return None

    def allowed_durations(self) -> list[int]:
        reach = {d + k * self.extension_s for d in self.durations for k in range(self.max_extensions + 1)}
        return sorted(reach if self.extension_s else set(self.durations))


@dataclass(frozen=True)
class MediaOutput:
    """One generated file: its bytes, or a URL the provider serves it at."""

    content_type: str
    data: bytes | None = field(default=None, repr=False)
    url: str | None = None


@dataclass
class ImageResult:
    images: list[MediaOutput]
    upstream_model: str
    usage: Usage  # images delivered (and tokens, for providers that also bill those)


@dataclass(frozen=True)
class VideoRequest:
    """One step of a video: a generation of duration_s seconds, or (extends set) an extension of the
    video an earlier step made by duration_s seconds."""

    prompt: str
    duration_s: int
    aspect_ratio: str | None = None
    resolution: str | None = None
    image: InputImage | None = None  # the first frame
    extends: dict[str, Any] | None = None  # VideoOperation.video of the step to extend


@dataclass
class VideoOperation:
    """A long-running generation at the provider: started, then polled until done. Kept as JSON on
    the job between polls (as_dict / from_dict), so any worker can carry on with it."""

    upstream_id: str  # the provider's handle: Gemini's operation name, Replicate's prediction id
    upstream_model: str
    done: bool = False
    outputs: list[MediaOutput] = field(default_factory=list)  # URLs to download, once done
    usage: Usage = field(default_factory=Usage)  # video seconds this step delivered, once done
    video: dict[str, Any] = field(default_factory=dict)  # the provider's reference to the result, to extend it

    def as_dict(self) -> dict[str, Any]:
        return {
            "upstream_id": self.upstream_id,
            "upstream_model": self.upstream_model,
            "done": self.done,
            "outputs": [{"content_type": o.content_type, "url": o.url} for o in self.outputs],
            "video_seconds": str(self.usage.video_seconds),
            "video": self.video,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoOperation:
        return cls(
            data["upstream_id"],
            data["upstream_model"],
            data["done"],
            [MediaOutput(o["content_type"], url=o["url"]) for o in data["outputs"]],
            Usage(video_seconds=Decimal(data["video_seconds"])),
            data["video"],
        )


@dataclass(frozen=True)
class Unsupported:
    """A request field a provider cannot honour: the param as the OpenAI request names it, and why."""

    param: str
    message: str


@dataclass
class ProviderError(Exception):
    """Any failure talking to a provider. retryable: another candidate may be tried."""

    message: str
    provider: str
    retryable: bool
    status: int | None = None  # the upstream HTTP status, None for connect errors and timeouts
    code: str = "upstream_error"
    retry_after_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None  # what a stream that broke off had reported before it did

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}"


class ProviderClient:
    """Base of the per-protocol clients; each implements the capabilities its provider has."""

    def __init__(self, provider: ProviderConfig):
        self.provider = provider
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=provider.connect_timeout_s, sock_read=provider.read_timeout_s
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        return shared_session()

    def unsupported_param(self, request: ChatRequest, *, model: str) -> Unsupported | None:
        """The first thing in the request this provider cannot honour (checked before any call, so a
        candidate that cannot is skipped, and a request none can serve is a 400 naming the field)."""
        return None

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        raise self.unsupported("chat")

    def stream(self, request: ChatRequest, *, model: str) -> AsyncGenerator[ChatDelta]:
        raise self.unsupported("streaming chat")

    async def count_tokens(self, request: ChatRequest, *, model: str) -> int:
        """The prompt's input tokens as the provider counts them, without generating anything."""
        raise self.unsupported("token counting")

    async def generate_image(self, request: ImageRequest, *, model: str) -> ImageResult:
        raise self.unsupported("image generation")

    def image_spec(self, model: str) -> ImageSpec | None:
        """What this upstream image model accepts; None when this provider does not know the model
        (a pattern route: the provider itself then checks the request)."""
        return None

    async def start_video(self, request: VideoRequest, *, model: str) -> VideoOperation:
        raise self.unsupported("video generation")

    async def poll_video(self, operation: VideoOperation) -> VideoOperation:
        """The operation's state now. Done with outputs, or still running; a generation that failed
        (or that the provider's filter withheld) raises ProviderError."""
        raise self.unsupported("video generation")

    async def cancel_video(self, operation: VideoOperation) -> None:
        """Stop the generation upstream where the provider allows it (a no-op where it does not)."""

    def video_spec(self, model: str) -> VideoSpec | None:
        """What this upstream video model accepts; None when unknown (as image_spec)."""
        return None

    async def download(self, output: MediaOutput, *, max_bytes: int) -> bytes:
        """A generated file's bytes (outputs given by URL expire upstream, so Pulse copies them)."""
        if output.data is not None:
            return output.data
        raise self.unsupported("downloading outputs")

    def unsupported(self, capability: str) -> ProviderError:
        # A route pointing at a provider that cannot do this is Pulse's own configuration
        # problem, not the client's: another candidate may still serve.
        return self.error(
            f"{self.provider.kind} providers do not offer {capability}", retryable=True, code=UNSUPPORTED_CAPABILITY
        )

    def error(self, message: str, *, retryable: bool, **kwargs: Any) -> ProviderError:
        return ProviderError(message, self.provider.name, retryable, **kwargs)

    def transport_error(self, exc: BaseException) -> ProviderError:
        """A connect error, a timeout or a broken connection: always worth another candidate."""
        if isinstance(exc, asyncio.TimeoutError):
            return self.error("timed out waiting for the provider", retryable=True, code="upstream_timeout")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self.error("the answer broke off midway", retryable=True, code="upstream_stream_cut")
        return self.error(f"connection failed: {type(exc).__name__}", retryable=True, code="upstream_unreachable")
