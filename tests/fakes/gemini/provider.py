"""FakeGemini: the fake Gemini API put together from its endpoints (chat, Nano Banana images, Veo
videos), with its state, its two ports and its routes; generateContent goes to chat or to an image
model's answer, after the same request checks.
"""

from __future__ import annotations

import socket

from aiohttp import web

from ..server import Fault, Received, new_id
from .chat import ChatEndpoints
from .chat_checks import check_request
from .common import SAFETY_RATINGS, STORAGE_PATH, Invalid, usage
from .images import IMAGE_MODELS, ImageEndpoints
from .videos import FakeOperation, FakeVideo, VideoEndpoints, VideoScript


class FakeGemini(ChatEndpoints, ImageEndpoints, VideoEndpoints):
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
        self._signatures: set[bytes] = set()  # the thought signatures given out, which Gemini 3 wants back

    # ---- what the test scripts and sees, beyond chat ------------------------------------

    def block_prompt(self, reason: str = "SAFETY", times: int = 1, path: str | None = None) -> None:
        """Answer 200 with promptFeedback.blockReason and no candidates."""
        self._add(Fault("block", times, path, reason=reason))

    def reset(self) -> None:
        super().reset()
        self.image_delay_s = 0.0
        with self._lock:
            self._image_calls = self._peak_image_calls = 0
            self._image_epoch += 1
            self._video_script = VideoScript()
            self._operations.clear()
            self._videos.clear()
            self._signatures.clear()

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

    # ---- generateContent -------------------------------------------------------------

    async def _model_action(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action == "predictLongRunning":
            return self._predict_long_running(model, received)
        if action == "countTokens":
            return self._count_tokens(model, received)
        if action not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404)
        return await self._generate(request, received, fault)

    async def _generate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        try:
            ask = check_request(received.json, model)
            self._check_signatures(ask.turns, model)
        except Invalid as exc:
            return self.invalid(exc)
        if model in IMAGE_MODELS and action == "generateContent":
            return web.json_response(await self._image(model, received.json, ask.prompt_tokens, fault))
        answer = self.answer(ask.prompt_tokens, ask.max_tokens)
        try:
            calls = self._call_parts(answer, ask, model)
        except Invalid as exc:
            return self.invalid(exc)
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
            chunks = [chunk | envelope for chunk in self._chunks(answer, calls, ask.candidates)]
        if action == "generateContent":
            return web.json_response(self._merge(chunks, answer, calls))
        return await self._stream(request, received, chunks, fault)
