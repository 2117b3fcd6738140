"""Fake OpenAI API: chat completions (plain and streamed), moderations, and images
(generations, and edits sent as multipart/form-data).

Speaks the wire protocol in /work/shared/PROVIDERS.md. It is strict on purpose: the
real API rejects unknown arguments, bad types and `stream_options` without `stream`,
so a gateway that sends those must fail here too, not in production. Likewise for images:
n>1 on dall-e-3, a size the model does not make, response_format on gpt-image, an upload
part without an image content type.

gpt-image answers base64 with token usage; DALL-E answers URLs that this server serves
without a key at /dalle/... until `expire_image_urls()` (then 403, as Azure storage answers
an expired link).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    Fault,
    Received,
    count_words,
    new_id,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CONTENT_PARTS = {"text", "image_url", "input_audio", "file", "refusal"}
# fmt: off
CHAT_PARAMS = {
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
}
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# fmt: on

# status -> (type, code, message), as the real API words them.
ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests per min (RPM). Try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "server_is_overloaded", "The server is overloaded or not ready yet."),
}
RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "2ms",
}
JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def error(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# The other 429: out of credit. Gateways must NOT retry it: fake.fail(429, body=INSUFFICIENT_QUOTA).
INSUFFICIENT_QUOTA = error(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    code="insufficient_quota",
)


def tiny_png() -> bytes:
    """A valid 1x1 transparent PNG: every image the fakes make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00" + b"\x00" * 4)  # filter byte, one transparent pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


FAKE_PNG = tiny_png()
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")


@dataclass(frozen=True)
class ImageModel:
    sizes: tuple[str, ...]
    max_n: int
    edits: bool
    gpt: bool  # answers base64 and token usage (DALL-E: URLs, no usage)


IMAGE_MODELS = {
    "gpt-image-1": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1-mini": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1.5": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "dall-e-3": ImageModel(("1024x1024", "1792x1024", "1024x1792"), 1, edits=False, gpt=False),
    "dall-e-2": ImageModel(("256x256", "512x512", "1024x1024"), 10, edits=True, gpt=False),
}
# fmt: off
IMAGE_PARAMS = {
    "model", "prompt", "n", "size", "quality", "response_format", "output_format", "output_compression",
    "background", "moderation", "style", "user", "stream", "partial_images",
}
EDIT_PARAMS = {
    "image", "image[]", "mask", "model", "prompt", "n", "size", "quality", "response_format", "output_format",
    "output_compression", "background", "input_fidelity", "user", "stream", "partial_images",
}
# fmt: on
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp")
# The fake's token counts for gpt-image: per image made (gpt-image-1's 1024x1024 at medium
# quality) and per image uploaded to edit; the prompt's words are its text tokens.
IMAGE_OUTPUT_TOKENS = 1056
IMAGE_INPUT_TOKENS = 323
GPT_IMAGE_REFUSAL = (
    "Your request was rejected by the safety system. If you believe this is an error, contact us at "
    "help.openai.com and include the request ID if you have one."
)
DALLE_REFUSAL = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is "
    "not allowed by our safety system."
)
EXPIRED_LINK = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed '
    "to authenticate the request. Make sure the value of Authorization header is formed correctly including "
    "the signature.</Message><AuthenticationErrorDetail>Signed expiry time has expired</AuthenticationErrorDetail>"
    "</Error>"
)


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart body."""

    name: str
    filename: str
    content_type: str  # application/octet-stream when the part had no Content-Type
    data: bytes


@dataclass(frozen=True)
class ImageEdit:
    """One /images/edits request as the fake read it: its text fields and its file parts."""

    fields: dict[str, str]
    uploads: list[Upload]


class Invalid(Exception):
    """A 400 invalid_request_error, worded like the real one."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def wrong_type(param: str, expected: str, value: Any) -> Invalid:
    got = JSON_TYPES.get(type(value), "an unknown type")
    return Invalid(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param, "invalid_type")


def missing(param: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def mask(key: str) -> str:
    # The real message echoes the key masked; never put a whole secret in a body.
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "***"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise wrong_type(where, "an object", message)
    if "role" not in message:
        raise missing(f"{where}.role")
    role = message["role"]
    if role not in ROLES:
        raise Invalid(
            f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
            "'user', 'function', 'tool', and 'developer'.",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    if role == "assistant" and content is None and message.get("tool_calls"):
        return  # a pure tool-call turn has no content
    if "content" not in message:
        raise missing(f"{where}.content")
    if not isinstance(content, str | list):
        raise wrong_type(f"{where}.content", "one of a string or array of objects", content)
    for i, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict) or part.get("type") not in CONTENT_PARTS:
            raise Invalid(
                f"Invalid value for '{where}.content[{i}].type'.", f"{where}.content[{i}].type", "invalid_value"
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise wrong_type(f"{where}.content[{i}].text", "a string", part.get("text"))
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise missing(f"{where}.tool_call_id")


def check_number(body: dict[str, Any], name: str, integer: bool, low: int, high: int | None = None) -> None:
    value = body.get(name)
    kind = "integer" if integer else "decimal"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise wrong_type(name, f"an {kind}" if integer else f"a {kind}", value)
    if value < low:
        raise Invalid(
            f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low}, but got {value} instead.",
            name,
            f"{kind}_below_min_value",
        )
    if high is not None and value > high:
        raise Invalid(
            f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high}, but got {value} instead.",
            name,
            f"{kind}_above_max_value",
        )


def quoted(values: Any) -> str:
    """'a', 'b', and 'c': how the API lists the values it supports."""
    items = [f"'{value}'" for value in values]
    return ", ".join(items[:-1]) + f", and {items[-1]}" if len(items) > 1 else items[0]


def read_form(raw: bytes, content_type: str) -> ImageEdit:
    """Split a multipart/form-data body by hand: aiohttp's reader needs the unread stream, which the
    request log has already read, and the email parser may touch binary file bytes."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise Invalid(f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data.")
    fields, uploads = {}, []
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = BytesHeaderParser().parsebytes(head)
        name, filename, data = (
            str(headers.get_param("name", header="content-disposition")),
            headers.get_filename(),
            body,
        )
        data = body.removesuffix(b"\r\n")
        if filename is None:
            fields[name] = data.decode()
        else:
            kind = headers.get_content_type() if "content-type" in headers else "application/octet-stream"
            uploads.append(Upload(name, filename, kind, data))
    return ImageEdit(fields, uploads)


def check_image_params(params: dict[str, Any], allowed: set[str]) -> tuple[str, ImageModel, int]:
    """Validate a generation's (or an edit's) parameters; returns (model name, model, n)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if "prompt" not in params:
        raise missing("prompt")
    if not isinstance(params["prompt"], str) or not params["prompt"].strip():
        raise Invalid("Invalid 'prompt': empty string. Expected a string with minimum length 1.", "prompt")
    name = params.get("model") or "dall-e-2"  # the API's default model
    model = IMAGE_MODELS.get(name)
    if model is None:
        raise Invalid(
            f"Invalid value: '{name}'. Supported values are: {quoted(IMAGE_MODELS)}.", "model", "invalid_value"
        )
    check_number(params, "n", integer=True, low=1, high=10)
    n = params.get("n") or 1
    if n > model.max_n:
        raise Invalid("You must provide n=1 for this model.")
    size = params.get("size")
    if size is not None and size not in model.sizes:
        raise Invalid(f"Invalid value: '{size}'. Supported values are: {quoted(model.sizes)}.", "size", "invalid_value")
    only_for_other = "response_format" if model.gpt else "output_format"  # gpt-image always answers base64
    if only_for_other in params:
        raise Invalid(f"Unknown parameter: '{only_for_other}'.", only_for_other, "unknown_parameter")
    return name, model, n


def edit_params(edit: ImageEdit) -> dict[str, Any]:
    """An edit's parameters as a generation's: form values are strings, n is a number."""
    params: dict[str, Any] = dict(edit.fields) | {upload.name: upload for upload in edit.uploads}
    if "n" in params:
        if not params["n"].isdigit():
            raise wrong_type("n", "an integer", params["n"])
        params["n"] = int(params["n"])
    return params


def check_edit_images(name: str, model: ImageModel, uploads: list[Upload]) -> None:
    if not model.edits:
        raise Invalid(f"Invalid value: '{name}'. Value must be one of the models that edit images.", "model")
    images = [upload for upload in uploads if upload.name in ("image", "image[]")]
    if not images:
        raise missing("image")
    if not model.gpt and (len(images) != 1 or images[0].name != "image"):
        raise Invalid("dall-e-2 takes exactly one image, in the 'image' field.", "image")
    for upload in images:
        allowed = UPLOAD_TYPES if model.gpt else ("image/png",)
        if upload.content_type not in allowed:
            raise Invalid(
                f"Invalid file '{upload.name}': unsupported mimetype ('{upload.content_type}'). "
                f"Supported file formats are {quoted(allowed)}.",
                upload.name,
                "unsupported_file_mimetype",
            )


def check_chat(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(
            "We could not parse the JSON body of your request. The OpenAI API "
            "expects a JSON payload, but what was sent was not valid JSON."
        )
    unknown = sorted(set(body) - CHAT_PARAMS)
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("you must provide a model parameter")
    if "messages" not in body:
        raise missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise Invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        check_message(index, message)
    check_number(body, "max_tokens", integer=True, low=1)
    check_number(body, "max_completion_tokens", integer=True, low=1)
    check_number(body, "temperature", integer=False, low=0, high=2)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise wrong_type("stream", "a boolean", body["stream"])
    options = body.get("stream_options")
    if options is not None:
        if body.get("stream") is not True:
            raise Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        if not isinstance(options, dict):
            raise wrong_type("stream_options", "an object", options)
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise wrong_type("stream_options.include_usage", "a boolean", options["include_usage"])
    return body


def usage(answer: Answer) -> dict[str, Any]:
    # prompt_tokens includes the cached ones, completion_tokens the reasoning ones.
    counts = answer.counts
    completion = answer.output_tokens + counts.reasoning
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": counts.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": counts.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class FakeOpenAI(FakeProvider):
    provider = "openai"
    default_api_key = "sk-test-openai"
    url_prefix = "/v1"  # OPENAI_BASE_URL includes /v1
    stop_reason = "stop"
    length_reason = "length"
    default_flag_terms = frozenset({"kill"})

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        # Moderation flags an input containing any of these (case-insensitive substring).
        self.flag_terms: set[str] = set(self.default_flag_terms)
        self._images_lock = threading.Lock()
        self._edits: list[ImageEdit] = []
        self._served_images: dict[str, bytes] = {}  # DALL-E's URLs: file name -> bytes

    def reset(self) -> None:
        super().reset()
        self.flag_terms = set(self.default_flag_terms)
        with self._images_lock:
            self._edits.clear()
            self._served_images.clear()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.endpoint(self._chat)),
            web.post("/v1/moderations", self.endpoint(self._moderate)),
            web.post("/v1/images/generations", self.endpoint(self._generate_images)),
            web.post("/v1/images/edits", self.endpoint(self._edit_images)),
            web.get("/dalle/private/{file}", self._serve_image),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    # ---- images: what the test sees and scripts ------------------------------------------

    @property
    def image_edits(self) -> list[ImageEdit]:
        """Every /images/edits request, parsed (the request log's `json` is None for multipart)."""
        with self._images_lock:
            return list(self._edits)

    def block_image(self, times: int = 1, path: str | None = "/images/") -> None:
        """The safety system refuses the next image requests: gpt-image's moderation_blocked,
        DALL-E's content_policy_violation (both 400)."""
        self._add(Fault("block", times, path))

    def expire_image_urls(self) -> None:
        """The DALL-E URLs answered so far stop working (they expire upstream after an hour)."""
        with self._images_lock:
            self._served_images.clear()

    # ---- errors and auth ---------------------------------------------------------

    def headers(self, status: int = 200) -> dict[str, str]:
        headers = {"x-request-id": new_id("req_")}
        if status in (200, 429):
            remaining = "0" if status == 429 else "499"
            headers |= RATE_LIMIT_HEADERS | {"x-ratelimit-remaining-requests": remaining}
        return headers

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        if body is None:
            fallback = ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
            kind, code, message = ERRORS.get(status, fallback)
            body = error(message, kind, code=code)
        return web.json_response(body, status=status, headers={**self.headers(status), **(headers or {})})

    def invalid(self, exc: Invalid) -> web.Response:
        return self.error_response(400, error(str(exc), param=exc.param, code=exc.code))

    def auth_error(self, received: Received) -> web.Response | None:
        auth = received.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                "YOUR_KEY)."
            )
            code = None
        elif auth[7:].strip() != self.api_key:
            message = f"Incorrect API key provided: {mask(auth[7:].strip())}."
            code = "invalid_api_key"
        else:
            return None
        return self.error_response(401, error(message, code=code))

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.error_response(404, error(f"Invalid URL ({request.method} {request.path})"))

    # ---- chat completions ------------------------------------------------------------

    async def _chat(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        try:
            body = check_chat(received.json)
        except Invalid as exc:
            return self.invalid(exc)
        words = sum(count_words(text_of(m.get("content"))) for m in body["messages"])
        answer = self.answer(words, body.get("max_completion_tokens") or body.get("max_tokens"))
        envelope = {
            "id": new_id("chatcmpl-"),
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
            completion = {
                **envelope,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}],
                "usage": usage(answer),
                "service_tier": "default",
            }
            return web.json_response(completion, headers=self.headers())
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        return await self._stream(request, envelope, answer, fault, include_usage)

    async def _stream(
        self, request: web.Request, envelope: dict[str, Any], answer: Answer, fault: Fault | None, include_usage: bool
    ) -> web.StreamResponse:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = {**envelope, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                payload["usage"] = None  # present but null on every chunk but the last
            return sse(payload)

        response = await self.open_stream(request, self.headers())
        await self.send(response, chunk({"role": "assistant", "content": "", "refusal": None}))
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"id": "chatcmpl-broken", "choices": [{"delta\n\n')
            await self.send(response, "data: [DONE]\n\n")
            return response
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        for piece in answer.pieces[:limit]:
            await self.send(response, chunk({"content": piece}))
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            for piece in answer.pieces[limit:]:
                await self.send(response, chunk({"content": piece}))
        if fault is not None and fault.kind == "cut":
            self.cut(request)
            return response
        if fault is not None and fault.kind == "stream_error":
            await self.send(response, sse(error(ERRORS[500][2], "server_error")))
            return response
        await self.send(response, chunk({}, answer.finish_reason))
        if include_usage:
            await self.send(
                response, sse({**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage(answer)})
            )
        await self.send(response, "data: [DONE]\n\n")
        return response

    # ---- images ------------------------------------------------------------------------

    async def _generate_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        if not isinstance(received.json, dict):
            return self.invalid(Invalid("We could not parse the JSON body of your request."))
        try:
            name, model, n = check_image_params(received.json, IMAGE_PARAMS)
        except Invalid as exc:
            return self.invalid(exc)
        return self._images(received.json, name, model, n, fault, uploaded=0)

    async def _edit_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        try:
            edit = read_form(await request.read(), request.headers.get("Content-Type", ""))
            params = edit_params(edit)
            name, model, n = check_image_params(params, EDIT_PARAMS)
            check_edit_images(name, model, edit.uploads)
        except Invalid as exc:
            return self.invalid(exc)
        with self._images_lock:
            self._edits.append(edit)
        return self._images(params, name, model, n, fault, uploaded=len(edit.uploads))

    def _images(
        self, params: dict[str, Any], name: str, model: ImageModel, n: int, fault: Fault | None, uploaded: int
    ) -> web.Response:
        if fault is not None and fault.kind == "block":
            if model.gpt:
                return self.error_response(
                    400, error(GPT_IMAGE_REFUSAL, "image_generation_user_error", code="moderation_blocked")
                )
            return self.error_response(400, error(DALLE_REFUSAL, code="content_policy_violation"))
        answer: dict[str, Any] = {"created": int(time.time())}
        if model.gpt:
            answer |= self._gpt_image_answer(params, n, uploaded)
        else:
            encoded = params.get("response_format") == "b64_json"
            revised = {"revised_prompt": params["prompt"]} if name == "dall-e-3" else {}
            answer["data"] = [self._dalle_image(encoded) | revised for _ in range(n)]
        return web.json_response(answer, headers=self.headers())

    @staticmethod
    def _gpt_image_answer(params: dict[str, Any], n: int, uploaded: int) -> dict[str, Any]:
        text_tokens, image_tokens = count_words(params["prompt"]), IMAGE_INPUT_TOKENS * uploaded
        output_tokens = IMAGE_OUTPUT_TOKENS * n
        return {
            "background": "opaque",
            "data": [{"b64_json": base64.b64encode(FAKE_PNG).decode()} for _ in range(n)],
            "output_format": params.get("output_format") or "png",
            "quality": "medium",
            "size": "1024x1024" if params.get("size") in (None, "auto") else params["size"],
            "usage": {
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + image_tokens + output_tokens,
            },
        }

    def _dalle_image(self, encoded: bool) -> dict[str, Any]:
        if encoded:
            return {"b64_json": base64.b64encode(FAKE_PNG).decode()}
        file = new_id("img-") + ".png"
        with self._images_lock:
            self._served_images[file] = FAKE_PNG
        # Signed like Azure storage's links: no key needed, only the signature in the query.
        return {"url": f"http://127.0.0.1:{self.port}/dalle/private/{file}?se=2099-01-01&sp=r&sig=fake"}

    async def _serve_image(self, request: web.Request) -> web.Response:
        await self._record(request)
        with self._images_lock:
            data = self._served_images.get(request.match_info["file"])
        if data is None:
            return web.Response(status=403, text=EXPIRED_LINK, content_type="application/xml")
        return web.Response(body=data, content_type="image/png")

    # ---- moderations ---------------------------------------------------------------

    async def _moderate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        body = received.json
        try:
            inputs = self._moderation_inputs(body)
        except Invalid as exc:
            return self.invalid(exc)
        terms = [t.lower() for t in list(self.flag_terms)]
        results = [self._moderation_result(text, terms) for text in inputs]
        model = body.get("model") or "omni-moderation-latest"
        return web.json_response({"id": new_id("modr-"), "model": model, "results": results}, headers=self.headers())

    @staticmethod
    def _moderation_inputs(body: Any) -> list[str]:
        if not isinstance(body, dict) or "input" not in body:
            raise missing("input")
        unknown = sorted(set(body) - {"input", "model"})
        if unknown:
            raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
        value = body["input"]
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value  # one result per string
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [text_of(value)]  # multimodal parts: one result for the whole input
        raise wrong_type("input", "a string or array", value)

    @staticmethod
    def _moderation_result(text: str, terms: list[str]) -> dict[str, Any]:
        flagged = any(term in text.lower() for term in terms)
        categories = {name: flagged and name == "violence" for name in MODERATION_CATEGORIES}
        scores = {name: 0.97 if hit else 0.0001 for name, hit in categories.items()}
        return {
            "flagged": flagged,
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
        }
