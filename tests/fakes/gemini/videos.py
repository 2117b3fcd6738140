"""The fake Gemini API's Veo videos: `:predictLongRunning` starts an operation, polled with GET
until done (as video_script() says it goes); a finished video downloads from /v1beta/files/...,
which redirects to a separate storage port, as the real download does.

The facts behind the requests, extension included, are in the comment below, with their sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..server import Fault, Received, new_id
from .common import STORAGE_PATH, GeminiServer, Invalid, check_base64, check_fields, google_error

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


class VideoEndpoints(GeminiServer):
    """predictLongRunning on a Veo model, its operations, and the video download."""

    # Set up by FakeGemini.__init__ and reset by its reset().
    storage_port: int  # a second port: the "storage host" a download redirects to
    _video_script: VideoScript
    _operations: dict[str, FakeOperation]
    _videos: dict[str, FakeVideo]

    def video_script(self, polls: int = 0, outcome: str = "ok", error_code: int = 13) -> None:
        """Script every following video operation (until reset or the next call): `polls` GETs answer
        it running, the next one finds it done: "ok" (a video), "error" (with google.rpc.Code
        error_code) or "filtered" (the safety filter withheld the video)."""
        if outcome not in ("ok", "error", "filtered"):
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._lock:
            self._video_script = VideoScript(polls, outcome, error_code)

    @property
    def videos(self) -> dict[str, FakeVideo]:
        """The videos made so far, by id."""
        with self._lock:
            return dict(self._videos)

    def download_url(self, video_id: str) -> str:
        return f"{self.base_url}/v1beta/files/{video_id}:download?alt=media"

    def storage_url(self, video_id: str) -> str:
        return f"http://127.0.0.1:{self.storage_port}{STORAGE_PATH}{video_id}.mp4"

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
