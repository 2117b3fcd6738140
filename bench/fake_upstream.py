"""A fast fake OpenAI-compatible upstream for the gateway benchmarks.

    .venv/bin/python bench/fake_upstream.py --port 9100 [--delay-ms 0] [--chunks 8] [--chunk-interval-ms 0]

Raw asyncio (uvloop) and httptools, one fixed answer, so it costs a few microseconds a request and
is never what a benchmark measures. POST .../chat/completions answers one chat completion, or an SSE
stream when the body says "stream": true (role chunk, `chunks` content chunks, finish chunk, usage
chunk, [DONE]). The delay before the answer's first byte, and the gap between stream chunks, come from
(first match wins) the request's `x-bench-delay-ms` header or `?delay_ms=` query, else the server's
settings, which `POST /_bench/config?delay_ms=&chunks=&chunk_interval_ms=` changes while it runs.
Anything else is a 404; GET /healthz is 200.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from typing import cast
from urllib.parse import parse_qs

import httptools
import uvloop

MODEL = "gpt-4o"
TEXT = "Hello! How can I help you today?"
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_bench",
    }
).encode()


class Settings:
    delay_s = 0.0
    chunks = 8
    chunk_interval_s = 0.0


def sse_event(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL}
    chunk |= {"choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.cache
def stream_events(chunks: int) -> tuple[bytes, list[bytes], bytes]:
    """The stream's first event, its content events and its end (finish, usage, [DONE]), each HTTP-chunked."""
    words = TEXT.split(" ")
    pieces = [(" " if i else "") + words[i % len(words)] for i in range(chunks)]
    first = http_chunk(sse_event({"role": "assistant", "content": ""}))
    content = [http_chunk(sse_event({"content": piece})) for piece in pieces]
    end = sse_event({}, "stop") + sse_event(None, usage=USAGE) + b"data: [DONE]\n\n"
    return first, content, http_chunk(end) + b"0\r\n\r\n"


def head(status: str, content_type: str, length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer each in turn (no pipelining)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.header_delay: float | None = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body, self.header_delay = b"", [], None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-bench-delay-ms":
            self.header_delay = float(value) / 1000

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self.url)
        path, query = url.path.decode(), parse_qs((url.query or b"").decode())
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        if method == b"POST" and path.endswith("/chat/completions"):
            delay = self.header_delay
            if delay is None:
                delay = float(query["delay_ms"][0]) / 1000 if "delay_ms" in query else Settings.delay_s
            body = b"".join(self.body)
            if b'"stream": true' in body or b'"stream":true' in body:
                asyncio.ensure_future(self.stream(delay, keep_alive))
            else:
                answer = head("200 OK", "application/json", len(COMPLETION), keep_alive) + COMPLETION
                self.later(delay, answer, keep_alive)
        elif method == b"POST" and path == "/_bench/config":
            self.configure(query, keep_alive)
        elif method == b"GET" and path == "/healthz":
            self.later(0, head("200 OK", "text/plain", 2, keep_alive) + b"ok", keep_alive)
        else:
            self.later(0, head("404 Not Found", "text/plain", 9, keep_alive) + b"not found", keep_alive)

    def later(self, delay: float, data: bytes, keep_alive: bool = True) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, data, keep_alive)
        else:
            self.send(data, keep_alive)

    def send(self, data: bytes, keep_alive: bool = True) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            if not keep_alive:
                self.transport.close()

    async def stream(self, delay: float, keep_alive: bool) -> None:
        first, content, end = stream_events(Settings.chunks)
        interval = Settings.chunk_interval_s
        if delay > 0:
            await asyncio.sleep(delay)
        if interval <= 0:  # everything at once: the cheapest stream for time-to-first-token runs
            whole = first + b"".join(content) + end
            self.send(head("200 OK", "text/event-stream", None, keep_alive) + whole, keep_alive)
            return
        self.send(head("200 OK", "text/event-stream", None, keep_alive) + first)
        for piece in content:
            await asyncio.sleep(interval)
            if self.transport.is_closing():
                return
            self.send(piece)
        self.send(end, keep_alive)

    def configure(self, query: dict[str, list[str]], keep_alive: bool) -> None:
        if "delay_ms" in query:
            Settings.delay_s = float(query["delay_ms"][0]) / 1000
        if "chunks" in query:
            Settings.chunks = int(query["chunks"][0])
        if "chunk_interval_ms" in query:
            Settings.chunk_interval_s = float(query["chunk_interval_ms"][0]) / 1000
        now = {"delay_ms": Settings.delay_s * 1000, "chunks": Settings.chunks}
        answer = json.dumps(now | {"chunk_interval_ms": Settings.chunk_interval_s * 1000}).encode()
        self.send(head("200 OK", "application/json", len(answer), keep_alive) + answer, keep_alive)


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Connection, host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    Settings.delay_s, Settings.chunks, Settings.chunk_interval_s = (
        args.delay_ms / 1000,
        args.chunks,
        args.chunk_interval_ms / 1000,
    )
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
