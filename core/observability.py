"""Request ids, structured-log context and Prometheus metrics, for Django views and consumers alike."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from prometheus_client import Counter, Histogram

from core.ids import unique_hex

REQUEST_ID_HEADER = "X-Request-Id"
_current_request_id: ContextVar[str] = ContextVar("pulse_request_id", default="-")
# A client may send its own id; anything that could break a log line or a header is replaced.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

HTTP_REQUESTS = Counter("pulse_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "pulse_http_request_duration_seconds",
    "Time from request to response start",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# The next handler of a middleware: synchronous or asynchronous, as Django's chain decides. Each
# middleware below is asynchronous (async_mode, and marked a coroutine function) exactly when it
# is given an asynchronous one; otherwise get_response returns the response itself.
GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]


def new_request_id() -> str:
    """Pulse's own id for a request: unique, so it can key the ledger (a client's id may repeat)."""
    return f"req_{unique_hex()}"


def response_request_id(client_value: str | None, request_id: str) -> str:
    """The X-Request-Id to answer with: the client's own when it sent a sane one, else Pulse's."""
    return client_value if client_value and _CLIENT_REQUEST_ID.match(client_value) else request_id


def bind_request_id(request_id: str) -> None:
    """Make request_id the id on every log line of the current request (task or thread context)."""
    _current_request_id.set(request_id)


# The labelled series, found once per (route, method, status): labels() checks and locks on every call.
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(*, route: str, method: str, status: int, seconds: float) -> None:
    series = _series.get((route, method, status))
    if series is None:
        series = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_LATENCY.labels(route, method))
        _series[(route, method, status)] = series
    count, latency = series
    count.inc()
    latency.observe(seconds)


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current_request_id.get()
        return True


class SyncAndAsyncMiddleware:
    """A middleware for sync and async stacks alike: which one it serves is decided once, here."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        raise NotImplementedError


class RequestIdMiddleware(SyncAndAsyncMiddleware):
    """Reads or makes the request id, binds it for logging and echoes it on the response."""

    def _begin(self, request: HttpRequest) -> str:
        request_id = new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]  # Pulse's own attribute; HttpRequest has none
        bind_request_id(request_id)
        return response_request_id(request.headers.get(REQUEST_ID_HEADER), request_id)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self._acall(request)
        request_id = self._begin(request)
        response = cast(HttpResponseBase, self.get_response(request))  # synchronous here (see GetResponse)
        response[REQUEST_ID_HEADER] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id = self._begin(request)
        response = await cast(Awaitable[HttpResponseBase], self.get_response(request))
        response[REQUEST_ID_HEADER] = request_id
        return response


class MetricsMiddleware(SyncAndAsyncMiddleware):
    """Counts and times Django-served requests, labelled by URL pattern (bounded cardinality)."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self._acall(request)
        started = time.perf_counter()
        response = cast(HttpResponseBase, self.get_response(request))  # synchronous here (see GetResponse)
        self._observe(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await cast(Awaitable[HttpResponseBase], self.get_response(request))
        self._observe(request, response, started)
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        match = getattr(request, "resolver_match", None)
        route = f"/{match.route}" if match and match.route else "unmatched"
        observe_request(
            route=route,
            method=str(request.method),  # as prometheus_client would make it: never None in a served request
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
