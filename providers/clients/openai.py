"""OpenAI chat completions, also spoken by OpenAI-compatible servers (vLLM, Ollama, ...), and
OpenAI's Images API (generations, and edits of an uploaded image).

Pulse's normalised request is already OpenAI-shaped, so the translation is thin; what
differs between `openai` and `openai_compatible` is the name of the token limit, top_k (which
vLLM and others take and OpenAI does not) and how complete the usage report is.
"""

from __future__ import annotations

import base64
import re
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
    ChatChoice,
    ChatDelta,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ImageRequest,
    ImageResult,
    ImageSpec,
    InputImage,
    MediaOutput,
    ProviderError,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Unsupported,
    Usage,
    portable_call_id,
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
# A thinking budget (Anthropic's way of asking for thought) as OpenAI's reasoning effort: the
# effort for budgets below each bound, "high" above the last.
EFFORT_BY_BUDGET = ((2048, "low"), (16384, "medium"))
# The OpenAI models that take reasoning_effort: the o-series and GPT-5 (not its -chat snapshots).
REASONING_MODEL = re.compile(r"^(o\d|gpt-5(?!(\.\d+)?-chat))")

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


def tool_calls_of(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    # A call without arguments still needs JSON text: "{}" where a server sends none.
    return tuple(
        ToolCall(call["id"], call["function"]["name"], call["function"].get("arguments") or "{}")
        for call in message.get("tool_calls") or ()
    )


def choice_of(choice: dict[str, Any]) -> ChatChoice:
    message = choice["message"]
    return ChatChoice(
        content=message.get("content") or "",  # null when the answer is only tool calls
        finish_reason=finish_reason(choice.get("finish_reason")),
        tool_calls=tool_calls_of(message),
        logprobs=choice.get("logprobs"),
    )


def completion_result(completion: dict[str, Any], model: str) -> ChatResult:
    ordered = sorted(completion["choices"], key=lambda choice: choice.get("index") or 0)
    first, *more = [choice_of(choice) for choice in ordered]  # n > 1 answers n choices
    return ChatResult(
        content=first.content,
        finish_reason=first.finish_reason,
        usage=openai_usage(completion.get("usage")),
        upstream_model=completion.get("model") or model,
        upstream_id=completion.get("id"),
        tool_calls=first.tool_calls,
        logprobs=first.logprobs,
        more_choices=tuple(more),
    )


def tool_call_deltas(delta: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    """The first piece of each call carries its id and name, the rest only argument fragments."""
    pieces = []
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        pieces.append(
            ToolCallDelta(call["index"], call.get("id"), function.get("name"), function.get("arguments") or "")
        )
    return tuple(pieces)


def read_chunk(chunk: dict[str, Any]) -> tuple[ChatDelta, str | None, Usage | None]:
    """(the piece, raw finish reason, usage) of one chunk; the usage chunk has `choices: []`.
    Streams are of one choice: the gateway refuses n > 1 with stream before any call."""
    choices = chunk.get("choices") or []
    choice = choices[0] if choices else {}
    delta = choice.get("delta") or {}
    piece = ChatDelta(
        content=delta.get("content") or "", tool_calls=tool_call_deltas(delta), logprobs=choice.get("logprobs")
    )
    usage = openai_usage(chunk["usage"]) if chunk.get("usage") else None
    return piece, choice.get("finish_reason"), usage


def carries_output(piece: ChatDelta) -> bool:
    return bool(piece.content or piece.tool_calls or piece.logprobs)


# ---- the request body ------------------------------------------------------------------


def content_part(piece: str | ChatImage) -> dict[str, Any]:
    if isinstance(piece, str):
        return {"type": "text", "text": piece}
    return {"type": "image_url", "image_url": {"url": piece.data_url(), **set_fields(detail=piece.detail)}}


def message_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A plain string unless the message has images: then its parts in order."""
    if not message.parts:
        return message.content
    return [content_part(piece) for piece in message.parts]


def wire_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": portable_call_id(call.id),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """One message as OpenAI takes it. Thinking and cache breakpoints are not sent: the chat API
    takes no thinking back, and OpenAI caches prompt prefixes by itself. A tool result has no
    error flag here: its text has to say so."""
    if message.role == "tool":
        call_id = portable_call_id(message.tool_call_id or "")
        return {"role": "tool", "tool_call_id": call_id, "content": message_content(message)}
    if message.role == "assistant" and message.tool_calls:
        calls = [wire_tool_call(call) for call in message.tool_calls]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    return {"role": message.role, "content": message_content(message)}


def wire_tool(tool: Tool) -> dict[str, Any]:
    function = {"name": tool.name, **set_fields(description=tool.description, parameters=tool.parameters)}
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def wire_tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode  # "auto" | "none" | "required": OpenAI's own words


def wire_response_format(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if response_format.type != "json_schema":
        return {"type": response_format.type}
    schema = {"name": response_format.name, **set_fields(schema=response_format.schema)}
    return {"type": "json_schema", "json_schema": schema | {"strict": response_format.strict}}


def reasoning_effort(request: ChatRequest, model: str) -> str | None:
    """The effort asked for, else the one a thinking budget amounts to (below 2048 tokens "low",
    below 16384 "medium", else "high"): OpenAI takes no budget in tokens. A budget comes from an
    Anthropic-style client (Claude Code thinks by default); a model that does not reason (gpt-4o)
    refuses any effort, so there the budget is dropped rather than the request refused."""
    if request.reasoning_effort or request.thinking_budget is None:
        return request.reasoning_effort
    if not REASONING_MODEL.match(model):
        return None
    for bound, effort in EFFORT_BY_BUDGET:
        if request.thinking_budget < bound:
            return effort
    return "high"


def choice_fields(request: ChatRequest) -> dict[str, Any]:
    """How many answers, and their log probabilities: the defaults (one, none) are left out."""
    return set_fields(
        n=request.n if request.n != 1 else None,
        logprobs=request.logprobs or None,
        top_logprobs=request.top_logprobs,
    )


def tool_fields(request: ChatRequest) -> dict[str, Any]:
    return set_fields(
        tools=[wire_tool(tool) for tool in request.tools],
        tool_choice=wire_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
    )


def image_outside_user_message(request: ChatRequest) -> Unsupported | None:
    # The protocol's system, assistant and tool messages hold text parts only.
    for index, message in enumerate(request.messages):
        if message.images and message.role != "user":
            return Unsupported(
                f"messages.{index}.content", f"images are taken in user messages only, not in a {message.role} message"
            )
    return None


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
    takes_top_k = False  # OpenAI refuses top_k as an unknown argument

    def headers(self) -> dict[str, str]:
        # A local OpenAI-compatible server (Ollama, LM Studio) often has no key: send no header then.
        return {"Authorization": f"Bearer {self.provider.api_key}"} if self.provider.api_key else {}

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = super().status_error(status, body, headers)
        if error_object(body).get("code") in SAFETY_CODES:
            # OpenAI's safety system refused the prompt: Pulse does not shop a refused prompt around.
            return replace(error, retryable=False, code=CONTENT_POLICY_VIOLATION)
        return error

    @property
    def url(self) -> str:
        return self.endpoint("/chat/completions")  # base_url already ends in /v1

    def unsupported_param(self, request: ChatRequest, *, model: str) -> Unsupported | None:
        if request.top_k is not None and not self.takes_top_k:
            return Unsupported("top_k", "OpenAI does not take top_k")
        return image_outside_user_message(request)

    def body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [wire_message(message) for message in request.messages],
            **set_fields(temperature=request.temperature, top_p=request.top_p, stop=list(request.stop)),
            **set_fields(**{self.token_limit_field: request.max_tokens}),
            **tool_fields(request),
            **choice_fields(request),
            **self.sampling_fields(request, model),
        }

    def sampling_fields(self, request: ChatRequest, model: str) -> dict[str, Any]:
        return set_fields(
            response_format=wire_response_format(request.response_format),
            seed=request.seed,
            user=request.user,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            reasoning_effort=reasoning_effort(request, model),
            top_k=request.top_k if self.takes_top_k else None,
        )

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
                piece, reason, chunk_usage = self.parse(read_chunk, chunk)
                if carries_output(piece):
                    yield piece
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
    takes_top_k = True  # vLLM and llama.cpp's server sample with it


def moderation_results(body: dict[str, Any], count: int) -> list[dict[str, Any]]:
    results = body["results"]
    if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"expected {count} results")
    return results
