"""Shared base for the fake upstream providers.

Each fake is a real HTTP server (aiohttp.web) on 127.0.0.1 with a free port, run in a
daemon thread with its own event loop. Real sockets matter: the gateway's pooled
aiohttp client, timeouts and half-sent streams are exactly what the tests exercise,
and a mocked transport would hide them. The thread lets plain sync tests and an async
gateway under test both talk to it.

Subclasses provide the wire protocol (routes, auth, error bodies, response shapes);
this module owns the plumbing: lifecycle, the request log, the scripted reply and the
fault queue. Everything shared between the test thread and the server thread is
guarded by one lock.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

# Faults that only make sense once a stream has started.
STREAM_ONLY = frozenset({"cut", "stream_error", "stall"})


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # None when the body was empty or not valid JSON


@dataclass(frozen=True)
class FakeToolCall:
    """A function call a scripted answer makes (the model's request to run a tool)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """What the next answers contain; None means "compute the default"."""

    text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    counts: TokenCounts | None = None
    tool_calls: tuple[FakeToolCall, ...] = ()


@dataclass(frozen=True)
class TokenCounts:
    """The token kinds providers price apart. input_tokens (of the reply) is the whole prompt and
    includes cached (read from the prompt cache) and the cache writes; output_tokens is the visible
    answer, and reasoning tokens come on top of it. Each fake reports them in its own format."""

    cached: int = 0
    cache_write: int = 0  # Anthropic: written to the 5-minute cache
    cache_write_1h: int = 0  # Anthropic: written to the 1-hour cache
    reasoning: int = 0


@dataclass(frozen=True)
class Answer:
    """A reply resolved against one request: the text split into stream pieces."""

    pieces: list[str]
    input_tokens: int
    output_tokens: int
    finish_reason: str
    counts: TokenCounts = TokenCounts()
    tool_calls: tuple[FakeToolCall, ...] = ()  # the answer calls these (after its text, if any)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass
class Fault:
    kind: str  # status | delay | cut | malformed | stream_error | stall | block
    times: int
    path: str | None = None  # only requests whose path contains this
    status: int = 0
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    reason: str = ""

    def matches(self, path: str, stream: bool) -> bool:
        if self.kind in STREAM_ONLY and not stream:
            return False
        return self.path is None or self.path in path


def count_words(text: str) -> int:
    """The fakes' token count: whitespace-separated words, deterministic."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """'Hello from fake' -> ['Hello', ' from', ' fake']: one stream delta per word."""
    return re.findall(r"\s*\S+", text)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


Handler = Callable[[web.Request, Received, Fault | None], Awaitable[web.StreamResponse]]


class FakeProvider:
    """Base of FakeOpenAI, FakeAnthropic and FakeGemini."""

    provider = "provider"
    default_api_key = "test-key"
    url_prefix = ""  # what the official SDK's base URL includes after host:port
    stop_reason = "stop"  # the provider's word for a normal end ...
    length_reason = "length"  # ... and for hitting the max-tokens limit
    tool_reason = "tool_calls"  # ... and for stopping to call tools

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key or self.default_api_key
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._faults: list[Fault] = []
        self._reply = Reply()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -------------------------------------------------------------

    @classmethod
    def start(cls, api_key: str | None = None) -> Self:
        fake = cls(api_key=api_key)
        fake._serve_in_thread()
        return fake

    def _serve_in_thread(self) -> None:
        # Bind here so a port problem raises in the caller, not silently in the thread.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"fake-{self.provider}", daemon=True)
        self._thread.start()
        # Set up on the server's loop and wait for it: this works from sync code and from
        # inside an async test alike (the test's own loop is never needed or blocked long).
        started = asyncio.run_coroutine_threadsafe(self._open(sock), loop)
        try:
            started.result(timeout=10)
        except BaseException:
            self.stop()
            raise

    async def _open(self, sock: socket.socket) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        # A short shutdown timeout: stop() must not wait for a delayed handler.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    @staticmethod
    async def _close(runner: web.AppRunner) -> None:
        await runner.cleanup()
        # Handlers still sleeping in a delay() outlive the shutdown timeout: cancel them, or
        # closing the loop would destroy them mid-flight ("Task was destroyed but it is pending").
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop, self._thread, self._runner = None, None, None
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(self._close(runner), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_prefix}"

    # ---- what the test sees and scripts ------------------------------------------

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def last_request(self) -> Received | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._reply = Reply()

    def reply(
        self,
        text: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reason: str | None = None,
        counts: TokenCounts | None = None,
        tool_calls: list[FakeToolCall] | None = None,
    ) -> None:
        """Script every following answer (until reset or the next reply call). With tool_calls the
        answer calls those functions (the provider's tool-use finish reason, its text "" unless
        given) and the fake refuses a request that offered no such tool."""
        with self._lock:
            self._reply = Reply(text, input_tokens, output_tokens, finish_reason, counts, tuple(tool_calls or ()))

    def fail(
        self,
        status: int,
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        """Answer `status` with this provider's own error body for it.

        `body` replaces it: a dict is sent as JSON, a str as is (say, a proxy's HTML page).
        `headers` are added to (and override) the provider's usual ones.
        """
        self._add(Fault("status", times, path, status=status, body=body, headers=headers))

    def delay(self, seconds: float, times: int = 1, path: str | None = None) -> None:
        """Sleep before answering (then answer normally)."""
        self._add(Fault("delay", times, path, seconds=seconds))

    def cut_stream(self, after_chunks: int, times: int = 1, path: str | None = None) -> None:
        """Send that many content chunks of a stream, then close the socket mid-body."""
        self._add(Fault("cut", times, path, after_chunks=after_chunks))

    def stall_stream(self, after_chunks: int, seconds: float, times: int = 1, path: str | None = None) -> None:
        """Send that many content chunks of a stream, pause, then finish it (FakeOpenAI only):
        time for a test's client to disconnect mid-stream."""
        self._add(Fault("stall", times, path, after_chunks=after_chunks, seconds=seconds))

    def malformed(self, times: int = 1, path: str | None = None) -> None:
        """Answer 200 with invalid JSON, or a stream with a broken `data:` line."""
        self._add(Fault("malformed", times, path))

    def stream_error(self, after_chunks: int, times: int = 1, path: str | None = None) -> None:
        """Send that many content chunks, then the provider's mid-stream error."""
        self._add(Fault("stream_error", times, path, after_chunks=after_chunks))

    def _add(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, received: Received, stream: bool) -> Fault | None:
        """The oldest queued fault that matches this request, using up one of its times."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(received.path, stream):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def answer(self, prompt_words: int, max_tokens: int | None) -> Answer:
        """Resolve the scripted reply for one request.

        Like the real APIs, an answer longer than max_tokens is cut to max_tokens words
        and ends with the provider's "length" finish reason (unless one was scripted).
        """
        with self._lock:
            reply = self._reply
        default = "" if reply.tool_calls else f"Hello from fake {self.provider}"
        text = reply.text if reply.text is not None else default
        pieces = split_words(text)
        finish = reply.finish_reason or (self.tool_reason if reply.tool_calls else None)
        if finish is None and max_tokens is not None and len(pieces) > max_tokens:
            pieces, finish = pieces[:max_tokens], self.length_reason
        return Answer(
            pieces=pieces,
            input_tokens=prompt_words if reply.input_tokens is None else reply.input_tokens,
            output_tokens=len(pieces) if reply.output_tokens is None else reply.output_tokens,
            finish_reason=finish or self.stop_reason,
            counts=reply.counts or TokenCounts(),
            tool_calls=reply.tool_calls,
        )

    # ---- what a provider subclass implements ---------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def auth_error(self, received: Received) -> web.Response | None:
        """The provider's rejection of a missing/wrong key (or other header), or None."""
        raise NotImplementedError

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        raise NotImplementedError

    def is_stream(self, received: Received) -> bool:
        return isinstance(received.json, dict) and received.json.get("stream") is True

    # ---- request pipeline shared by every endpoint -------------------------------

    def endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a handler: log, authenticate, then apply the next fault.

        Auth comes first so a bad key never uses up a fault meant for a good request.
        Stream-shaped faults (cut, stream_error, malformed streams, blocks) are passed
        on to the handler, which knows where in its protocol to apply them.
        """

        async def serve(request: web.Request) -> web.StreamResponse:
            received = await self._record(request)
            denied = self.auth_error(received)
            if denied is not None:
                return denied
            stream = self.is_stream(received)
            fault = self._take_fault(received, stream)
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
                fault = None
            if fault is not None and fault.kind == "status" and isinstance(fault.body, str):
                # A raw body, e.g. the HTML page of a proxy in front of the provider.
                return web.Response(text=fault.body, status=fault.status, headers=fault.headers)
            if fault is not None and fault.kind == "status":
                return self.error_response(fault.status, fault.body, fault.headers)
            if fault is not None and fault.kind == "malformed" and not stream:
                return web.Response(text='{"id": "broken", "choices": [{', content_type="application/json")
            try:
                return await handler(request, received, fault)
            except ConnectionError:
                # The client left (say, it timed out during a delay): nobody to answer, and
                # no reason for aiohttp to log a server error. Its write of this is a no-op.
                return web.Response()

        return serve

    async def _record(self, request: web.Request) -> Received:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
        )
        with self._lock:
            self._requests.append(received)
        return received

    # ---- server-sent events ------------------------------------------------------

    @staticmethod
    async def open_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache", **(headers or {})})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        return response

    @staticmethod
    async def send(response: web.StreamResponse, text: str) -> None:
        await response.write(text.encode())

    @staticmethod
    def cut(request: web.Request) -> None:
        """Close the socket without ending the chunked body: the client sees a broken
        transfer, as when an upstream dies mid-stream. aiohttp then swallows the
        ConnectionError from its own write_eof()."""
        if request.transport is not None:
            request.transport.close()
