"""Server-Sent Events from an aiohttp response, as (event, data) pairs.

Events end at a blank line, whether lines end in \\n or \\r\\n (Gemini sends
\\r\\n\\r\\n). Comment lines (':') are skipped; several data lines are joined by \\n; an event cut off
before its blank line is dropped, as the SSE specification says.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp


async def sse_events(response: aiohttp.ClientResponse) -> AsyncGenerator[tuple[str | None, str]]:
    event: str | None = None
    data: list[str] = []
    async for raw_line in response.content:
        line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
