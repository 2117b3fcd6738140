"""The suite is hermetic: pytest-socket (addopts in pyproject.toml) lets a test connect to loopback only."""

import asyncio
import socket
import time

import httpx
import pytest
from pytest_socket import SocketConnectBlockedError

TEST_NET = "203.0.113.1"  # TEST-NET-3 (RFC 5737): for documentation, routed nowhere

pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect")


def test_a_connection_off_the_machine_is_refused_before_anything_is_sent():
    started = time.monotonic()
    with pytest.raises(SocketConnectBlockedError, match=TEST_NET):
        socket.create_connection((TEST_NET, 443), timeout=5)
    assert time.monotonic() - started < 1  # refused by the guard, not a connect timeout


async def test_http_clients_and_the_event_loop_are_refused_too():
    with pytest.raises(SocketConnectBlockedError):
        httpx.get(f"http://{TEST_NET}/", timeout=5)
    with pytest.raises(SocketConnectBlockedError):
        await asyncio.open_connection(TEST_NET, 443)


def test_loopback_is_allowed():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
