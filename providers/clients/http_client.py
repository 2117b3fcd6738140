"""HttpProviderClient: what the three JSON-over-HTTP protocols share, so that each
protocol module only translates requests and answers: posting with the pooled session,
turning transport failures and non-2xx answers into one ProviderError vocabulary, and
reading server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from providers.clients.base import RETRYABLE_STATUSES, MediaOutput, ProviderClient, ProviderError
from providers.clients.sse import sse_events

T = TypeVar("T")

MAX_MESSAGE_CHARS = 500
MAX_REDIRECTS = 5
DOWNLOAD_CHUNK = 2**16
MIN_SECRET_CHARS = 8
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
# What a missing or mistyped field raises while an answer is read.
SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError)

# Pulse's error code for an upstream status; any other (5xx, 402 billing, 409) is "upstream_error".
STATUS_CODES = {
    400: "upstream_invalid_request",
    413: "upstream_invalid_request",
    422: "upstream_invalid_request",
    401: "upstream_auth_error",
    403: "upstream_auth_error",
    404: "model_not_found",
    408: "upstream_timeout",
    504: "upstream_timeout",
    429: "upstream_rate_limited",
    503: "upstream_overloaded",
    529: "upstream_overloaded",
}


def set_fields(**fields: Any) -> dict[str, Any]:
    """Only the fields that are set: upstreams reject nulls, or read them as zero."""
    return {name: value for name, value in fields.items() if value not in (None, "", (), [])}


def error_object(body: Any) -> dict[str, Any]:
    """The `{"error": {...}}` object all three providers wrap a failure in ({} when absent)."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def seconds(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def http_date_delay(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait the provider asks for in its headers: retry-after-ms, then retry-after (seconds
    or an HTTP date)."""
    if (milliseconds := seconds(headers.get("retry-after-ms"))) is not None:
        return milliseconds / 1000
    if (value := headers.get("retry-after")) is not None:
        delay = seconds(value)
        return delay if delay is not None else http_date_delay(value)
    return None


class HttpProviderClient(ProviderClient):
    """A ProviderClient speaking JSON over HTTP; subclasses add auth headers and the translation."""

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def endpoint(self, path: str) -> str:
        return self.provider.base_url.rstrip("/") + path

    def post(self, url: str, body: dict[str, Any], timeout: aiohttp.ClientTimeout | None = None) -> Any:
        """The request, as an async context manager (aiohttp's own type is private)."""
        return self.session.post(url, json=body, headers=self.headers(), timeout=timeout or self.timeout)

    async def post_json(
        self, url: str, body: dict[str, Any], *, timeout: aiohttp.ClientTimeout | None = None
    ) -> dict[str, Any]:
        """POST and return the JSON object answered; every failure is a ProviderError."""
        try:
            async with self.post(url, body, timeout) as response:
                await self.raise_for_status(response)
                raw = await response.read()
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        return self.decode(raw)

    async def post_events(self, url: str, body: dict[str, Any]) -> AsyncGenerator[tuple[str | None, str]]:
        """POST and yield the answer's SSE (event, data); the protocol decides where it ends.

        Callers wrap this in contextlib.aclosing(): leaving early must close the response.
        """
        try:
            async with self.post(url, body) as response:
                await self.raise_for_status(response)
                # Closed here when the caller stops early (the protocol's last event): left unfinished,
                # the event loop would close it later with a task of its own.
                async with aclosing(sse_events(response)) as events:
                    async for event in events:
                        yield event
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        except HttpProcessingError as exc:  # a line past the read buffer (undecodable bytes are replaced)
            raise self.bad_response(f"an unreadable stream line ({type(exc).__name__})") from exc

    def get(self, url: str, *, headers: dict[str, str] | None = None) -> Any:
        return self.session.get(
            url, headers=self.headers() if headers is None else headers, timeout=self.timeout, allow_redirects=False
        )

    async def get_json(self, url: str) -> dict[str, Any]:
        """GET and return the JSON object answered (polling an operation); failures are ProviderErrors."""
        try:
            async with self.get(url) as response:
                await self.raise_for_status(response)
                raw = await response.read()
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        return self.decode(raw)

    def sends_key_to(self, url: URL) -> bool:
        """Pulse's key goes to the provider's own host only, never to the storage a download redirects to."""
        base = URL(self.provider.base_url)
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    async def download(self, output: MediaOutput, *, max_bytes: int) -> bytes:
        """The file's bytes, following redirects (the key is dropped once they leave the provider's
        host), refusing anything larger than max_bytes."""
        if output.data is not None or not output.url:
            return await super().download(output, max_bytes=max_bytes)
        url = URL(output.url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                headers = self.headers() if self.sends_key_to(url) else {}
                async with self.get(str(url), headers=headers) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = url.join(URL(response.headers["Location"]))
                        continue
                    await self.raise_for_status(response)
                    return await self._read_bounded(response, max_bytes)
        except TRANSPORT_ERRORS as exc:
            raise self.transport_error(exc) from exc
        raise self.bad_response(f"more than {MAX_REDIRECTS} redirects downloading an output")

    async def _read_bounded(self, response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
        if response.content_length is not None and response.content_length > max_bytes:
            raise self.error(
                f"an output of {response.content_length} bytes is over the {max_bytes}-byte limit",
                retryable=False,
                code="output_too_large",
            )
        data = bytearray()
        async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
            data += chunk
            if len(data) > max_bytes:
                raise self.error(
                    f"an output is over the {max_bytes}-byte limit", retryable=False, code="output_too_large"
                )
        return bytes(data)

    async def raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        if 200 <= response.status < 300:
            return
        try:
            body = json.loads(await response.read())
        except ValueError:  # an HTML page from a proxy, say: the status alone has to do
            body = None
        raise self.status_error(response.status, body, response.headers)

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = error_object(body)
        return self.error(
            self.upstream_message(error.get("message") or f"HTTP {status}"),
            retryable=status in RETRYABLE_STATUSES,
            status=status,
            code=STATUS_CODES.get(status, "upstream_error"),
            retry_after_s=self.retry_delay(headers, error),
            details=self.upstream_codes(error),
        )

    def retry_delay(self, headers: Mapping[str, str], error: Mapping[str, Any]) -> float | None:
        """How long the provider asks us to wait; protocols that say it in the body override this."""
        return retry_after_s(headers)

    def stream_error(self, error: Mapping[str, Any], *, retryable: bool = True) -> ProviderError:
        """An error event after the 200: the answer so far is incomplete."""
        return self.error(
            self.upstream_message(error.get("message") or "error event in the stream"),
            retryable=retryable,
            code="upstream_stream_error",
            details=self.upstream_codes(error),
        )

    def stream_cut(self) -> ProviderError:
        message = "the stream ended before the provider finished the answer"
        return self.error(message, retryable=True, code="upstream_stream_cut")

    def bad_response(self, what: str) -> ProviderError:
        return self.error(
            self.upstream_message(f"unexpected answer: {what}"), retryable=True, code="upstream_bad_response"
        )

    def upstream_message(self, message: Any) -> str:
        """The provider's own words, bounded, and never with Pulse's key in them."""
        text, key = str(message), self.provider.api_key
        if len(key) >= MIN_SECRET_CHARS:  # local servers take placeholders ("EMPTY"): not secrets
            text = text.replace(key, "[redacted]")
        return text[:MAX_MESSAGE_CHARS]

    @staticmethod
    def upstream_codes(error: Mapping[str, Any]) -> dict[str, Any]:
        """The provider's own error type/code/status (e.g. insufficient_quota), for logs."""
        names = ("type", "code", "status")
        return {f"upstream_{name}": error[name] for name in names if isinstance(error.get(name), str | int)}

    def decode(self, raw: str | bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise self.bad_response("a body that is not a JSON object")
        return payload

    def parse(self, read: Callable[..., T], *args: Any) -> T:
        """Run a reader of an answer; a missing or mistyped field is upstream_bad_response."""
        try:
            return read(*args)
        except SHAPE_ERRORS as exc:
            raise self.bad_response(f"{type(exc).__name__}: {exc}") from exc
