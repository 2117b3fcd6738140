"""FakeOpenAI: the fake OpenAI API put together from its endpoints (chat, images, moderations),
with its state and routes; FakeOpenAICompatible, a vLLM-like server on the same protocol.
"""

from __future__ import annotations

import threading

from aiohttp import web

from .chat import ChatEndpoints
from .images import ImageEdit, ImageEndpoints
from .moderations import ModerationEndpoints


class FakeOpenAI(ChatEndpoints, ImageEndpoints, ModerationEndpoints):
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


class FakeOpenAICompatible(FakeOpenAI):
    """An OpenAI-compatible server such as vLLM: the same protocol, plus the sampling parameters vLLM
    adds to it (top_k among them), which OpenAI itself refuses."""

    provider = "openai_compatible"
    default_api_key = "sk-test-compatible"
    extra_params = frozenset({"top_k", "min_p", "repetition_penalty"})
