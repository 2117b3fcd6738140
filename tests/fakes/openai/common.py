"""What every endpoint of the fake OpenAI API shares: its error bodies and headers, API key
auth, and the small checks that word a 400 as the real API does (a wrong type, a missing
parameter, a number out of range, the list of supported values).

OpenAIServer is the base of the endpoint classes (chat.py, images.py, moderations.py): it answers
errors and unknown URLs, and checks the Bearer key, the same way for all of them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..server import FakeProvider, Received, new_id

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


def string_field(parent: dict[str, Any], key: str, where: str) -> str:
    if key not in parent:
        raise missing(f"{where}.{key}")
    if not isinstance(parent[key], str):
        raise wrong_type(f"{where}.{key}", "a string", parent[key])
    return parent[key]


def object_field(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    if key not in parent:
        raise missing(f"{where}.{key}")
    if not isinstance(parent[key], dict):
        raise wrong_type(f"{where}.{key}", "an object", parent[key])
    return parent[key]


def check_bool(parent: dict[str, Any], key: str, param: str | None = None) -> None:
    value = parent.get(key)
    if value is not None and not isinstance(value, bool):
        raise wrong_type(param or key, "a boolean", value)


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


class OpenAIServer(FakeProvider):
    """The fake OpenAI API's conventions: request ids and rate-limit headers, error bodies, auth."""

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
