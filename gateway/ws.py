"""WS /ws/v1/chat: token streaming over a WebSocket, and the user's media jobs as they change.

One more thin adapter over the pipeline: a `chat.request` is admitted (rate limit), parsed in
Pulse's own chat format and streamed through the same open_stream as HTTP SSE, so routing,
budgets, moderation, fallback and metering are the very same code. Several streams may share one
socket, each under the client's id; `chat.cancel` stops one, a disconnect stops them all, and
each is billed once for what it produced (open_stream's guarantee).

Client -> server: {"type": "chat.request", "id", "model", "messages", ...}, {"type": "chat.cancel",
"id"}, {"type": "jobs.subscribe"}, {"type": "image.request", "id", "model", "prompt", ...}.
Server -> client: chat.delta, chat.done, error (the HTTP error envelope under "error"), job.created,
job.update, jobs.subscribed.

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
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host
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
from gateway.pipeline import ChatStreaming, RequestContext, StreamInterrupted, open_stream
from gateway.pipeline.admission import admit_principal, authenticate

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN_ORIGIN, CLOSE_TOO_SLOW = 4401, 4403, 4408
PATH = "/ws/v1/chat"


class SlowClient(asyncio.CancelledError):
    """The client did not take a frame within WS_SEND_TIMEOUT_S: as good as gone, so its streams end as
    if it had left (billed CANCELED for what they produced)."""


class ChatSocket(AsyncJsonWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.principal: Principal | None = None
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()  # one frame at a time: concurrent streams queue here, not in memory
        self.closing = False

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

    async def stop_streams(self) -> None:
        tasks = list(self.streams.values())
        for task in tasks:
            task.cancel()  # each stream bills what it produced as CANCELED and closes its upstream call
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- frames from the client -----------------------------------------------
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.principal is None:
            return  # closing: the credential was refused
        kind = content.get("type") if isinstance(content, dict) else None
        frame_id = str(content.get("id", "")) if isinstance(content, dict) else ""
        handler = {
            "chat.request": self.chat_request,
            "chat.cancel": self.chat_cancel,
            "jobs.subscribe": self.jobs_subscribe,
            "image.request": self.image_request,
        }.get(kind or "")
        if handler is None:
            await self.send_error(frame_id, InvalidRequest(f"Unknown frame type {kind!r}.", param="type"))
            return
        await handler(frame_id, content)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return {"type": None}  # answered as an unknown frame

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
            task.add_done_callback(lambda _: self.streams.pop(frame_id, None))

    async def chat_cancel(self, frame_id: str, content: dict[str, Any]) -> None:
        task = self.streams.get(frame_id)
        if task is not None:
            task.cancel()

    # --- one stream ---------------------------------------------------------------
    async def run_stream(self, frame_id: str, body: dict[str, Any]) -> None:
        request_id = new_request_id()
        bind_request_id(request_id)
        assert self.principal is not None
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
                await self.send_frame(
                    {
                        "type": "chat.done",
                        "id": frame_id,
                        "request_id": request_id,
                        "model": call.model,
                        "provider": stream.candidate.provider.name,
                        "finish_reason": stream.finish_reason,
                        "usage": PulseDialect.usage(stream.usage),
                        "cost_usd": usd_text(stream.cost_usd),
                    }
                )
        except asyncio.CancelledError:  # canceled, the client left, or stopped reading (SlowClient)
            raise
        except Exception as exc:
            error = as_api_error(exc)
            if error.status >= 500 and error is not exc:
                logger.exception("unhandled error in a WebSocket stream")
            await self.send_error(frame_id, error)

    # --- media jobs -------------------------------------------------------------
    async def jobs_subscribe(self, frame_id: str, content: dict[str, Any]) -> None:
        assert self.principal is not None
        # The group is the user's own: updates of anyone else's jobs never reach this socket.
        await self.channel_layer.group_add(owner_group(self.principal.user_id), self.channel_name)
        self.groups.append(owner_group(self.principal.user_id))  # left on disconnect
        await self.send_frame({"type": "jobs.subscribed", "id": frame_id})

    async def image_request(self, frame_id: str, content: dict[str, Any]) -> None:
        assert self.principal is not None
        try:
            await admit_principal(self.principal)
            body = {key: value for key, value in content.items() if key not in ("type", "id")}
            job = await submit(parse_image(body), self.principal, "/v1/images/generate")
            await self.send_frame({"type": "job.created", "id": frame_id, "job": await job_json(job)})
        except Exception as exc:
            await self.send_error(frame_id, as_api_error(exc))

    async def job_update(self, event: dict[str, Any]) -> None:
        """A job of this user changed (gateway.jobs.queue.notify): its current state, read fresh."""
        assert self.principal is not None
        job_id, user_id = event["job"]["id"], self.principal.user_id
        job = await Job.objects.filter(pk=uuid.UUID(str(job_id)), user_id=user_id).afirst()
        if job is not None:
            await self.send_frame({"type": "job.update", "job": await job_json(job)})

    # --- sending ----------------------------------------------------------------
    async def send_frame(self, frame: dict[str, Any]) -> None:
        """One frame, waiting for the client to take it; a client that does not within
        WS_SEND_TIMEOUT_S is disconnected (SlowClient ends the stream that was sending)."""
        if self.closing:
            raise SlowClient()
        async with self.send_lock:
            try:
                await asyncio.wait_for(self.send_json(frame), settings.WS_SEND_TIMEOUT_S)
            except TimeoutError:
                self.closing = True
                logger.warning("closing a WebSocket whose client stopped reading")
                asyncio.get_running_loop().create_task(self.drop_slow_client())
                raise SlowClient() from None

    async def drop_slow_client(self) -> None:
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_TOO_SLOW, reason="the client stopped reading")
        await self.stop_streams()

    async def send_error(self, frame_id: str, error: ApiError) -> None:
        with contextlib.suppress(SlowClient):
            await self.send_frame({"type": "error", "id": frame_id, "error": error.body()["error"]})


@database_sync_to_async
def job_json(job: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/<id> shows it; output URLs relative to this host (signed, no key needed)."""
    return dict(JobSerializer(job, context={"base_url": ""}).data)


def allowed_origin(origin: str) -> bool:
    """Whether a browser page's Origin is one of this deployment's hosts (a page elsewhere must not
    drive a signed-in user's socket: cross-site WebSocket hijacking)."""
    if not origin:
        return False
    host = URL(origin).host or ""
    domain, _ = split_domain_port(host)
    return validate_host(domain or host, settings.ALLOWED_HOSTS)
