"""Fake Gemini API: `models/{model}:generateContent` and `:streamGenerateContent` (chat, and
Nano Banana images from the gemini-*-image models), Veo's `:predictLongRunning` with its
operations, and the download of a finished video (a redirect to a separate storage port).

Speaks the wire protocol in /work/shared/PROVIDERS.md. Like the real API it parses the
body as protobuf JSON: unknown field names are rejected (camelCase or snake_case both
accepted), the assistant role is "model", and a bad key is a 400 (not a 401) with
reason API_KEY_INVALID. Stream events are separated by "\\r\\n\\r\\n", so a client
that only splits on "\\n\\n" fails here. Zero token counts are omitted, as proto3
JSON does: clients must default a missing `candidatesTokenCount` to 0.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    Fault,
    Received,
    TokenCounts,
    count_words,
    new_id,
)

# Field names in camelCase; check_fields() also accepts their snake_case forms.
# fmt: off
REQUEST_FIELDS = {
    "contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig",
    "cachedContent",
}
CONFIG_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution",
}
PART_DATA = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}
# fmt: on
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "partMetadata"}
# A candidate that ends for one of these reasons carries no content at all.
NO_CONTENT = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: (
        "INTERNAL",
        (
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"
        ),
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}
MODALITIES = {"TEXT", "IMAGE", "AUDIO"}
IMAGE_MODELS = {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview"}
IMAGE_ASPECT_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
IMAGE_TOKENS = 1290  # output tokens per image (PROVIDERS.md: about 1290, unverified)
INPUT_IMAGE_TOKENS = 258  # prompt tokens Gemini counts for a small input image
# A real 1x1 PNG: every image the fake makes.
PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]


def google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    """google.rpc.Status as JSON; `details` is left out when empty, as the API does."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


class Invalid(Exception):
    """A 400 INVALID_ARGUMENT; `field` adds a BadRequest fieldViolation like the API."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def camel(obj: dict[str, Any]) -> dict[str, Any]:
    """Proto JSON accepts `max_output_tokens` as well as `maxOutputTokens`."""
    return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in obj.items()}


def check_fields(obj: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    for name, key in zip(camel(obj), obj, strict=True):
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise Invalid(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')
    return camel(obj)


def check_content(content: Any, where: str) -> list[str]:
    """Validate one Content; returns its texts."""
    if not isinstance(content, dict):
        raise Invalid(
            f"Invalid value at '{where}' (type.googleapis.com/"
            f"google.ai.generativelanguage.v1beta.Content), {json.dumps(content)}",
            where,
        )
    content = check_fields(content, {"role", "parts"}, where)
    if content.get("role") not in (None, "", "user", "model"):
        raise Invalid("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    texts = []
    for i, part in enumerate(parts):
        here = f"{where}.parts[{i}]"
        if not isinstance(part, dict):
            raise Invalid(f"Invalid value at '{here}'", here)
        part = check_fields(part, PART_FIELDS, here)
        if not PART_DATA & set(part):
            raise Invalid(
                f"* GenerateContentRequest.{here}.data: required oneof field 'data' must have one initialized field\n"
            )
        if "text" in part and not isinstance(part["text"], str):
            raise Invalid(f"Invalid value at '{here}.text' (TYPE_STRING), {json.dumps(part['text'])}", f"{here}.text")
        if "inlineData" in part:
            check_blob(part["inlineData"], f"{here}.inline_data")
        texts.append(part.get("text", ""))
    return texts


def check_base64(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raise Invalid(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed", where) from None


def check_blob(blob: Any, where: str) -> None:
    """An inlineData Blob: a mimeType and base64 data, both required."""
    if not isinstance(blob, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    blob = check_fields(blob, {"mimeType", "data"}, where)
    if not isinstance(blob.get("mimeType"), str) or not blob["mimeType"]:
        raise Invalid(f"* GenerateContentRequest.{where}.mime_type: required field is not specified\n")
    if not check_base64(blob.get("data"), f"{where}.data"):
        raise Invalid(f"* GenerateContentRequest.{where}.data: required field is not specified\n")


def check_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise Invalid("Invalid value at 'generation_config'", "generation_config")
    config = check_fields(config, CONFIG_FIELDS, "generation_config")
    for name, proto_type in (
        ("temperature", "TYPE_FLOAT"),
        ("topP", "TYPE_FLOAT"),
        ("maxOutputTokens", "TYPE_INT32"),
        ("topK", "TYPE_INT32"),
    ):
        value = config.get(name)
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or (proto_type == "TYPE_INT32" and value != int(value)):
            field = "generation_config." + re.sub(r"([A-Z])", r"_\1", name).lower()
            raise Invalid(f"Invalid value at '{field}' ({proto_type}), {json.dumps(value)}", field)
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise Invalid("* GenerateContentRequest.generation_config.temperature: must be in the range [0.0, 2.0]\n")
    if (config.get("maxOutputTokens") or 0) < 0:
        raise Invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n")
    for modality in config.get("responseModalities") or []:
        if modality not in MODALITIES:
            field = "generation_config.response_modalities"
            raise Invalid(f"Invalid value at '{field}' (type.googleapis.com/Modality), {json.dumps(modality)}", field)
    if config.get("imageConfig") is not None:
        check_image_config(config["imageConfig"])
    return config


def check_image_config(image_config: Any) -> None:
    where = "generation_config.image_config"
    if not isinstance(image_config, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    image_config = check_fields(image_config, {"aspectRatio", "imageSize"}, where)
    ratio = image_config.get("aspectRatio")
    if ratio is not None and ratio not in IMAGE_ASPECT_RATIOS:
        # The real wording is unverified; the status and the field are what clients see.
        raise Invalid(f"* GenerateContentRequest.{where}.aspect_ratio: unsupported aspect ratio {json.dumps(ratio)}\n")


def check_request(body: Any) -> tuple[int, int | None]:
    """Validate a GenerateContentRequest; returns (prompt words, maxOutputTokens)."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.")
    body = check_fields(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified\n")
    if not isinstance(contents, list):
        raise Invalid("Invalid value at 'contents'", "contents")
    texts = [t for i, c in enumerate(contents) for t in check_content(c, f"contents[{i}]")]
    if body.get("systemInstruction") is not None:
        texts += check_content(body["systemInstruction"], "system_instruction")
    config = check_config(body.get("generationConfig") or {})
    max_tokens = int(config["maxOutputTokens"]) if config.get("maxOutputTokens") else None
    return sum(count_words(t) for t in texts), max_tokens


NO_COUNTS = TokenCounts()


def usage(prompt: int, output: int, counts: TokenCounts = NO_COUNTS) -> dict[str, Any]:
    """promptTokenCount includes the cached tokens; thoughts are counted apart from the candidates
    (and billed as output). Proto3 JSON leaves zero counts out."""
    metadata: dict[str, Any] = {
        "promptTokenCount": prompt,
        "totalTokenCount": prompt + output + counts.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if output:
        metadata["candidatesTokenCount"] = output
    if counts.cached:
        metadata["cachedContentTokenCount"] = counts.cached
    if counts.reasoning:
        metadata["thoughtsTokenCount"] = counts.reasoning
    return metadata


def count_inline_images(body: dict[str, Any]) -> int:
    contents = camel(body).get("contents") or []
    return sum(1 for content in contents for part in content["parts"] if "inlineData" in camel(part))


def image_parts(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """What an image model answers for the responseModalities asked (both when none are)."""
    config = camel(camel(body).get("generationConfig") or {})
    modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
    parts: list[dict[str, Any]] = [{"text": text}] if "TEXT" in modalities else []
    if "IMAGE" in modalities:
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG_PIXEL).decode()}})
    return parts


def image_refusal(reason: str) -> dict[str, Any]:
    """A candidate that ends without an image: NO_IMAGE says why in text, a safety stop says nothing."""
    if reason == "NO_IMAGE":
        content = {"role": "model", "parts": [{"text": "I can't make that image."}]}
        return {"content": content, "finishReason": reason, "index": 0}
    return {"finishReason": reason, "index": 0, "safetyRatings": SAFETY_RATINGS}


# ---- Veo ---------------------------------------------------------------------------------
# What the real API does, and where each fact comes from (the client and this fake rely on them):
# - Request: POST /v1beta/models/{model}:predictLongRunning {"instances": [{"prompt", "image"?:
#   {"bytesBase64Encoded", "mimeType"}, "video"?: {"uri"}}], "parameters": {"aspectRatio",
#   "durationSeconds" (a number), "resolution", "negativePrompt", "personGeneration", "sampleCount",
#   "enhancePrompt"}}. Source: the Gemini API ("mldev") serialisers of generate_videos in
#   googleapis/python-genai, google/genai/models.py (_GenerateVideosParameters_to_mldev,
#   _GenerateVideosConfig_to_mldev, _Image_to_mldev, _Video_to_mldev); fps, seed, generateAudio and
#   the like are refused there as Vertex-only.
# - Extension: instances[0].video = {"uri": <video.uri of the earlier operation's result>} (bytes
#   would be {"encodedVideo", "encoding"}; Veo extends only videos it made, so the fake takes a uri
#   only). Veo 3.1 only, and only videos Veo generated: python-genai README ("only Gemini Developer
#   API supports video extension on Veo 3.1 for previously generated videos") and its
#   tests/models/test_generate_videos.py::test_generated_video_extension_poll, which passes the
#   first operation's generated video as `video=`. A REST script on GitHub (extend-veo3-rest.ts)
#   sends {"instances": [{"prompt", "video": {"uri"}}], "parameters": {"resolution": "720p"}}.
# - ai.google.dev/gemini-api/docs/veo, as quoted in a third-party verification note (2026-09):
#   durationSeconds "4", "6", "8"; for Veo 3.1 and Fast it "must be 8 when using extension,
#   reference images or with 1080p and 4k resolutions"; "1080p (only supports 8s duration)".
#   So the client leaves durationSeconds out of an extension: the fake takes none, or 8.
# - Third-party guides only (help.apiyi.com, blog.greeden.me, aifreeapi.com): each extension adds
#   7 s, up to 20 of them; the input must be 720p, 16:9 or 9:16, at most 141 s; the result is ONE
#   video, the input and the new 7 s together (up to 148 s), at 720p.
# - Operations: python-genai's operations module only GETs them (no cancel). Proto3 JSON leaves
#   `done: false` out, so a running operation here is just {"name"}.
VEO_3_1 = {"veo-3.1-generate-preview", "veo-3.1-fast-generate-preview"}  # extend videos; also make 4k
VEO_MODELS = {"veo-3.0-generate-001", "veo-3.0-fast-generate-001"} | VEO_3_1
VEO_DURATIONS = (4, 6, 8)
VEO_ASPECT_RATIOS = ("16:9", "9:16")
EXTENSION_S = 7
MAX_EXTENDABLE_S = 141
INSTANCE_FIELDS = {"prompt", "image", "lastFrame", "referenceImages", "video"}
PARAMETER_FIELDS = {
    "aspectRatio",
    "durationSeconds",
    "resolution",
    "negativePrompt",
    "personGeneration",
    "sampleCount",
    "enhancePrompt",
}
FRAME_TYPES = {"image/png", "image/jpeg", "image/webp"}
PREDICT_RESPONSE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
RPC_ERRORS = {  # google.rpc.Code -> what a failed operation's error says (wording unverified)
    3: "The input could not be processed.",
    8: "Resource has been exhausted (e.g. check quota).",
    13: "Video generation failed due to an internal error. Please try again.",
    14: "The service is currently unavailable.",
}
RAI_REASON = "The video could not be generated because it may violate the usage guidelines."  # wording unverified
STORAGE_PATH = "/storage/"
# An MP4-looking file whose length says its duration: a real ftyp box, then 1,000 bytes a second.
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
MP4_BYTES_PER_SECOND = 1000


def fake_mp4(seconds: int) -> bytes:
    return MP4_HEADER + bytes(seconds * MP4_BYTES_PER_SECOND)


def mp4_seconds(data: bytes) -> int:
    """The duration of a file fake_mp4 made (what a test asserts a download is)."""
    assert data.startswith(MP4_HEADER), "not a video this fake made"
    return (len(data) - len(MP4_HEADER)) // MP4_BYTES_PER_SECOND


@dataclass(frozen=True)
class FakeVideo:
    """A video the fake made (an extension's seconds include the video it extends)."""

    id: str
    model: str
    seconds: int
    aspect_ratio: str
    resolution: str
    prompt: str
    extends: str | None = None  # the id of the video this one extends


@dataclass(frozen=True)
class VideoScript:
    """How the next operations go: `polls` answers without `done`, then the outcome."""

    polls: int = 0
    outcome: str = "ok"  # ok | error | filtered
    error_code: int = 13  # google.rpc.Code of an "error" outcome (13 INTERNAL, 14 UNAVAILABLE, ...)


@dataclass
class FakeOperation:
    name: str
    video: FakeVideo  # what it makes when it succeeds
    script: VideoScript
    polls_left: int


def check_frame(image: Any) -> None:
    where = "instances[0].image"
    if not isinstance(image, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    image = check_fields(image, {"bytesBase64Encoded", "mimeType", "gcsUri"}, where)
    if "gcsUri" in image:  # python-genai: "gcs_uri parameter is only supported in Vertex AI"
        raise Invalid("Input image from a Cloud Storage URI is not supported. Use bytesBase64Encoded.")
    if image.get("mimeType") not in FRAME_TYPES:
        raise Invalid(f"Unsupported image mime type {json.dumps(image.get('mimeType'))}.")
    if not check_base64(image.get("bytesBase64Encoded"), f"{where}.bytes_base64_encoded"):
        raise Invalid("The image is empty.")


def check_video_request(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a predictLongRunning body's shape; returns (instance, parameters), camelCased."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.")
    body = check_fields(body, {"instances", "parameters"}, "")
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise Invalid("* PredictLongRunningRequest.instances: exactly one instance is required\n")
    instance = check_fields(instances[0], INSTANCE_FIELDS, "instances[0]")
    if not isinstance(body.get("parameters") or {}, dict):
        raise Invalid("Invalid value at 'parameters'", "parameters")
    parameters = check_fields(body.get("parameters") or {}, PARAMETER_FIELDS, "parameters")
    if not isinstance(instance.get("prompt", ""), str):
        raise Invalid("Invalid value at 'instances[0].prompt' (TYPE_STRING)", "instances[0].prompt")
    if "image" in instance:
        check_frame(instance["image"])
    video = instance.get("video")
    if video is not None and (
        not isinstance(video, dict) or not isinstance(check_fields(video, {"uri"}, "video").get("uri"), str)
    ):
        raise Invalid("Invalid value at 'instances[0].video': a uri is required", "instances[0].video")
    duration = parameters.get("durationSeconds")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)):
        raise Invalid(
            f"Invalid value at 'parameters.duration_seconds' (TYPE_INT32), {json.dumps(duration)}",
            "parameters.duration_seconds",
        )
    return instance, parameters


class FakeGemini(FakeProvider):
    provider = "gemini"
    default_api_key = "test-gemini-key"
    url_prefix = ""  # GEMINI_BASE_URL has no /v1beta
    stop_reason = "STOP"
    length_reason = "MAX_TOKENS"
    tool_reason = "STOP"  # Gemini ends a function call with STOP

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.storage_port = 0  # a second port: the "storage host" a download redirects to
        self.image_delay_s = 0.0  # how long each image call takes (calls overlap while they wait)
        self._image_calls = self._peak_image_calls = 0
        self._image_epoch = 0  # bumped by reset(): calls of an earlier test no longer count
        self._video_script = VideoScript()
        self._operations: dict[str, FakeOperation] = {}
        self._videos: dict[str, FakeVideo] = {}

    # ---- what the test scripts and sees, beyond chat ------------------------------------

    def block_prompt(self, reason: str = "SAFETY", times: int = 1, path: str | None = None) -> None:
        """Answer 200 with promptFeedback.blockReason and no candidates."""
        self._add(Fault("block", times, path, reason=reason))

    def refuse_image(self, finish_reason: str = "IMAGE_SAFETY", times: int = 1, path: str | None = None) -> None:
        """An image call answers a candidate with this finishReason and no image (NO_IMAGE: a text part)."""
        self._add(Fault("refuse_image", times, path, reason=finish_reason))

    def video_script(self, polls: int = 0, outcome: str = "ok", error_code: int = 13) -> None:
        """Script every following video operation (until reset or the next call): `polls` GETs answer
        it running, the next one finds it done: "ok" (a video), "error" (with google.rpc.Code
        error_code) or "filtered" (the safety filter withheld the video)."""
        if outcome not in ("ok", "error", "filtered"):
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._lock:
            self._video_script = VideoScript(polls, outcome, error_code)

    @property
    def peak_image_calls(self) -> int:
        """The most image calls in progress at once (set image_delay_s so that calls overlap)."""
        with self._lock:
            return self._peak_image_calls

    @property
    def videos(self) -> dict[str, FakeVideo]:
        """The videos made so far, by id."""
        with self._lock:
            return dict(self._videos)

    def download_url(self, video_id: str) -> str:
        return f"{self.base_url}/v1beta/files/{video_id}:download?alt=media"

    def storage_url(self, video_id: str) -> str:
        return f"http://127.0.0.1:{self.storage_port}{STORAGE_PATH}{video_id}.mp4"

    def reset(self) -> None:
        super().reset()
        self.image_delay_s = 0.0
        with self._lock:
            self._image_calls = self._peak_image_calls = 0
            self._image_epoch += 1
            self._video_script = VideoScript()
            self._operations.clear()
            self._videos.clear()

    async def _open(self, sock: socket.socket) -> None:
        await super()._open(sock)
        assert self._runner is not None
        storage = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        storage.bind(("127.0.0.1", 0))
        self.storage_port = storage.getsockname()[1]
        await web.SockSite(self._runner, storage).start()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{target}", self.endpoint(self._model_action)),
            # The real API also serves v1 (the newest google-genai SDK defaults to it).
            web.post("/v1/models/{target}", self.endpoint(self._model_action)),
            web.get("/v1beta/models/{model}/operations/{operation}", self.endpoint(self._operation)),
            web.get("/v1beta/files/{file}", self.endpoint(self._file)),
            web.get(STORAGE_PATH + "{name}", self.endpoint(self._storage)),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    def is_stream(self, received: Received) -> bool:
        return received.path.endswith(":streamGenerateContent")

    # ---- errors and auth ---------------------------------------------------------

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        if body is None:
            name, message = ERRORS.get(status, ("UNKNOWN", f"HTTP {status}"))
            # No rate-limit headers on Gemini: a 429's retry hint is in the body.
            retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
            body = google_error(status, name, message, retry if status == 429 else None)
        return web.json_response(body, status=status, headers=headers)

    def invalid(self, exc: Invalid) -> web.Response:
        violation = {"field": exc.field, "description": str(exc)}
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]
        return self.error_response(400, google_error(400, "INVALID_ARGUMENT", str(exc), details if exc.field else None))

    def auth_error(self, received: Received) -> web.Response | None:
        key = received.headers.get("x-goog-api-key") or received.query.get("key")
        if received.path.startswith(STORAGE_PATH):
            # Storage is another host: a client that sends it the key leaks it, so it fails here.
            return web.Response(status=400, text="the Gemini API key was sent to storage") if key else None
        if not key:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API."
            )
            return self.error_response(403, google_error(403, "PERMISSION_DENIED", message))
        if key == self.api_key:
            return None
        message = "API key not valid. Please pass a valid API key."
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return self.error_response(400, google_error(400, "INVALID_ARGUMENT", message, details))

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.error_response(404, google_error(404, "NOT_FOUND", f"Unknown URL {request.path}"))

    # ---- generateContent -------------------------------------------------------------

    async def _model_action(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action == "predictLongRunning":
            return self._predict_long_running(model, received)
        if action not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404)
        return await self._generate(request, received, fault)

    async def _generate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        try:
            words, max_tokens = check_request(received.json)
        except Invalid as exc:
            return self.invalid(exc)
        if model in IMAGE_MODELS and action == "generateContent":
            return web.json_response(await self._image(model, received.json, words, fault))
        answer = self.answer(words, max_tokens)
        envelope = {"modelVersion": model, "responseId": new_id("")}
        if fault is not None and fault.kind == "block":
            chunks = [
                {
                    "promptFeedback": {"blockReason": fault.reason, "safetyRatings": SAFETY_RATINGS},
                    "usageMetadata": usage(answer.input_tokens, 0),
                    **envelope,
                }
            ]
        else:
            chunks = [chunk | envelope for chunk in self._chunks(answer)]
        if action == "generateContent":
            return web.json_response(self._merge(chunks, answer))
        return await self._stream(request, received, chunks, fault)

    @staticmethod
    def _chunks(answer: Answer) -> list[dict[str, Any]]:
        """The stream's chunks: one word each, usage cumulative, finishReason on the last."""
        if answer.finish_reason in NO_CONTENT:
            candidate = {"finishReason": answer.finish_reason, "index": 0, "safetyRatings": SAFETY_RATINGS}
            return [{"candidates": [candidate], "usageMetadata": usage(answer.input_tokens, 0, answer.counts)}]
        pieces = answer.pieces or [""]
        chunks = []
        for n, piece in enumerate(pieces, start=1):
            last = n == len(pieces)
            candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
            if last:
                candidate["finishReason"] = answer.finish_reason
            output = answer.output_tokens if last else min(n, answer.output_tokens)
            chunks.append(
                {"candidates": [candidate], "usageMetadata": usage(answer.input_tokens, output, answer.counts)}
            )
        return chunks

    @staticmethod
    def _merge(chunks: list[dict[str, Any]], answer: Answer) -> dict[str, Any]:
        """The non-stream response: the last chunk, holding the whole text."""
        merged = json.loads(json.dumps(chunks[-1]))
        for candidate in merged.get("candidates", []):
            if "content" in candidate:
                candidate["content"]["parts"] = [{"text": answer.text}]
        return merged

    async def _stream(
        self, request: web.Request, received: Received, chunks: list[dict[str, Any]], fault: Fault | None
    ) -> web.StreamResponse:
        sse = received.query.get("alt") == "sse"
        if sse:
            response = await self.open_stream(request)
        else:  # without alt=sse the real API streams one JSON array, not events
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"candidates": [{"content": \r\n\r\n')
            return response
        # Gemini has no mid-stream error event: both stream faults just drop the socket.
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        for n, chunk in enumerate(chunks[:limit]):
            if sse:
                await self.send(response, f"data: {json.dumps(chunk)}\r\n\r\n")
            else:
                await self.send(response, ("[" if n == 0 else ",\r\n") + json.dumps(chunk))
        if limit is not None:
            self.cut(request)
        elif not sse:
            await self.send(response, "]")
        return response

    # ---- Nano Banana -------------------------------------------------------------------

    async def _image(self, model: str, body: dict[str, Any], prompt_words: int, fault: Fault | None) -> dict[str, Any]:
        """One image per call, as an inlineData part, after image_delay_s (calls in progress are counted)."""
        with self._lock:
            reply, epoch = self._reply, self._image_epoch
            self._image_calls += 1
            self._peak_image_calls = max(self._peak_image_calls, self._image_calls)
        try:
            await asyncio.sleep(self.image_delay_s)
        finally:
            with self._lock:
                if epoch == self._image_epoch:  # a call a client gave up on may outlive its test
                    self._image_calls -= 1
        envelope = {"modelVersion": model, "responseId": new_id("")}
        prompt = reply.input_tokens
        if prompt is None:
            prompt = prompt_words + INPUT_IMAGE_TOKENS * count_inline_images(body)
        if fault is not None and fault.kind == "block":
            feedback = {"blockReason": fault.reason, "safetyRatings": SAFETY_RATINGS}
            return {"promptFeedback": feedback, "usageMetadata": usage(prompt, 0), **envelope}
        if fault is not None and fault.kind == "refuse_image":
            return {"candidates": [image_refusal(fault.reason)], "usageMetadata": usage(prompt, 0), **envelope}
        output = IMAGE_TOKENS if reply.output_tokens is None else reply.output_tokens
        parts = image_parts(body, reply.text or "Here is your image.")
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage(prompt, output), **envelope}

    # ---- Veo -------------------------------------------------------------------------------

    def _predict_long_running(self, model: str, received: Received) -> web.Response:
        if model not in VEO_MODELS:
            message = f"models/{model} is not found for API version v1beta, or is not supported for predictLongRunning."
            return self.error_response(404, google_error(404, "NOT_FOUND", message))
        try:
            instance, parameters = check_video_request(received.json)
            video = self._planned_video(model, instance, parameters)
        except Invalid as exc:
            return self.invalid(exc)
        name = f"models/{model}/operations/{new_id('')}"
        with self._lock:
            script = self._video_script
            self._operations[name] = FakeOperation(name, video, script, script.polls)
        return web.json_response({"name": name})

    def _planned_video(self, model: str, instance: dict[str, Any], parameters: dict[str, Any]) -> FakeVideo:
        """The video a request makes, once its values are checked as the real API checks them."""
        aspect = parameters.get("aspectRatio", "16:9")
        resolution = parameters.get("resolution", "720p")
        duration = parameters.get("durationSeconds", 8)
        if aspect not in VEO_ASPECT_RATIOS:
            raise Invalid(f"Aspect ratio {json.dumps(aspect)} is not supported. Use 16:9 or 9:16.")
        if resolution not in ("720p", "1080p", "4k") or (resolution == "4k" and model not in VEO_3_1):
            raise Invalid(f"Resolution {json.dumps(resolution)} is not supported by {model}.")
        if duration not in VEO_DURATIONS:
            raise Invalid(f"durationSeconds {duration} is out of bounds: use 4, 6 or 8.")
        if resolution != "720p" and duration != 8:
            raise Invalid(f"{resolution} only supports an 8 second duration.")
        prompt = instance.get("prompt", "")
        if "video" in instance:
            return self._extension(model, instance, parameters, prompt)
        if not prompt and "image" not in instance:
            raise Invalid("A prompt or an image is required.")
        return FakeVideo(new_id(""), model, duration, aspect, resolution, prompt)

    def _extension(self, model: str, instance: dict[str, Any], parameters: dict[str, Any], prompt: str) -> FakeVideo:
        """An extension: 7 s more of a 720p video this fake made, as one video of both."""
        if model not in VEO_3_1:
            raise Invalid(f"Video extension is not supported for {model}.")
        if "image" in instance:
            raise Invalid("An image and a video to extend cannot both be given.")
        source = self._video_at(instance["video"]["uri"])
        if source is None:
            raise Invalid("Only videos generated by Veo can be extended; this uri is not one.")
        if parameters.get("durationSeconds", 8) != 8:
            raise Invalid("durationSeconds must be 8 when extending a video.")
        if parameters.get("resolution", "720p") != "720p" or source.resolution != "720p":
            raise Invalid("Only 720p videos can be extended, and only at 720p.")
        if parameters.get("aspectRatio", source.aspect_ratio) != source.aspect_ratio:
            raise Invalid(f"An extension keeps the video's aspect ratio ({source.aspect_ratio}).")
        if source.seconds > MAX_EXTENDABLE_S:
            raise Invalid(f"Only videos of up to {MAX_EXTENDABLE_S} seconds can be extended.")
        seconds = source.seconds + EXTENSION_S
        return FakeVideo(new_id(""), model, seconds, source.aspect_ratio, "720p", prompt, extends=source.id)

    def _video_at(self, uri: str) -> FakeVideo | None:
        with self._lock:
            return next((video for video in self._videos.values() if self.download_url(video.id) == uri), None)

    async def _operation(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        name = received.path.removeprefix("/v1beta/")
        with self._lock:
            operation = self._operations.get(name)
            if operation is not None and operation.polls_left > 0:
                operation.polls_left -= 1
                return web.json_response({"name": name})  # proto3 JSON leaves `done: false` out
        if operation is None:
            return self.error_response(404, google_error(404, "NOT_FOUND", f"Operation {name} not found."))
        return web.json_response({"name": name, "done": True, **self._outcome(operation)})

    def _outcome(self, operation: FakeOperation) -> dict[str, Any]:
        script = operation.script
        if script.outcome == "error":
            message = RPC_ERRORS.get(script.error_code, "Video generation failed.")
            return {"error": {"code": script.error_code, "message": message}}
        if script.outcome == "filtered":
            result: dict[str, Any] = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [RAI_REASON]}
        else:
            with self._lock:
                self._videos[operation.video.id] = operation.video
            result = {"generatedSamples": [{"video": {"uri": self.download_url(operation.video.id)}}]}
        return {"response": {"@type": PREDICT_RESPONSE, "generateVideoResponse": result}}

    async def _file(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        video_id, _, action = request.match_info["file"].partition(":")
        if action != "download" or received.query.get("alt") != "media":
            return self.error_response(400)  # the fake serves downloads only, not file metadata
        with self._lock:
            known = video_id in self._videos
        if not known:
            return self.error_response(404)
        # Like the real download: a redirect to storage on another host (here, another port).
        return web.Response(status=302, headers={"Location": self.storage_url(video_id)})

    async def _storage(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        with self._lock:
            video = self._videos.get(request.match_info["name"].removesuffix(".mp4"))
        if video is None:
            return web.Response(status=404, text="No such object.")
        return web.Response(body=fake_mp4(video.seconds), content_type="video/mp4")
