"""One value per running event loop: connection pools belong to the loop that opened them.

The aiohttp session, the async Redis client and the async PostgreSQL pool each live
here. A worker has one loop; tests and benchmarks start many, so entries of loops that
have closed are dropped whenever a new entry is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T], *, stale: Callable[[T], bool] = lambda value: False):
        self._make = make
        self._stale = stale
        self._values: dict[asyncio.AbstractEventLoop, T] = {}

    def get(self) -> T:
        """This loop's value, made on first use (or again when the old one went stale)."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None or self._stale(value):
            for closed in [other for other in self._values if other.is_closed()]:
                del self._values[closed]
            value = self._values[loop] = self._make()
        return value

    def pop(self) -> T | None:
        """Forget this loop's value and return it, for the caller to close."""
        return self._values.pop(asyncio.get_running_loop(), None)
