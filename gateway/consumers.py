"""The chat endpoints, served by Channels HTTP consumers on the hot path.

A consumer is a transport adapter: it reads the body, admits the request (key, rate
limit), parses it in its dialect, hands it to the pipeline (gateway.pipeline) and renders
the answer, the stream or the error envelope. Everything between (routing, budget,
moderation, fallback, metering) happens in the pipeline.

The response is produced in a task so that the consumer keeps receiving: a client that
disconnects mid-stream cancels the upstream call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from decimal import Decimal
from functools import cached_property
from typing import Any, ClassVar

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from billing.pricing import usd_text
from core.jsontext import dumps
from core.observability import REQUEST_ID_HEADER, bind_request_id, new_request_id, observe_request, response_request_id
from gateway.chat_formats import Answered, ChatCall, Dialect, OpenAIDialect, PulseDialect, StreamRenderer, now_created
from gateway.errors import ApiError, InvalidRequest, as_api_error
from gateway.pipeline import (
    ChatCompletion,
    ChatStreaming,
    MeteredStream,
    RequestContext,
    StreamInterrupted,
    admit,
    open_stream,
    run,
)
from providers.routing import Candidate

logger = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"


def _headers(pairs: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


class JsonApiConsumer(AsyncHttpConsumer):
    """A POST endpoint with a JSON body on the hot path: reads the body (refusing oversize ones before
    they are read), answers errors in the envelope, and cancels the work if the client leaves.
    Subclasses implement _handle."""

    path: ClassVar[str]  # routed (gateway/routing.py) and documented (gateway/schema.py)
    # No channel layer: a request needs no group messages, and joining the layer would cost
    # a new channel (a Redis round trip with channels-redis) on every request.
    channel_layer_alias = "no-channel-layer"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.received = 0
        self.task: asyncio.Task[None] | None = None
        self.rejected = False
        self.request_id = ""
        self.common_headers: dict[str, str] = {}  # X-Request-Id and the rate-limit headers, on every answer
        self.response_started = False  # a stream's headers went out: errors can only be a last event now

    # --- ASGI message handlers ------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """AsyncConsumer.__call__ without a channel layer: the client is the only source of messages, so
        they are awaited in turn. Channels' await_many_dispatch would make a task and an asyncio.wait for
        each of a request's two messages (the body, then the disconnect)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch first closes stale database connections through a thread hop,
        # on every message. This consumer touches the database only through
        # database_sync_to_async (auth and routing cache misses), which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_request(self, message: dict[str, Any]) -> None:
        if self.rejected or self.task:
            return
        chunk = message.get("body", b"")
        self.received += len(chunk)
        limit = settings.MAX_REQUEST_BODY_BYTES
        if self.received > limit or self._declared_length() > limit:
            self.rejected = True  # refuse before reading (and parsing) the rest
            self.task = asyncio.create_task(self._refuse_oversize())
            return
        self.body.append(chunk)
        if not message.get("more_body"):
            self.task = asyncio.create_task(self._respond(b"".join(self.body)))

    async def http_disconnect(self, message: dict[str, Any]) -> None:
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
        await self._send_error(ApiError("Request body is too large.", status=413, code="request_too_large"))
        observe_request(route=self.path, method=self.scope["method"], status=413, seconds=0.0)

    async def _respond(self, body: bytes) -> None:
        started = time.perf_counter()
        self._begin()
        status = 500
        try:
            status = await self._handle(body)
        except asyncio.CancelledError:
            status = 499  # client closed the request (nginx's convention)
            raise
        except Exception as exc:
            error = as_api_error(exc)
            if error.status >= 500 and error is not exc:
                logger.exception("unhandled error in %s", type(self).__name__)
            status = error.status
            await self._send_error(error)
        finally:
            observe_request(
                route=self.path, method=self.scope["method"], status=status, seconds=time.perf_counter() - started
            )

    async def _handle(self, body: bytes) -> int:
        """Answer the request; returns the status sent."""
        raise NotImplementedError

    def _require_post(self) -> None:
        if self.scope["method"] != "POST":
            raise ApiError(
                f"Method {self.scope['method']} not allowed.",
                status=405,
                code="method_not_allowed",
                headers={"Allow": "POST"},
            )

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
        except ValueError as exc:  # UnicodeDecodeError included
            raise InvalidRequest(f"The body is not valid JSON: {exc}", code="invalid_json") from None

    async def send_response(self, status: int, body: bytes, *, headers: list[tuple[bytes, bytes]]) -> None:
        """A whole answer, with its Content-Length: sent as it is rather than in chunked framing."""
        length = (b"Content-Length", str(len(body)).encode())
        await self.send_headers(status=status, headers=[*headers, length])
        await self.send_body(body)

    async def _send_json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        all_headers = {"Content-Type": JSON, **self.common_headers, **headers}
        await self.send_response(status, dumps(payload), headers=_headers(all_headers))

    async def _send_error(self, error: ApiError) -> None:
        await self._send_json(error.status, error.body(), error.headers)


class ChatConsumer(JsonApiConsumer):
    """POST /v1/chat/complete: Pulse's own chat format."""

    dialect: ClassVar[type[Dialect]] = PulseDialect
    path = "/v1/chat/complete"
    renderer: StreamRenderer | None = None  # the stream's, once it started
    opening = b""  # the renderer's opening events, until they go out with the first delta

    async def _handle(self, body: bytes) -> int:
        self._require_post()
        admission = await admit(self.headers)
        self.common_headers.update(admission.headers)
        call = self.dialect.parse(self._json(body))
        context = RequestContext(admission.principal, self.request_id, self.path)
        if call.stream:
            async with open_stream(context, ChatStreaming(call)) as stream:
                return await self._stream(call, stream)
        answer = await run(context, ChatCompletion(call))
        answered = self._answered(call, answer.candidate)
        rendered = self.dialect.answer(answer.result, answer.usage, answered, answer.cost_usd)
        headers = self._response_headers(JSON, answer.candidate, answer.cost_usd)
        await self.send_response(200, dumps(rendered), headers=headers)
        return 200

    def _answered(self, call: ChatCall, candidate: Candidate) -> Answered:
        return Answered(self.request_id, call.model, candidate.provider.name, candidate.upstream_model, now_created())

    def _response_headers(
        self, content_type: str, candidate: Candidate, cost: Decimal | None = None
    ) -> list[tuple[bytes, bytes]]:
        headers = {
            "Content-Type": content_type,
            **self.common_headers,
            "X-Pulse-Provider": candidate.provider.name,
            "X-Pulse-Model": candidate.upstream_model,
        }
        if cost is not None:
            headers["X-Pulse-Cost-USD"] = usd_text(cost)
        return _headers(headers)

    async def _send_error(self, error: ApiError) -> None:
        if self.response_started and self.renderer is not None:
            await self._send_events(self.renderer.error(error), more_body=False)
            return
        await self._send_json(error.status, self.dialect.error_body(error), error.headers)

    # --- streaming --------------------------------------------------------------
    async def _stream(self, call: ChatCall, stream: MeteredStream) -> int:
        renderer = self.renderer = self.dialect.renderer(self._answered(call, stream.candidate), call.include_usage)
        headers = self._response_headers(SSE, stream.candidate) + [
            (b"Cache-Control", b"no-cache"),
            (b"X-Accel-Buffering", b"no"),
        ]
        await self.send_headers(status=200, headers=headers)
        self.response_started = True
        # The stream's opening events wait for its first delta, which open_stream already holds: they
        # go out together, one write (and one read for the client) fewer before the first token.
        self.opening = renderer.start()
        try:
            async for delta in stream:
                await self._send_events(renderer.delta(delta), more_body=True)
        except StreamInterrupted as error:  # bytes already went out: no fallback, a last error event
            await self._send_events(renderer.error(error), more_body=False)
            return 200
        await self._send_events(renderer.end(stream.finish_reason, stream.usage, stream.cost_usd), more_body=False)
        return 200

    async def _send_events(self, events: bytes, *, more_body: bool) -> None:
        """The stream's next bytes, after its opening events if those have not gone out yet."""
        events, self.opening = self.opening + events, b""
        if events or not more_body:
            await self.send_body(events, more_body=more_body)


class ChatCompletionsConsumer(ChatConsumer):
    """POST /v1/chat/completions: the OpenAI wire format, for the official OpenAI SDKs."""

    dialect = OpenAIDialect
    path = "/v1/chat/completions"


CHAT_CONSUMERS: tuple[type[ChatConsumer], ...] = (ChatConsumer, ChatCompletionsConsumer)
