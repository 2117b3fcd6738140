"""A plain web server with images on it: what a chat request's image URL points at."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .openai import tiny_png
from .server import FakeProvider, Fault, Received

PNG = tiny_png()


class ImageHost(FakeProvider):
    """Serves /cat.png, a big PNG, an HTML page, a slow PNG, a redirect to /cat.png and a PNG that sets a
    cookie; 404 otherwise."""

    provider = "images"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/{name}", self.endpoint(self._serve))]

    def auth_error(self, received: Received) -> web.Response | None:
        return None  # anyone may fetch

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    async def _serve(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
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
        if name == "cookie.png":
            return web.Response(body=PNG, content_type="image/png", headers={"Set-Cookie": "visitor=first-user"})
        raise web.HTTPNotFound()
