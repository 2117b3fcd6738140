"""Fetching images in chat by URL: the limits, and no requests into Pulse's own network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from django.test import override_settings

from core.shutdown import run_shutdown_hooks
from providers.clients.base import ChatImage
from providers.clients.remote_images import ImageFetchError, PublicOnlyResolver, checked_url, fetch_image
from tests.fakes.openai import tiny_png
from tests.fakes.server import FakeProvider, Received

PNG = tiny_png()


class ImageHost(FakeProvider):
    """A web server with a few images on it (and some things that are not images)."""

    provider = "images"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/{name}", self.endpoint(self._serve))]

    def auth_error(self, received: Received) -> web.Response | None:
        return None

    async def _serve(self, request: web.Request, received: Received, fault: object) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "cat.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "big.png":
            return web.Response(body=PNG * 200, content_type="image/png")
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "slow.png":
            await asyncio.sleep(1)
            return web.Response(body=PNG, content_type="image/png")
        if name == "hop.png":
            raise web.HTTPFound("/cat.png")
        raise web.HTTPNotFound()


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
    return ChatImage(url=f"{host.base_url}/{name}")


@pytest.mark.asyncio
@override_settings(CHAT_IMAGE_FETCH_PRIVATE=True)
async def test_fetches_the_bytes_and_type_and_follows_a_redirect(host: ImageHost) -> None:
    image = await fetch_image(url(host, "hop.png"))
    assert (image.content_type, image.data) == ("image/png", PNG)


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
