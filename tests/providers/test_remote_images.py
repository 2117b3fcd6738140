"""Fetching images in chat by URL: the limits, and no requests into Pulse's own network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from django.test import override_settings

from core.shutdown import run_shutdown_hooks
from providers.clients.base import ChatImage
from providers.clients.remote_images import ImageFetchError, PublicOnlyResolver, checked_url, fetch_image
from tests.fakes.images import PNG, ImageHost


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    with ImageHost.start() as server:
        yield server


@pytest.fixture(autouse=True)
async def _close_loop_resources() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own fetch session: close it."""
    yield
    await run_shutdown_hooks()


def url(host: ImageHost, name: str) -> ChatImage:
    return ChatImage(url=host.url(name))


@pytest.mark.asyncio
@override_settings(CHAT_IMAGE_FETCH_PRIVATE=True)
async def test_fetches_the_bytes_and_type_and_follows_a_redirect(host: ImageHost) -> None:
    image = await fetch_image(url(host, "hop.png"))
    assert (image.content_type, image.data) == ("image/png", PNG)


@pytest.mark.asyncio
@override_settings(CHAT_IMAGE_FETCH_PRIVATE=True)
async def test_a_cookie_an_image_host_sets_is_never_sent_back(host: ImageHost) -> None:
    # Every user's image URLs share one session: a cookie from one user's fetch must not ride on the
    # next. By host name, since aiohttp keeps no cookie for an IP address.
    by_name = host.base_url.replace("127.0.0.1", "localhost")
    await fetch_image(ChatImage(url=f"{by_name}/cookie.png"))
    await fetch_image(ChatImage(url=f"{by_name}/cat.png"))
    fetched = host.last_request
    assert fetched is not None and fetched.path == "/cat.png" and "cookie" not in fetched.headers


@pytest.mark.asyncio
async def test_refuses_loopback_by_default(host: ImageHost) -> None:
    with pytest.raises(ImageFetchError, match="private or reserved"):
        await fetch_image(url(host, "cat.png"))


@pytest.mark.asyncio
async def test_resolver_drops_private_answers() -> None:
    with pytest.raises(ImageFetchError, match="resolves to a private"):
        await PublicOnlyResolver().resolve("localhost", 80)


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.1/x.png",
        "http://[::1]/x.png",
        "http://169.254.169.254/latest",
        "http://10.1.2.3/a",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
    ],
)
def test_refuses_urls_into_private_networks_and_other_schemes(raw: str) -> None:
    with pytest.raises(ImageFetchError):
        checked_url(raw)


def test_public_addresses_pass() -> None:
    assert checked_url("https://93.184.215.14/cat.png").host == "93.184.215.14"


@pytest.mark.asyncio
@override_settings(CHAT_IMAGE_FETCH_PRIVATE=True, CHAT_IMAGE_MAX_BYTES=1000)
async def test_limits_size_type_and_status(host: ImageHost) -> None:
    with pytest.raises(ImageFetchError, match="larger than 1000 bytes"):
        await fetch_image(url(host, "big.png"))
    with pytest.raises(ImageFetchError, match="did not give an image"):
        await fetch_image(url(host, "page.html"))
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        await fetch_image(url(host, "missing.png"))


@pytest.mark.asyncio
@override_settings(CHAT_IMAGE_FETCH_PRIVATE=True, CHAT_IMAGE_FETCH_TIMEOUT_S=0.2)
async def test_limits_time(host: ImageHost) -> None:
    with pytest.raises(ImageFetchError, match="within 0.2 s"):
        await fetch_image(url(host, "slow.png"))


@pytest.mark.asyncio
async def test_an_image_with_bytes_is_not_fetched() -> None:
    image = ChatImage(content_type="image/png", data=PNG)
    assert await fetch_image(image) is image
