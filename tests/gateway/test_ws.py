"""WS /ws/v1/chat through Channels' WebsocketCommunicator on the real ASGI application: the protocol
(deltas, done, errors, cancel, several streams on one socket), credentials on the handshake, limits
and moderation over the socket, metering however a stream ends, and the user's own job updates.

Providers are the fake servers (real HTTP); the socket is in-process. tests/gateway/test_ws_live.py
drives the same endpoint through a real server with a real WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]
from channels_redis.utils import create_pool  # type: ignore[import-untyped]
from django.conf import settings
from django.db import connections
from django.test import Client

from billing.models import UsageRecord, UserLimits
from core.shutdown import run_shutdown_hooks
from gateway.jobs import lifecycle
from gateway.jobs.queue import owner_group
from gateway.models import BlockedTerm, Job
from gateway.moderation.hooks.blocklist import reset_blocklist
from gateway.ws import PATH, allowed_origin
from pulse.asgi import application
from pulse.config import redis_channel_layer
from tests.helpers import MESSAGES

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 3.0  # the longest any frame may take here: every test is a few hundred milliseconds


@pytest.fixture(autouse=True)
async def _close_loop_resources():
    """Each async test runs on its own event loop: close what it pooled there (the aiohttp session,
    the PostgreSQL and Redis pools), as a worker does at shutdown. (channels-redis closes its own
    pool for the loop when the loop closes.)"""
    yield
    await run_shutdown_hooks()
    await sync_to_async(connections.close_all)()


# --- the socket ---------------------------------------------------------------------------------
class Socket:
    """One client socket on the application."""

    def __init__(self, headers: list[tuple[bytes, bytes]]):
        self.communicator = WebsocketCommunicator(application, PATH, headers=headers)

    async def send(self, **frame: Any) -> None:
        await self.communicator.send_json_to(frame)

    async def request(self, frame_id: str, model: str = "gpt-4o", **body: Any) -> None:
        await self.send(type="chat.request", id=frame_id, model=model, messages=body.pop("messages", MESSAGES), **body)

    async def frame(self) -> dict[str, Any]:
        return await self.communicator.receive_json_from(timeout=WAIT_S)

    async def until_end(self, *frame_ids: str) -> list[dict[str, Any]]:
        """Frames until every one of these ids has ended (chat.done or error), in order."""
        frames, open_ids = [], set(frame_ids)
        while open_ids:
            frame = await self.frame()
            frames.append(frame)
            if frame["type"] in ("chat.done", "error"):
                open_ids.discard(frame.get("id"))
        return frames

    async def closed(self) -> dict[str, Any]:
        """The close the server sent (the communicator sees it as a websocket.close message)."""
        message = await self.communicator.receive_output(timeout=WAIT_S)
        assert message["type"] == "websocket.close", message
        return message

    async def refused(self) -> dict[str, Any]:
        """Connect, and the close the server sends at once; a chat.request after it goes unanswered."""
        connected, _ = await self.communicator.connect(timeout=WAIT_S)
        assert connected  # accepted, so that the client can read why it is closed
        closed = await self.closed()
        await self.request("s1")
        # (The wait also keeps these tests fast on Redis: a consumer whose channels-redis receive is
        # canceled in its first milliseconds was seen to take that receive's whole 5 s BZPOPMIN to end.)
        assert await self.nothing()
        await self.communicator.disconnect(timeout=WAIT_S)
        return closed

    async def nothing(self, seconds: float = 0.2) -> bool:
        return await self.communicator.receive_nothing(timeout=seconds)


@contextlib.asynccontextmanager
async def chat_socket(key: str | None = None, *headers: tuple[bytes, bytes]) -> AsyncIterator[Socket]:
    sent = list(headers) + ([(b"authorization", f"Bearer {key}".encode())] if key else [])
    socket = Socket(sent)
    connected, _ = await socket.communicator.connect(timeout=WAIT_S)
    assert connected  # accepted: a refused credential is a close frame right after, with its reason
    try:
        yield socket
    finally:
        await socket.communicator.disconnect(timeout=WAIT_S)


def deltas(frames: list[dict[str, Any]], frame_id: str) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "chat.delta" and f["id"] == frame_id)


def last(frames: list[dict[str, Any]], frame_id: str) -> dict[str, Any]:
    return [f for f in frames if f.get("id") == frame_id][-1]


@database_sync_to_async
def rows() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("created_at"))


async def one_row(timeout: float = WAIT_S) -> UsageRecord:
    """The one ledger row, once written (a canceled stream's comes as the stream unwinds)."""
    deadline = time.monotonic() + timeout
    while not (found := await rows()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    [row] = found
    return row


def provider_calls(fake) -> int:
    return len([r for r in fake.requests if "moderations" not in r.path])


def connections_to(port: int) -> set[int]:
    """The local ports of established TCP connections to this loopback port (Linux /proc): the
    gateway's connections to a fake provider, pooled ones from earlier requests included."""
    with open("/proc/net/tcp") as table:
        entries = [line.split() for line in list(table)[1:]]
    return {int(e[1].split(":")[1], 16) for e in entries if e[3] == "01" and int(e[2].split(":")[1], 16) == port}


async def until(condition, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# --- chat ---------------------------------------------------------------------------------------
async def test_a_stream_is_deltas_then_done_with_usage_and_cost_and_one_ledger_row(live_key, fake_providers):
    fake_providers["anthropic"].reply("Hi there you", input_tokens=1000, output_tokens=2000)

    async with chat_socket(live_key) as socket:
        await socket.request("s1", model="claude-sonnet-4-5")
        frames = await socket.until_end("s1")

    assert [f["type"] for f in frames] == ["chat.delta"] * 3 + ["chat.done"]
    assert deltas(frames, "s1") == "Hi there you"
    done = frames[-1]
    assert (done["id"], done["model"], done["provider"], done["finish_reason"]) == (
        "s1",
        "claude-sonnet-4-5",
        "anthropic",
        "stop",
    )
    assert done["usage"]["input_tokens"] == 1000 and done["usage"]["output_tokens"] == 2000
    assert done["usage"]["total_tokens"] == 3000
    [row] = await rows()
    assert row.request_id == done["request_id"] and row.endpoint == PATH
    assert (row.status, row.provider, row.input_tokens, row.output_tokens) == ("succeeded", "anthropic", 1000, 2000)
    assert row.cost_usd == Decimal("0.033") == Decimal(done["cost_usd"])  # 1000 * $3/M + 2000 * $15/M
    assert row.api_key_id is not None


async def test_errors_are_frames_in_the_http_envelope_and_the_socket_stays_open(live_key, fake_providers):
    async with chat_socket(live_key) as socket:
        await socket.request("a", model="no-such-model")
        await socket.send(type="chat.request", id="b", model="gpt-4o")  # no messages
        await socket.request("c", temperature="hot")
        await socket.send(type="chat.request", model="gpt-4o", messages=MESSAGES)  # no id
        await socket.send(type="chat.dance", id="d")
        await socket.communicator.send_to(text_data="{not json")
        await socket.communicator.send_to(bytes_data=b"\x00\x01")
        frames = [await socket.frame() for _ in range(7)]
        by_id = {f["id"]: f for f in frames if f["id"]}

        assert all(f["type"] == "error" for f in frames)
        assert by_id["a"]["error"] == {
            "type": "not_found_error",  # as the 404 over HTTP
            "code": "model_not_found",
            "message": "The model 'no-such-model' does not exist or is not available.",
            "param": "model",
        }
        assert by_id["b"]["error"]["param"] == "messages"
        assert by_id["c"]["error"]["param"] == "temperature"
        assert by_id["d"]["error"]["param"] == "type"
        assert sorted(f["error"]["param"] for f in frames if not f["id"]) == ["id", "type", "type"]

        await socket.request("e")  # still serving
        assert (await socket.until_end("e"))[-1]["type"] == "chat.done"
    assert provider_calls(fake_providers["openai"]) == 1
    assert [row.status for row in await rows()] == ["succeeded"]  # refused before the hold: no row


async def test_cancel_stops_one_stream_bills_what_it_produced_and_closes_the_upstream_call(live_key, fake_providers):
    openai = fake_providers["openai"]
    openai.reply("one two three four five six")
    openai.stall_stream(after_chunks=2, seconds=2.0)

    pooled = connections_to(openai.port)
    async with chat_socket(live_key) as socket:
        await socket.request("s1")
        frames = [await socket.frame(), await socket.frame()]
        assert deltas(frames, "s1") == "one two"
        [streaming] = connections_to(openai.port) - pooled  # the stalled stream's response is open

        await socket.send(type="chat.cancel", id="s1")
        done = await socket.frame()
        assert await socket.nothing()  # nothing more from the stalled provider

        assert (done["type"], done["id"], done["finish_reason"], done["provider"]) == (
            "chat.done",
            "s1",
            "canceled",
            "openai",
        )
        row = await one_row()
        assert (row.status, row.error_code, row.usage_estimated) == ("canceled", "client_disconnected", True)
        assert row.output_tokens == 2 == done["usage"]["output_tokens"]  # "one two" was produced
        assert row.cost_usd == Decimal(done["cost_usd"]) > 0 and row.request_id == done["request_id"]
        assert await until(lambda: streaming not in connections_to(openai.port))  # closed, not left to finish

        await socket.request("s1")  # the id is free again
        assert (await socket.until_end("s1"))[-1]["finish_reason"] == "stop"
    assert [row.status for row in await rows()] == ["canceled", "succeeded"]


async def test_two_streams_share_one_socket_interleaved_each_with_its_own_usage(live_key, fake_providers):
    fake_providers["openai"].reply("slow one two three", input_tokens=11, output_tokens=4)
    fake_providers["openai"].stall_stream(after_chunks=1, seconds=0.3)
    fake_providers["anthropic"].reply("fast reply", input_tokens=22, output_tokens=2)

    async with chat_socket(live_key) as socket:
        await socket.request("slow", model="gpt-4o")
        assert (await socket.frame())["delta"] == "slow"
        await socket.request("fast", model="claude-sonnet-4-5")
        frames = await socket.until_end("slow", "fast")

    order = [(f["type"], f["id"]) for f in frames]
    assert order.index(("chat.done", "fast")) < order.index(("chat.done", "slow"))  # interleaved
    assert deltas(frames, "fast") == "fast reply" and deltas(frames, "slow") == " one two three"
    slow, fast = last(frames, "slow"), last(frames, "fast")
    assert (slow["provider"], slow["usage"]["input_tokens"], slow["usage"]["output_tokens"]) == ("openai", 11, 4)
    assert (fast["provider"], fast["usage"]["input_tokens"], fast["usage"]["output_tokens"]) == ("anthropic", 22, 2)
    billed = {row.request_id: row for row in await rows()}
    assert set(billed) == {slow["request_id"], fast["request_id"]}
    assert billed[slow["request_id"]].cost_usd == Decimal(slow["cost_usd"])
    assert billed[fast["request_id"]].cost_usd == Decimal(fast["cost_usd"])


async def test_a_running_id_is_refused_and_streams_per_socket_are_capped(live_key, fake_providers, settings):
    settings.WS_MAX_STREAMS = 2
    fake_providers["openai"].stall_stream(after_chunks=1, seconds=0.3, times=2)

    async with chat_socket(live_key) as socket:
        await socket.request("a")
        await socket.request("a")
        await socket.request("b")
        await socket.request("c")
        frames = [await socket.frame() for _ in range(2)]  # the two refusals come at once
        frames += await socket.until_end("a", "b")

    errors = [f for f in frames if f["type"] == "error"]
    assert [(f["id"], f["error"]["code"], f["error"]["param"]) for f in errors] == [
        ("a", "invalid_request", "id"),
        ("c", "too_many_streams", None),
    ]
    assert sorted(f["id"] for f in frames if f["type"] == "chat.done") == ["a", "b"]
    assert provider_calls(fake_providers["openai"]) == 2


async def test_a_provider_breaking_off_midway_ends_the_stream_with_an_error_frame(live_key, fake_providers):
    fake_providers["openai"].reply("one two three four")
    fake_providers["openai"].stream_error(after_chunks=2)

    async with chat_socket(live_key) as socket:
        await socket.request("s1")
        frames = await socket.until_end("s1")

    assert deltas(frames, "s1") == "one two"
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "stream_interrupted"
    row = await one_row()
    assert (row.status, row.error_code, row.output_tokens) == ("failed", "stream_interrupted", 2)


async def test_fallback_before_the_first_delta_works_as_over_http(live_key, chain):
    chain["openai"].fail(503)
    chain["anthropic"].reply("from the fallback")

    async with chat_socket(live_key) as socket:
        await socket.request("s1", model="gpt-4o")
        frames = await socket.until_end("s1")

    assert deltas(frames, "s1") == "from the fallback" and frames[-1]["provider"] == "anthropic"
    row = await one_row()
    assert (row.status, row.provider) == ("succeeded", "anthropic")
    assert [attempt["provider"] for attempt in row.attempts] == ["openai"]


# --- who may use the socket ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([(b"authorization", b"Bearer pk-not-a-real-key")], "invalid_api_key"),
        ([(b"x-api-key", b"pk-not-a-real-key")], "invalid_api_key"),
        ([], "missing_api_key"),
    ],
)
async def test_a_bad_or_missing_key_is_closed_4401_with_a_reason_before_any_work(fake_providers, headers, code):
    closed = await Socket(headers).refused()
    assert closed["code"] == 4401 and closed["reason"].startswith(f"{code}: ")
    assert sum(provider_calls(fake) for fake in fake_providers.values()) == 0
    assert await rows() == []


@pytest.fixture
def signed_in(django_user_model, transactional_db) -> tuple[Any, bytes]:
    """A user signed in to the web pages: (the user, the Cookie header their browser sends)."""
    user = django_user_model.objects.create_user("browser-user", password="correct horse battery staple")
    client = Client()
    client.force_login(user)
    return user, f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def test_a_signed_in_session_from_an_allowed_origin_streams_without_a_key(signed_in, fake_providers):
    user, cookie = signed_in

    async with chat_socket(None, (b"cookie", cookie), (b"origin", b"http://localhost:8081")) as socket:
        await socket.request("s1")
        frames = await socket.until_end("s1")

    assert frames[-1]["type"] == "chat.done"
    row = await one_row()
    assert (row.user_id, row.api_key_id, row.status) == (user.pk, None, "succeeded")


@pytest.mark.parametrize("origin", [b"https://evil.example", b"null", b""])
async def test_a_signed_in_session_from_a_foreign_or_no_origin_is_closed_4403(signed_in, fake_providers, origin):
    _, cookie = signed_in
    headers = [(b"cookie", cookie)] + ([(b"origin", origin)] if origin else [])
    closed = await Socket(headers).refused()
    assert closed["code"] == 4403 and closed["reason"].startswith("origin_not_allowed: ")
    assert provider_calls(fake_providers["openai"]) == 0


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:8081", True),
        ("https://LOCALHOST", True),
        ("http://[::1]:8081", True),  # ALLOWED_HOSTS writes it "[::1]"
        ("http://127.0.0.1", True),
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.nip.io", False),
        ("null", False),  # a sandboxed frame or a file
        ("http://[not-an-address", False),
        ("", False),
    ],
)
def test_the_origin_of_a_signed_in_page_must_be_one_of_the_allowed_hosts(origin, allowed):
    assert allowed_origin(origin) is allowed


async def test_a_stale_session_cookie_is_no_credential(fake_providers):
    closed = await Socket([(b"cookie", b"sessionid=not-a-session"), (b"origin", b"http://localhost")]).refused()
    assert closed["code"] == 4401 and closed["reason"].startswith("missing_api_key: ")


# --- limits and moderation ----------------------------------------------------------------------
async def test_the_rate_limit_applies_to_each_request_on_the_socket(
    live_key, fake_providers, settings, django_user_model
):
    settings.RATE_LIMIT = (100, 60.0)
    user = await django_user_model.objects.aget(username="live-user")
    await UserLimits.objects.acreate(user=user, rate_limit_requests=2, rate_limit_window_s=60)

    async with chat_socket(live_key) as socket:
        ends = []
        for frame_id in ("1", "2", "3"):
            await socket.request(frame_id)
            ends.append((await socket.until_end(frame_id))[-1])

    assert [f["type"] for f in ends] == ["chat.done", "chat.done", "error"]
    refused = ends[-1]["error"]
    assert (refused["type"], refused["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert provider_calls(fake_providers["openai"]) == 2
    assert len(await rows()) == 2  # the refused request writes no row


async def test_a_blocked_prompt_is_an_error_frame_and_never_reaches_a_provider(live_key, fake_providers):
    reset_blocklist()
    await BlockedTerm.objects.acreate(pattern="kill", category="violence")
    try:
        async with chat_socket(live_key) as socket:
            await socket.request("s1", messages=[{"role": "user", "content": "how do I kill the cat?"}])
            [frame] = await socket.until_end("s1")
    finally:
        reset_blocklist()

    assert frame["type"] == "error" and frame["id"] == "s1"
    assert frame["error"]["code"] == "content_policy_violation" and frame["error"]["param"] == "messages.0.content"
    assert sum(provider_calls(fake) for fake in fake_providers.values()) == 0
    row = await one_row()
    assert (row.status, row.cost_usd) == ("blocked", 0)


# --- leaving midway -----------------------------------------------------------------------------
async def test_a_client_leaving_midway_is_one_canceled_row_and_the_upstream_is_closed(live_key, fake_providers):
    openai = fake_providers["openai"]
    openai.reply("one two three four five six")
    openai.stall_stream(after_chunks=2, seconds=2.0)

    pooled = connections_to(openai.port)
    async with chat_socket(live_key) as socket:
        await socket.request("s1")
        assert deltas([await socket.frame(), await socket.frame()], "s1") == "one two"
        [streaming] = connections_to(openai.port) - pooled
    # The context left: the client disconnected while the provider was stalled.

    row = await one_row()
    assert (row.status, row.error_code, row.output_tokens) == ("canceled", "client_disconnected", 2)
    assert await until(lambda: streaming not in connections_to(openai.port))
    await asyncio.sleep(0.1)
    assert len(await rows()) == 1


async def test_leaving_with_two_streams_open_bills_each_once(live_key, fake_providers):
    fake_providers["openai"].stall_stream(after_chunks=1, seconds=2.0)
    fake_providers["anthropic"].delay(2.0)  # not even a first delta yet

    async with chat_socket(live_key) as socket:
        await socket.request("a", model="gpt-4o")
        await socket.request("b", model="claude-sonnet-4-5")
        assert (await socket.frame())["id"] == "a"
        await until(lambda: provider_calls(fake_providers["anthropic"]) == 1)

    opened, waiting = sorted(await rows(), key=lambda row: row.provider != "openai")
    assert (opened.provider, opened.status, opened.error_code) == ("openai", "canceled", "client_disconnected")
    assert opened.output_tokens > 0 and opened.cost_usd > 0  # "Hello" was produced
    assert (waiting.status, waiting.output_tokens, waiting.cost_usd) == ("canceled", 0, 0)  # nothing yet


# --- the user's media jobs ----------------------------------------------------------------------
def new_job(user_id: int, **fields: Any) -> Job:
    return Job.objects.create(user_id=user_id, kind="image", model="nano-banana", request={}, **fields)


async def test_a_subscriber_gets_its_own_jobs_changing_and_never_anyone_elses(live_key, django_user_model):
    owner = await django_user_model.objects.aget(username="live-user")
    other = await database_sync_to_async(django_user_model.objects.create_user)("someone-else")
    mine = await database_sync_to_async(new_job)(owner.pk)
    theirs = await database_sync_to_async(new_job)(other.pk)

    async with chat_socket(live_key) as socket:
        await socket.send(type="jobs.subscribe", id="sub")
        assert await socket.frame() == {"type": "jobs.subscribed", "id": "sub"}

        # Their job changes first (a forged update for it included): nothing arrives.
        await database_sync_to_async(lifecycle.cancel)(theirs)
        await deliver_to_group(other.pk, theirs)
        await deliver_to_group(owner.pk, theirs)  # a message naming their job in my group
        assert await socket.nothing(0.3)

        await database_sync_to_async(lifecycle.cancel)(mine)
        update = await socket.frame()

    assert update["type"] == "job.update"
    assert (update["job"]["id"], update["job"]["status"]) == (str(mine.pk), "canceled")
    assert update["job"]["kind"] == "image" and update["job"]["model"] == "nano-banana"


async def deliver_to_group(user_id: int, job: Job) -> None:
    await get_channel_layer().group_send(owner_group(user_id), {"type": "job.update", "job": {"id": str(job.pk)}})


@pytest.fixture
def cross_process_layer(settings, request) -> None:
    """A channel layer that carries a worker's news to the web process: Redis. The in-memory layer
    only serves one process (and one event loop), so the embedded run borrows a local Redis here,
    and is skipped without one."""
    if not settings.REDIS_URL:
        url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # A socket timeout longer than channels-redis's 5 s blocking receive (see the last test).
                "CONFIG": {"hosts": [{"address": url, "socket_timeout": 10}], "prefix": "pulse:test:channels"},
            }
        }


async def test_an_image_requested_on_the_socket_reports_its_progress(
    live_key, cross_process_layer, job_worker, fake_providers
):
    async with chat_socket(live_key) as socket:
        await socket.send(type="jobs.subscribe", id="sub")
        assert (await socket.frame())["type"] == "jobs.subscribed"
        await socket.send(type="image.request", id="img", model="nano-banana", prompt="Beautiful sunset", count=1)
        created = await socket.frame()
        assert (created["type"], created["id"], created["job"]["status"]) == ("job.created", "img", "queued")

        statuses = []
        while not statuses or statuses[-1] not in ("succeeded", "failed", "canceled"):
            update = await socket.frame()
            assert update["type"] == "job.update" and update["job"]["id"] == created["job"]["id"]
            statuses.append(update["job"]["status"])

    assert statuses == ["running", "succeeded"]
    assert update["job"]["usage"] == {"images": 1} and len(update["job"]["outputs"]) == 1
    row = await one_row()
    assert (row.request_id, row.status, row.images) == (created["job"]["id"], "succeeded", 1)


async def test_an_image_request_refused_is_an_error_frame(live_key, fake_providers):
    async with chat_socket(live_key) as socket:
        await socket.send(type="image.request", id="img", model="nano-banana", prompt="x", count=99)
        frame = await socket.frame()
    assert frame["type"] == "error" and frame["id"] == "img" and frame["error"]["param"] == "count"
    assert not await Job.objects.aexists()


# --- the channel layer in production ------------------------------------------------------------
def test_the_channel_layer_waits_for_redis_longer_than_its_blocking_receive():
    """channels-redis receives with BZPOPMIN, which blocks up to brpop_timeout seconds. A client socket
    timeout no longer than that ends every socket idle for ~5 s with redis TimeoutError (close 1011), and
    makes each consumer linger up to 5 s after its client has left. The layer production configures,
    whichever layer this run uses."""
    conf = redis_channel_layer("redis://127.0.0.1:6379/0")
    layer = RedisChannelLayer(**conf["CONFIG"])
    for host in layer.hosts:
        pool = create_pool(host)
        timeout = pool.connection_class(**pool.connection_kwargs).socket_timeout
        assert timeout is None or timeout > layer.brpop_timeout + 1
