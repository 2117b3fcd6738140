"""The chat endpoints, served by Channels HTTP consumers on the hot path.

They share authentication (gateway.auth), validation (the dialect serializers)
and the error envelope with the DRF views, without Django's view stack.
The response is produced in a task so that the consumer keeps receiving: a client
that disconnects mid-stream cancels the upstream call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import replace
from decimal import Decimal
from functools import cached_property
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from billing.models import UsageRecord
from billing.pricing import usd_text
from billing.ratelimit import rate_key, rate_limiter, user_rate
from core.observability import (
    REQUEST_ID_HEADER,
    bind_request_id,
    new_request_id,
    observe_request,
    response_request_id,
)
from core.principal import Principal
from gateway.auth import aauthenticate_key, raw_key_from_headers, record_key_use_later
from gateway.chat_formats import Answered, ChatCall, OpenAIDialect, PulseDialect, now_created
from gateway.chat_pipeline import ChatStream, complete_chat, open_chat_stream, plan_candidates
from gateway.errors import ApiError, AuthenticationError, InvalidRequest, as_api_error
from gateway.metering import ChatMeter
from gateway.moderation.pipeline import moderate_chat
from providers.clients.base import ProviderError, Usage
from providers.routing import Candidate, arouting_table

logger = logging.getLogger(__name__)

JSON = b"application/json"
SSE = b"text/event-stream"


def _headers(pairs: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


class ChatConsumer(AsyncHttpConsumer):
    dialect: type[PulseDialect] | type[OpenAIDialect] = PulseDialect
    route = "/v1/chat/complete"
    # No channel layer: a request needs no group messages, and joining the layer would cost
    # a new channel (a Redis round trip with channels-redis) on every request.
    channel_layer_alias = "no-channel-layer"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.received = 0
        self.task: asyncio.Task | None = None
        self.rejected = False
        self.request_id = ""
        self.common_headers: dict[str, str] = {}  # X-Request-Id and the rate-limit headers, on every answer
        self.response_started = False  # a stream's headers went out: errors can only be a last event now

    # --- ASGI message handlers ------------------------------------------------
    async def dispatch(self, message: dict) -> None:
        # Channels' dispatch first closes stale database connections through a thread hop,
        # on every message. This consumer touches the database only through
        # database_sync_to_async (auth and routing cache misses), which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_request(self, message: dict) -> None:
        if self.rejected or self.task:
            return
        chunk = message.get("body", b"")
        self.received += len(chunk)
        if self.received > settings.MAX_REQUEST_BODY_BYTES or self._declared_length() > settings.MAX_REQUEST_BODY_BYTES:
            self.rejected = True  # refuse before reading (and parsing) the rest
            self.task = asyncio.create_task(self._refuse_oversize())
            return
        self.body.append(chunk)
        if not message.get("more_body"):
            self.task = asyncio.create_task(self._respond(b"".join(self.body)))

    async def http_disconnect(self, message: dict) -> None:
        if self.task and not self.task.done():
            self.task.cancel()  # the client left: stop the upstream call too
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        raise StopConsumer()

    @cached_property
    def headers(self) -> dict[str, str]:
        """The request's headers, names lower-cased, decoded once."""
        return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}

    def _declared_length(self) -> int:
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else 0

    # --- the request ----------------------------------------------------------
    def _begin(self) -> None:
        self.request_id = new_request_id()
        bind_request_id(self.request_id)
        echoed = response_request_id(self.headers.get("x-request-id"), self.request_id)
        self.common_headers = {REQUEST_ID_HEADER: echoed}

    async def _refuse_oversize(self) -> None:
        self._begin()
        error = ApiError("Request body is too large.", status=413, code="request_too_large")
        await self._send_error(error)
        observe_request(route=self.route, method=self.scope["method"], status=413, seconds=0.0)

    async def _respond(self, body: bytes) -> None:
        started = time.perf_counter()
        self._begin()
        status = 500
        try:
            status = await self._handle(body)
        except ApiError as error:
            status = error.status
            await self._send_error(error)
        except asyncio.CancelledError:
            status = 499  # client closed the request (nginx's convention)
            raise
        except Exception as exc:
            logger.exception("unhandled error in chat consumer")
            status = 500
            await self._send_error(as_api_error(exc))
        finally:
            observe_request(
                route=self.route, method=self.scope["method"], status=status, seconds=time.perf_counter() - started
            )

    async def _handle(self, body: bytes) -> int:
        if self.scope["method"] != "POST":
            raise ApiError(
                f"Method {self.scope['method']} not allowed.",
                status=405,
                code="method_not_allowed",
                headers={"Allow": "POST"},
            )
        principal = await self._authenticate()
        await self._rate_limit(principal)
        call = self.dialect.parse(self._json(body))
        table = await arouting_table()
        candidates = plan_candidates(call, table)
        meter = ChatMeter(
            principal=principal, request_id=self.request_id, endpoint=self.route, call=call, candidates=candidates
        )
        await meter.reserve()
        try:
            # The requested route decides (the first candidate may be a fallback when its provider is off).
            call = await moderate_chat(
                call, route=table.match(call.model), principal=principal, request_id=self.request_id
            )
            if call.stream:
                return await self._stream(call, await open_chat_stream(call, candidates), meter)
            outcome = await complete_chat(call, candidates, principal=principal, request_id=self.request_id)
        except ApiError as error:
            blocked = error.code == "content_policy_violation"
            status = UsageRecord.Status.BLOCKED if blocked else UsageRecord.Status.FAILED
            answered = getattr(error, "outcome", None)  # an answer blocked after the provider produced (and billed) it
            if answered is not None:
                await meter.succeeded(
                    answered.candidate,
                    answered.result.usage,
                    [a.as_dict() for a in answered.attempts],
                    output_chars=len(answered.result.content),
                    status=status,
                    error_code=error.code,
                )
            else:
                await meter.failed(error, status=status)
            raise
        except asyncio.CancelledError:
            await meter.canceled()
            raise
        except Exception as exc:  # a bug or an infrastructure failure: still one (failed) ledger row
            await meter.failed(as_api_error(exc))
            raise
        attempts = [a.as_dict() for a in outcome.attempts]
        cost, usage = await meter.succeeded(
            outcome.candidate, outcome.result.usage, attempts, output_chars=len(outcome.result.content)
        )
        answered = self._answered(call, outcome.candidate)
        body_out = json.dumps(self.dialect.answer(replace(outcome.result, usage=usage), answered, cost)).encode()
        await self.send_response(200, body_out, headers=self._response_headers(JSON, outcome.candidate, cost))
        return 200

    async def _rate_limit(self, principal: Principal) -> None:
        limit, window_s = user_rate(principal)
        decision = await rate_limiter.acquire(rate_key(principal), limit, window_s)
        self.common_headers.update(decision.headers())
        if not decision.allowed:
            raise ApiError(
                f"Rate limit reached: {limit} requests per {window_s:g} s. Retry after "
                f"{decision.headers()['Retry-After']} s.",
                status=429,
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )

    async def _authenticate(self) -> Principal:
        raw_key = raw_key_from_headers(self.headers)
        if raw_key is None:
            raise AuthenticationError(
                "No API key: send Authorization: Bearer <key>.",
                code="missing_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="pulse"'},
            )
        principal = await aauthenticate_key(raw_key)
        record_key_use_later(principal)
        return principal

    def _json(self, body: bytes) -> Any:
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(
                f"Unsupported media type {content_type or 'none'!r}: send application/json.",
                status=415,
                code="unsupported_media_type",
            )
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"The body is not valid JSON: {exc}", code="invalid_json") from None

    def _answered(self, call: ChatCall, candidate: Candidate) -> Answered:
        return Answered(self.request_id, call.model, candidate.provider.name, candidate.upstream_model, now_created())

    def _response_headers(self, content_type: bytes, candidate: Candidate, cost=None) -> list[tuple[bytes, bytes]]:
        headers = {
            "Content-Type": content_type.decode(),
            **self.common_headers,
            "X-Pulse-Provider": candidate.provider.name,
            "X-Pulse-Model": candidate.upstream_model,
        }
        if cost is not None:
            headers["X-Pulse-Cost-USD"] = usd_text(cost)
        return _headers(headers)

    async def _send_error(self, error: ApiError) -> None:
        if self.response_started:
            await self.send_body(self.dialect.stream_error(error), more_body=False)
            return
        headers = {"Content-Type": "application/json", **self.common_headers, **error.headers}
        await self.send_response(error.status, json.dumps(error.body()).encode(), headers=_headers(headers))

    # --- streaming --------------------------------------------------------------
    async def _stream(self, call: ChatCall, stream: ChatStream, meter: ChatMeter) -> int:
        answered = self._answered(call, stream.candidate)
        headers = self._response_headers(SSE, stream.candidate) + [
            (b"Cache-Control", b"no-cache"),
            (b"X-Accel-Buffering", b"no"),
        ]
        dialect, include_usage = self.dialect, call.include_usage
        finish_reason, usage, chars = "stop", None, 0
        attempts = [a.as_dict() for a in stream.attempts]

        async def metered(status: str, error_code: str = "") -> tuple[Decimal, Usage]:
            return await meter.succeeded(
                stream.candidate, usage, attempts, output_chars=chars, status=status, error_code=error_code
            )

        try:
            await self.send_headers(status=200, headers=headers)
            self.response_started = True
            await self.send_body(dialect.stream_start(answered, include_usage), more_body=True)
            async for delta in stream.deltas():
                chars += len(delta.content)
                finish_reason = delta.finish_reason or finish_reason
                usage = delta.usage or usage
                if chunk := dialect.stream_delta(delta, answered, include_usage):
                    await self.send_body(chunk, more_body=True)
        except ProviderError as error:
            # Bytes already went to the client: no fallback now, end with a clear error event.
            logger.warning("stream from %s broke after it started: %s", error.provider, error)
            await metered(UsageRecord.Status.FAILED, "stream_interrupted")
            failure = ApiError(
                f"The stream from {error.provider} broke off: {error.message}",
                status=502,
                type="api_error",
                code="stream_interrupted",
            )
            await self.send_body(dialect.stream_error(failure), more_body=False)
            return 200
        except asyncio.CancelledError:  # the client went away: bill what was produced
            await metered(UsageRecord.Status.CANCELED, "client_disconnected")
            raise
        finally:
            await stream.aclose()
        cost, billed = await metered(UsageRecord.Status.SUCCEEDED)
        await self.send_body(dialect.stream_end(finish_reason, billed, cost, answered, include_usage), more_body=False)
        return 200


class ChatCompletionsConsumer(ChatConsumer):
    """POST /v1/chat/completions: the OpenAI wire format, for the official OpenAI SDKs."""

    dialect = OpenAIDialect
    route = "/v1/chat/completions"
