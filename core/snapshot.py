"""A per-worker copy of data derived from the database, kept fresh by a version number.

Used for the routing table and the moderation blocklist: each worker keeps the
value in memory and checks a version key in the shared cache at most every
PULSE_LOCAL_CACHE_SECONDS; an admin edit bumps the version, so the change reaches every
worker within that interval and a request reads no database row.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

from core.cache import cache

logger = logging.getLogger(__name__)
T = TypeVar("T")
_NEVER = float("-inf")
_MISSING: object = object()  # not loaded yet (None is a value a loader may return)


class VersionedSnapshot(Generic[T]):
    def __init__(self, version_key: str, load: Callable[[], T]):
        self.version_key = version_key
        self._load = load
        self.reset()

    def reset(self) -> None:
        """Forget the copy (tests, and settings that change what load() builds)."""
        self._value: T = _MISSING  # type: ignore[assignment]
        self._version: str | None = None
        self._checked_at = _NEVER

    def bump(self) -> None:
        """Tell every worker to reload (call after the change commits)."""
        cache.set(self.version_key, uuid.uuid4().hex, None)
        self._checked_at = _NEVER

    def get(self) -> T:
        return self._refresh() if self._needs_check() else self._value

    async def aget(self) -> T:
        if self._needs_check():
            value: T = await database_sync_to_async(self._refresh)()  # channels has no type hints
            return value
        return self._value

    def _needs_check(self) -> bool:
        now = time.monotonic()
        if self._value is not _MISSING and now - self._checked_at < settings.PULSE_LOCAL_CACHE_SECONDS:
            return False
        self._checked_at = now  # set before the check, so concurrent requests do not all reload
        return True

    def _shared_version(self) -> str | None:
        try:
            version: str | None = cache.get(self.version_key)
            if version is None:
                cache.add(self.version_key, uuid.uuid4().hex, None)
                version = cache.get(self.version_key)
            return version
        except Exception:  # no shared cache: the database stays the truth, read once per interval
            logger.warning("shared cache unavailable for %s", self.version_key, exc_info=True)
            return None

    def _refresh(self) -> T:
        version = self._shared_version()
        if self._value is not _MISSING and version is not None and version == self._version:
            return self._value
        try:
            value = self._load()
        except Exception:
            if self._value is _MISSING:
                raise
            logger.warning("reloading %s failed; keeping the previous copy", self.version_key, exc_info=True)
            return self._value
        self._value, self._version = value, version
        return value
