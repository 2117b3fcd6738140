"""WS /ws/v1/chat end to end: the live gateway (uvicorn, in-process) and a real WebSocket client
(the `websockets` library), over real sockets: streams, a refused key, a client that stops reading
while a long answer streams (closed 4408, billed once), and one that drops the connection while a
send waits for it (billed as canceled, not as Pulse's failure)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from billing.models import UsageRecord
from gateway.ws import PATH
from tests.helpers import MESSAGES

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 3.0


def ws_url(gateway: str) -> str:
    return gateway.replace("http://", "ws://") + PATH


@asynccontextmanager
async def chat_socket(gateway: str, key: str, **options: Any) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(ws_url(gateway), additional_headers=headers, open_timeout=WAIT_S, **options) as ws:
        yield ws


async def frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))


async def until_done(ws: ClientConnection, frame_id: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("chat.done", "error"):
        frames.append(await frame(ws))
        assert frames[-1]["id"] == frame_id
    return frames


@database_sync_to_async  # closes its connection after: none left open in the thread
def rows() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("created_at"))


async def rows_when(count: int, timeout: float = WAIT_S) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while len(found := await rows()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return found


def connections_to(port: int) -> dict[int, int]:
    """Established TCP connections to this loopback port (Linux /proc), as their local port -> bytes
    received and not yet read: the gateway's connections to a fake provider, pooled ones included."""
    with open("/proc/net/tcp") as table:
        entries = [line.split() for line in list(table)[1:]]
    return {
        int(local.split(":")[1], 16): int(queues.split(":")[1], 16)
        for _, local, remote, state, queues, *_ in entries
        if state == "01" and int(remote.split(":")[1], 16) == port
    }


async def stalled_connection(port: int, timeout: float = WAIT_S) -> int:
    """The gateway's connection to the provider that has data waiting it does not read: the stream
    held back by a client that stopped reading (pooled connections have nothing waiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if waiting := [local for local, unread in connections_to(port).items() if unread]:
            [stalled] = waiting
            return stalled
        await asyncio.sleep(0.005)
    raise AssertionError("no connection to the provider stalled")


async def test_a_stream_over_a_real_socket(gateway, live_key, fake_providers):
    fake_providers["gemini"].reply("a b c", input_tokens=40, output_tokens=3)

    async with chat_socket(gateway, live_key) as ws:
        await ws.send(
            json.dumps({"type": "chat.request", "id": "s1", "model": "gemini-2.5-flash", "messages": MESSAGES})
        )
        frames = await until_done(ws, "s1")
        await ws.send(json.dumps({"type": "chat.request", "id": "s2", "model": "gpt-4o", "messages": MESSAGES}))
        second = await until_done(ws, "s2")

    assert "".join(f["delta"] for f in frames[:-1]) == "a b c"
    done = frames[-1]
    assert (done["type"], done["provider"], done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (
        "chat.done",
        "gemini",
        40,
        3,
    )
    assert second[-1]["type"] == "chat.done" and second[-1]["provider"] == "openai"
    billed = {row.request_id: row for row in await rows()}
    assert set(billed) == {done["request_id"], second[-1]["request_id"]}
    assert billed[done["request_id"]].cost_usd == Decimal(done["cost_usd"])


async def test_a_bad_key_is_closed_4401_with_its_reason(gateway, fake_providers):
    async with chat_socket(gateway, "pk-not-a-key") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401 and closed.value.rcvd.reason.startswith("invalid_api_key: ")
    assert sum(fake.calls for fake in fake_providers.values()) == 0


def small_receive_buffer_socket(gateway: str) -> socket.socket:
    """A client socket that holds little in the kernel (autotuning off), so that a client which stops
    reading stalls the server's sends after a few hundred kilobytes rather than tens of megabytes."""
    host, port = gateway.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # before connect: sets the window
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_a_client_that_stops_reading_is_closed_4408_and_its_stream_billed_once(
    gateway, live_key, fake_providers, settings
):
    settings.WS_SEND_TIMEOUT_S = 0.5
    openai = fake_providers["openai"]
    word = "x" * 16_384
    openai.reply(" ".join([word] * 512))  # 8 MB of answer, a 16 KB frame per word: more than the kernel holds

    sock = small_receive_buffer_socket(gateway)
    # Uncompressed, so the frames take as many bytes on the wire as they hold (deflated, this answer would
    # be a few kilobytes); the client's own queue holds two frames before it stops reading the socket.
    options: dict[str, Any] = {"sock": sock, "max_queue": 2, "max_size": None, "compression": None}
    async with chat_socket(gateway, live_key, **options) as ws:
        started = time.monotonic()
        await ws.send(json.dumps({"type": "chat.request", "id": "big", "model": "gpt-4o", "messages": MESSAGES}))
        assert (await frame(ws))["type"] == "chat.delta"
        # Now the client reads nothing: the server's sends stall, so does the stream, and 0.5 s later
        # the server gives up.
        streaming = await stalled_connection(openai.port)
        [row] = await rows_when(1)
        assert (row.status, row.error_code) == ("canceled", "client_disconnected")
        assert 0 < row.output_tokens < 512 * 16_384 / 4  # billed for what was produced, not the whole answer
        assert time.monotonic() - started < WAIT_S

        received = 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # reading again: what the buffers held, then the close
                await asyncio.wait_for(ws.recv(), WAIT_S)
                received += 1

    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4408, "the client stopped reading")
    assert received < 512  # the stream stopped; it was not buffered whole
    assert await until_closed(openai.port, streaming)  # the upstream call was closed too
    await asyncio.sleep(0.2)
    assert len(await rows()) == 1


async def test_a_client_that_drops_the_connection_while_a_send_waits_is_billed_canceled(
    gateway, live_key, fake_providers, settings
):
    settings.WS_SEND_TIMEOUT_S = 10.0  # the send is still waiting when the connection goes
    openai = fake_providers["openai"]
    openai.reply(" ".join(["x" * 16_384] * 512))

    sock = small_receive_buffer_socket(gateway)
    options: dict[str, Any] = {"sock": sock, "max_queue": 2, "max_size": None, "compression": None}
    async with chat_socket(gateway, live_key, **options) as ws:
        await ws.send(json.dumps({"type": "chat.request", "id": "big", "model": "gpt-4o", "messages": MESSAGES}))
        assert (await frame(ws))["type"] == "chat.delta"
        streaming = await stalled_connection(openai.port)
        ws.transport.abort()  # gone without a close frame, as a browser tab killed or a network lost

    [row] = await rows_when(1)
    assert (row.status, row.error_code) == ("canceled", "client_disconnected")  # not a failure of Pulse's
    assert row.output_tokens > 0
    assert await until_closed(openai.port, streaming)
    await asyncio.sleep(0.2)
    assert len(await rows()) == 1


async def until_closed(port: int, local_port: int, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while local_port in connections_to(port):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
