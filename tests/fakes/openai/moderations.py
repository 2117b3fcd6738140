"""The fake OpenAI API's moderations: /v1/moderations flags an input that contains one of the
fake's flag terms (case-insensitive), under "violence", with one result per input string and one for
a whole multimodal input.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..server import Fault, Received, new_id
from .common import Invalid, OpenAIServer, missing, text_of, wrong_type

# fmt: off
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# fmt: on


class ModerationEndpoints(OpenAIServer):
    """POST /v1/moderations."""

    flag_terms: set[str]  # set up by FakeOpenAI.__init__

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
