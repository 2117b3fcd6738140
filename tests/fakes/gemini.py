"""Fake Gemini API: `models/{model}:generateContent` and `:streamGenerateContent`.

Speaks the wire protocol in /work/shared/PROVIDERS.md. Like the real API it parses the
body as protobuf JSON: unknown field names are rejected (camelCase or snake_case both
accepted), the assistant role is "model", and a bad key is a 400 (not a 401) with
reason API_KEY_INVALID. Stream events are separated by "\\r\\n\\r\\n", so a client
that only splits on "\\n\\n" fails here. Zero token counts are omitted, as proto3
JSON does: clients must default a missing `candidatesTokenCount` to 0.
"""

from __future__ import annotations

import json
import re
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
        texts.append(part.get("text", ""))
    return texts


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
    return config


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


class FakeGemini(FakeProvider):
    provider = "gemini"
    default_api_key = "test-gemini-key"
    url_prefix = ""  # GEMINI_BASE_URL has no /v1beta
    stop_reason = "STOP"
    length_reason = "MAX_TOKENS"

    def block_prompt(self, reason: str = "SAFETY", times: int = 1, path: str | None = None) -> None:
        """Answer 200 with promptFeedback.blockReason and no candidates."""
        self._add(Fault("block", times, path, reason=reason))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{target}", self.endpoint(self._generate)),
            # The real API also serves v1 (the newest google-genai SDK defaults to it).
            web.post("/v1/models/{target}", self.endpoint(self._generate)),
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

    async def _generate(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404)
        try:
            words, max_tokens = check_request(received.json)
        except Invalid as exc:
            return self.invalid(exc)
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
