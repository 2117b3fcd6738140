"""The fake Gemini API's Nano Banana images: the gemini-*-image models answer generateContent with
one image per call, as an inlineData part (and text, as responseModalities ask), or a refusal.

Calls in progress are counted (peak_image_calls), so a test can see a client's concurrency.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from ..server import Fault, new_id
from .common import SAFETY_RATINGS, GeminiServer, camel, usage

IMAGE_MODELS = {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview"}
IMAGE_TOKENS = 1290  # output tokens per image (PROVIDERS.md: about 1290, unverified)
# A real 1x1 PNG: every image the fake makes.
PNG_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


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


class ImageEndpoints(GeminiServer):
    """generateContent on an image model."""

    # Set up by FakeGemini.__init__ and reset by its reset().
    image_delay_s: float  # how long each image call takes (calls overlap while they wait)
    _image_calls: int
    _peak_image_calls: int
    _image_epoch: int  # bumped by reset(): calls of an earlier test no longer count

    def refuse_image(self, finish_reason: str = "IMAGE_SAFETY", times: int = 1, path: str | None = None) -> None:
        """An image call answers a candidate with this finishReason and no image (NO_IMAGE: a text part)."""
        self._add(Fault("refuse_image", times, path, reason=finish_reason))

    @property
    def peak_image_calls(self) -> int:
        """The most image calls in progress at once (set image_delay_s so that calls overlap)."""
        with self._lock:
            return self._peak_image_calls

    # ---- Nano Banana -------------------------------------------------------------------

    async def _image(self, model: str, body: dict[str, Any], prompt_tokens: int, fault: Fault | None) -> dict[str, Any]:
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
        prompt = prompt_tokens if reply.input_tokens is None else reply.input_tokens
        if fault is not None and fault.kind == "block":
            feedback = {"blockReason": fault.reason, "safetyRatings": SAFETY_RATINGS}
            return {"promptFeedback": feedback, "usageMetadata": usage(prompt, 0), **envelope}
        if fault is not None and fault.kind == "refuse_image":
            return {"candidates": [image_refusal(fault.reason)], "usageMetadata": usage(prompt, 0), **envelope}
        output = IMAGE_TOKENS if reply.output_tokens is None else reply.output_tokens
        parts = image_parts(body, reply.text or "Here is your image.")
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage(prompt, output), **envelope}
