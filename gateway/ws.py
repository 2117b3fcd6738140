"""WS /ws/v1/chat: token streaming over a WebSocket, and the user's media jobs as they change.

One more thin adapter over the pipeline: a `chat.request` is admitted (rate limit), parsed in
Pulse's own chat format and streamed through the same open_stream as HTTP SSE, so routing,
budgets, moderation, fallback and metering are the very same code. Several streams may share one
socket, each under the client's id; `chat.cancel` stops one, a disconnect stops them all, and
each is billed once for what it produced (open_stream's guarantee).

Client -> server: {"type": "chat.request", "id", "model", "messages", ...}, {"type": "chat.cancel",
"id"}, {"type": "jobs.subscribe"}, {"type": "image.request", "id", "model", "prompt", ...}.
Server -> client: chat.delta, chat.done, error (the HTTP error envelope under "error"), job.created,
job.update, jobs.subscribed. Every chat.request ends with one chat.done or one error under its id; a
stream the client canceled ends with chat.done whose finish_reason is "canceled", carrying what was
billed, after which its id may be used again. A frame that is not a JSON object with a known type is
answered with an error frame; the socket stays open.

Credentials come with the handshake: `Authorization: Bearer <key>` (programs), or the Django session
of a signed-in user whose page's Origin is one of ALLOWED_HOSTS (browsers cannot set headers on a
WebSocket). Without one the socket is accepted and closed at once with code 4401 (4403 for a foreign
origin), so the client can read why; no work is done.

A client that stops reading stalls its sends: every send waits for the socket to drain and is given
WS_SEND_TIMEOUT_S; after that the socket is closed (4408) and its streams canceled, so memory per
stream stays at one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from decimal import Decimal
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import validate_host
from yarl import URL

from billing.pricing import usd_text
from core.observability import bind_request_id, new_request_id
from core.principal import Principal
from gateway.auth import session_principal
from gateway.chat_formats import PulseDialect, tool_delta_json
from gateway.errors import ApiError, AuthenticationError, InvalidRequest, as_api_error
from gateway.jobs.queue import owner_group
from gateway.jobs.requests import parse_image
from gateway.jobs.serializers import JobSerializer
from gateway.jobs.services import submit
from gateway.models import Job
from gateway.pipeline import ChatStreaming, MeteredStream, RequestContext, StreamInterrupted, open_stream
from gateway.pipeline.admission import admit_principal, authenticate
from providers.clients.base import Usage

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN_ORIGIN, CLOSE_TOO_SLOW = 4401, 4403, 4408
PATH = "/ws/v1/chat"


class ClientGone(asyncio.CancelledError):
    """A frame could not be sent because the client has left: the stream that was sending ends as a
    canceled one (billed CANCELED for what it produced), not as a failure of Pulse's."""


class SlowClient(ClientGone):
    """The client did not take a frame within WS_SEND_TIMEOUT_S: as good as gone, so its streams end as
    if it had left."""


NOT_JSON = object()  # decode_json's answer to a frame that does not parse


class ChatSocket(AsyncJsonWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.principal: Principal | None = None
        self.streams: dict[str, asyncio.Task[None]] = {}  # by the client's id, while the id is taken
        self.tasks: set[asyncio.Task[None]] = set()  # every stream still running, to stop on the way out
        self.canceled: set[asyncio.Task[None]] = set()  # streams the client asked to stop
        self.send_lock = asyncio.Lock()  # one frame at a time: concurrent streams queue here, not in memory
        self.closing = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # However the consumer ends (the client left, a bug, the server shutting down and canceling
        # it), no stream outlives it: each is canceled, billed for what it produced, its upstream closed.
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.stop_streams()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch first closes stale database connections through a thread hop, on every
        # frame; as in gateway/consumers.py, the database is reached only through
        # database_sync_to_async, which does that itself (and websocket_disconnect does it at the end).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- the handshake ----------------------------------------------------------
    async def connect(self) -> None:
        await self.accept()
        try:
            self.principal = await self.credential()
        except ApiError as error:
            code = CLOSE_FORBIDDEN_ORIGIN if error.code == "origin_not_allowed" else CLOSE_UNAUTHENTICATED
            await self.close(code=code, reason=f"{error.code}: {error.message}"[:120])

    async def credential(self) -> Principal:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}
        if "authorization" in headers or "x-api-key" in headers:
            return await authenticate(headers)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise AuthenticationError(
                "No credentials: send Authorization: Bearer <key>, or sign in.", code="missing_api_key"
            )
        if not allowed_origin(headers.get("origin", "")):
            raise ApiError("This page's origin may not use the socket.", status=403, code="origin_not_allowed")
        principal = await database_sync_to_async(session_principal)(user.pk)
        if principal is None:
            raise AuthenticationError("The signed-in user is no longer active.")
        return principal

    async def disconnect(self, code: int) -> None:
        await self.stop_streams()

    async def stop_streams(self, sparing: asyncio.Task[Any] | None = None) -> None:
        """Cancel every stream but `sparing` (one already ending on its own) and wait for them."""
        tasks = [task for task in self.tasks if task is not sparing]
        for task in tasks:
            task.cancel()  # each stream bills what it produced as CANCELED and closes its upstream call
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- frames from the client -----------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Channels' JSON consumer raises on a binary frame, which would end the socket and its streams.
        await self.receive_json(await self.decode_json(text_data) if text_data else NOT_JSON)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.principal is None:
            return  # closing: the credential was refused
        if not isinstance(content, dict):
            await self.send_error("", InvalidRequest("A frame is a JSON object with a type.", param="type"))
            return
        kind, frame_id = content.get("type"), str(content.get("id") or "")
        handler = {
            "chat.request": self.chat_request,
            "chat.cancel": self.chat_cancel,
            "jobs.subscribe": self.jobs_subscribe,
            "image.request": self.image_request,
        }.get(kind if isinstance(kind, str) else "")
        if handler is None:
            await self.send_error(frame_id, InvalidRequest(f"Unknown frame type {kind!r}.", param="type"))
            return
        await handler(frame_id, content)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return NOT_JSON

    async def chat_request(self, frame_id: str, content: dict[str, Any]) -> None:
        if not frame_id:
            await self.send_error("", InvalidRequest("A chat.request needs an id.", param="id"))
        elif frame_id in self.streams:
            await self.send_error(frame_id, InvalidRequest(f"A stream with id {frame_id!r} is running.", param="id"))
        elif len(self.streams) >= settings.WS_MAX_STREAMS:
            await self.send_error(
                frame_id,
                ApiError(
                    f"At most {settings.WS_MAX_STREAMS} streams at once per socket.",
                    status=429,
                    type="rate_limit_error",
                    code="too_many_streams",
                ),
            )
        else:
            body = {key: value for key, value in content.items() if key not in ("type", "id")}
            task = asyncio.create_task(self.run_stream(frame_id, body))
            self.streams[frame_id] = task
            self.tasks.add(task)
            task.add_done_callback(lambda _: self.stream_ended(frame_id, task))

    def free_id(self, frame_id: str, task: asyncio.Task[None]) -> None:
        """The id may be used again (unless a newer stream already took it)."""
        if self.streams.get(frame_id) is task:
            del self.streams[frame_id]

    def stream_ended(self, frame_id: str, task: asyncio.Task[None]) -> None:
        self.free_id(frame_id, task)
        self.tasks.discard(task)
        self.canceled.discard(task)

    async def chat_cancel(self, frame_id: str, content: dict[str, Any]) -> None:
        task = self.streams.get(frame_id)  # None: already ended (a cancel racing its chat.done)
        if task is not None:
            self.canceled.add(task)
            task.cancel()

    # --- one stream ---------------------------------------------------------------
    async def run_stream(self, frame_id: str, body: dict[str, Any]) -> None:
        request_id = new_request_id()
        bind_request_id(request_id)
        assert self.principal is not None
        stream: MeteredStream | None = None
        try:
            await admit_principal(self.principal)
            call = PulseDialect.parse(body | {"stream": True})
            context = RequestContext(self.principal, request_id, PATH)
            async with open_stream(context, ChatStreaming(call)) as stream:
                try:
                    async for delta in stream:
                        frame: dict[str, Any] = {"type": "chat.delta", "id": frame_id, "delta": delta.content}
                        if delta.tool_calls:
                            frame["tool_calls"] = [tool_delta_json(piece) for piece in delta.tool_calls]
                        if delta.content or delta.tool_calls:
                            await self.send_frame(frame)
                except StreamInterrupted as interrupted:
                    await self.send_error(frame_id, interrupted)
                    return
            # Billed and its upstream response closed: the id is free before the client hears so, and
            # a chat.cancel from now on finds nothing to cancel.
            self.free_id(frame_id, self.current_task())
            await self.send_frame(done_frame(frame_id, request_id, body.get("model"), stream, stream.finish_reason))
        except asyncio.CancelledError:  # canceled, the client left (ClientGone), or stopped reading (SlowClient)
            if self.current_task() not in self.canceled or self.closing:
                raise
            # The client's chat.cancel: open_stream has billed what was produced (CANCELED).
            with contextlib.suppress(ClientGone):
                await self.send_frame(done_frame(frame_id, request_id, body.get("model"), stream, "canceled"))
        except Exception as exc:
            error = as_api_error(exc)
            if error.status >= 500 and error is not exc:
                logger.exception("unhandled error in a WebSocket stream")
            await self.send_error(frame_id, error)

    @staticmethod
    def current_task() -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        return task

    # --- media jobs -------------------------------------------------------------
    async def jobs_subscribe(self, frame_id: str, content: dict[str, Any]) -> None:
        assert self.principal is not None
        # The group is the user's own: updates of anyone else's jobs never reach this socket.
        group = owner_group(self.principal.user_id)
        await self.channel_layer.group_add(group, self.channel_name)
        if group not in self.groups:
            self.groups.append(group)  # left on disconnect
        await self.send_reply({"type": "jobs.subscribed", "id": frame_id})

    async def image_request(self, frame_id: str, content: dict[str, Any]) -> None:
        assert self.principal is not None
        try:
            await admit_principal(self.principal)
            body = {key: value for key, value in content.items() if key not in ("type", "id")}
            job = await submit(parse_image(body), self.principal, "/v1/images/generate")
            await self.send_reply({"type": "job.created", "id": frame_id, "job": await job_json(job)})
        except Exception as exc:
            await self.send_error(frame_id, as_api_error(exc))

    async def job_update(self, event: dict[str, Any]) -> None:
        """A job of this user changed (gateway.jobs.queue.notify): its current state, read fresh."""
        assert self.principal is not None
        job_id, user_id = event["job"]["id"], self.principal.user_id
        job = await database_sync_to_async(Job.objects.filter(pk=uuid.UUID(str(job_id)), user_id=user_id).first)()
        if job is not None:
            await self.send_reply({"type": "job.update", "job": await job_json(job)})

    # --- sending ----------------------------------------------------------------
    async def send_frame(self, frame: dict[str, Any]) -> None:
        """One frame, waiting for the client to take it; a client that does not within
        WS_SEND_TIMEOUT_S is disconnected (SlowClient ends the stream that was sending), and one that
        has left ends it with ClientGone."""
        async with self.send_lock:
            if self.closing:  # checked once the lock is ours: the sender before may have given up
                raise SlowClient()
            try:
                await asyncio.wait_for(self.send_json(frame), settings.WS_SEND_TIMEOUT_S)
            except TimeoutError:  # (an OSError too: first)
                self.closing = True
                logger.warning("closing a WebSocket whose client stopped reading")
                task = asyncio.get_running_loop().create_task(self.drop_slow_client(self.current_task()))
                background.add(task)  # a reference, so the task is not collected before it runs
                task.add_done_callback(background.discard)
                raise SlowClient() from None
            except OSError:  # the server's word for a socket already closed (uvicorn's ClientDisconnected)
                raise ClientGone() from None

    async def send_reply(self, frame: dict[str, Any]) -> None:
        """A frame that ends nothing when it cannot be sent (an error, a job's news): a client too slow
        for it is being disconnected already, one that has left is gone, and the consumer goes on to
        hear so."""
        with contextlib.suppress(ClientGone):
            await self.send_frame(frame)

    async def drop_slow_client(self, sender: asyncio.Task[Any]) -> None:
        # The streams first: each is billed and its upstream closed whether or not the close frame
        # ever gets through (it waits behind the frames the client is not reading). The sender that
        # timed out is ending already, with its SlowClient.
        await self.stop_streams(sparing=sender)
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_TOO_SLOW, reason="the client stopped reading")

    async def send_error(self, frame_id: str, error: ApiError) -> None:
        await self.send_reply({"type": "error", "id": frame_id, "error": error.body()["error"]})


background: set[asyncio.Task[None]] = set()


def done_frame(frame_id: str, request_id: str, model: Any, stream: MeteredStream | None, finish: str) -> dict[str, Any]:
    """The stream's last frame: what it produced, as billed (nothing when it was canceled before opening)."""
    return {
        "type": "chat.done",
        "id": frame_id,
        "request_id": request_id,
        "model": model,
        "provider": stream.candidate.provider.name if stream else None,
        "finish_reason": finish,
        "usage": PulseDialect.usage(stream.usage if stream else Usage()),
        "cost_usd": usd_text(stream.cost_usd if stream else Decimal(0)),
    }


@database_sync_to_async
def job_json(job: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/<id> shows it; output URLs relative to this host (signed, no key needed)."""
    return dict(JobSerializer(job, context={"base_url": ""}).data)


def allowed_origin(origin: str) -> bool:
    """Whether a browser page's Origin is one of this deployment's hosts (a page elsewhere must not
    drive a signed-in user's socket: cross-site WebSocket hijacking)."""
    try:
        host = (URL(origin).host or "") if origin else ""
    except ValueError:  # not a URL at all
        return False
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, written as ALLOWED_HOSTS writes it
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)
