"""What every endpoint of the fake Gemini API shares: google.rpc.Status error bodies, the proto
JSON reading of field names (camelCase or snake_case) and bytes (base64 of either alphabet), usage
metadata as proto3 JSON writes it, and the safety ratings of a blocked prompt or image.

GeminiServer is the base of the endpoint classes (chat.py, images.py, videos.py): it answers
errors and unknown URLs, and checks the API key (and that storage never receives it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from aiohttp import web

from ..server import FakeProvider, Received, TokenCounts

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
V1BETA = "type.googleapis.com/google.ai.generativelanguage.v1beta"  # where the API's message types live
STORAGE_PATH = "/storage/"

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


def invalid_value(field: str, proto_type: str, value: Any) -> Invalid:
    """The API's answer to a value of the wrong type or outside an enum."""
    return Invalid(f"Invalid value at '{field}' ({proto_type}), {json.dumps(value)}", field)


def proto_bytes(value: str) -> bytes:
    """Bytes as proto3 JSON reads them: standard or URL-safe base64, with or without padding (the
    google-genai SDK sends URL-safe). Raises binascii.Error."""
    value = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def check_base64(value: Any, where: str) -> bytes:
    try:
        return proto_bytes(value) if isinstance(value, str) else b""
    except binascii.Error:
        raise Invalid(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed", where) from None


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


class GeminiServer(FakeProvider):
    """The fake Gemini API's conventions: error bodies, API key auth, unknown URLs."""

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
