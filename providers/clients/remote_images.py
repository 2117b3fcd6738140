"""Images in chat given by URL, fetched by Pulse for the providers that need the bytes (Gemini takes
no arbitrary URLs; OpenAI and Anthropic fetch URLs themselves, so theirs are passed on untouched).

A URL from a client is a request Pulse makes on the client's behalf from inside its network, so the
fetch is fenced: http(s) only, a size cap read as the body arrives, a total time limit, redirects
followed by hand (each hop checked), and no loopback, private, link-local or otherwise reserved
address, checked on the address actually connected to (a resolver that filters what DNS answers, so
a name that resolves to 127.0.0.1 or rebinds between checks is refused too).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from yarl import URL

from core.loops import PerLoop
from core.shutdown import on_shutdown
from providers.clients.base import ChatImage

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "image/heif"})
MAX_REDIRECTS = 3


class ImageFetchError(ValueError):
    """The URL may not be fetched, or did not give an image within the limits. The message says why."""


def public_address(host: str) -> bool:
    """Whether an IP address is one the open internet routes to."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def allowed_address(host: str) -> bool:
    return bool(settings.CHAT_IMAGE_FETCH_PRIVATE) or public_address(host)


class PublicOnlyResolver(AbstractResolver):
    """DNS answers with every non-public address removed: the connection can only go where it may."""

    def __init__(self) -> None:
        self._resolver = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        allowed = [answer for answer in answers if allowed_address(answer["host"])]
        if not allowed:
            raise ImageFetchError(f"the image host {host!r} resolves to a private or reserved address")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), limit=100, ttl_dns_cache=None)
    # No cookie jar: every user's image URLs share this session, and a cookie one user's fetch was given
    # must not go out with another's.
    return aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar())


_sessions: PerLoop[aiohttp.ClientSession] = PerLoop(_new_session, stale=lambda session: session.closed)


@on_shutdown
async def close_fetch_session() -> None:
    if (session := _sessions.pop()) is not None:
        await session.close()


def checked_url(raw: str) -> URL:
    """The URL, if it is one Pulse may fetch: http(s), a host, and not a literal private address (the
    resolver is not asked about literal addresses)."""
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ImageFetchError("an image URL must be an http(s) URL with a host")
    try:
        literal = ipaddress.ip_address(url.host)
    except ValueError:
        return url
    if not allowed_address(str(literal)):
        raise ImageFetchError(f"the image URL points at a private or reserved address ({url.host})")
    return url


async def fetch_image(image: ChatImage) -> ChatImage:
    """The image with its bytes and content type; an image that has them already is returned as is."""
    if image.data is not None or image.url is None:
        return image
    timeout = aiohttp.ClientTimeout(total=settings.CHAT_IMAGE_FETCH_TIMEOUT_S)
    try:
        content_type, data = await _follow(checked_url(image.url), timeout)
    except TimeoutError:
        raise ImageFetchError(
            f"the image at {image.url} did not arrive within {settings.CHAT_IMAGE_FETCH_TIMEOUT_S:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise ImageFetchError(f"the image at {image.url} could not be fetched ({type(exc).__name__})") from None
    return replace(image, content_type=content_type, data=data)


async def _follow(url: URL, timeout: aiohttp.ClientTimeout) -> tuple[str, bytes]:
    session = _sessions.get()
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(url, timeout=timeout, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = checked_url(str(url.join(URL(response.headers["Location"]))))
                continue
            if response.status != 200:
                raise ImageFetchError(f"fetching the image at {url} answered HTTP {response.status}")
            return _content_type(response), await _read_capped(response)
    raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects fetching the image at {url}")


def _content_type(response: aiohttp.ClientResponse) -> str:
    content_type = response.content_type.lower()
    if content_type not in IMAGE_TYPES:
        raise ImageFetchError(f"the URL did not give an image (Content-Type {content_type or 'none'})")
    return content_type


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    limit: int = settings.CHAT_IMAGE_MAX_BYTES
    if (response.content_length or 0) > limit:
        raise ImageFetchError(f"the image is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ImageFetchError(f"the image is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
