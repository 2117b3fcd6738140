"""API-key authentication with a two-level cache, for DRF views and Channels consumers.

A request normally costs no database read: each worker keeps the keys it has
seen in memory for PULSE_LOCAL_CACHE_SECONDS, behind the shared Django cache
(Redis in production), behind the database. Revoking a key writes a tombstone
to the shared cache, so every worker stops accepting it within that interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from core.cache import cache
from core.caps import Caps
from core.principal import Principal
from gateway.errors import AUTH_CHALLENGE, AuthenticationError
from gateway.models import ApiKey, hash_api_key

logger = logging.getLogger(__name__)

SHARED_CACHE_SECONDS = 300
LAST_USED_RESOLUTION_SECONDS = 60
_LOCAL_CAPACITY = 50_000
_TOMBSTONE: dict = {}


_local: dict[str, tuple[float, Principal | None]] = {}
_last_recorded_use: dict[int, float] = {}
_refreshing: dict[str, asyncio.Future] = {}
_background: set[asyncio.Task] = set()


def raw_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `x-api-key: <key>` (lower-case header names)."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip() or None


def _shared_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


def _limits_of(user: Any) -> tuple[tuple[int, float] | None, Caps | None]:
    """The user's own rate limit and monthly caps (None, None: the defaults)."""
    limits = getattr(user, "limits", None)
    if limits is None:
        return None, None
    rate_limit = None
    if limits.rate_limit_requests and limits.rate_limit_window_s:
        rate_limit = (limits.rate_limit_requests, float(limits.rate_limit_window_s))
    return rate_limit, Caps.of(limits)


def _principal_from_db(key_hash: str) -> Principal | None:
    key = (
        ApiKey.objects.select_related("user", "user__limits")
        .filter(key_hash=key_hash, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if key is None:
        return None
    rate_limit, caps = _limits_of(key.user)
    return Principal(
        key.pk,
        key.key_hash,
        key.prefix,
        key.user_id,
        key.user.get_username(),
        key.user.is_staff,
        key.expires_at,
        rate_limit,
        caps,
    )


def session_principal(user_id: int) -> Principal | None:
    """A user signed in to the web pages (the playground), acting without an API key: the same limits
    and caps, and ledger rows with no key. None when the user is gone or inactive."""
    user = get_user_model().objects.select_related("limits").filter(pk=user_id, is_active=True).first()
    if user is None:
        return None
    rate_limit, caps = _limits_of(user)
    return Principal(None, "", "session", user.pk, user.get_username(), user.is_staff, None, rate_limit, caps)


def _refresh(key_hash: str) -> Principal | None:
    try:
        entry = cache.get(_shared_key(key_hash))
    except Exception:  # the shared cache being down must not lock every client out
        logger.warning("shared cache unavailable for API key lookup", exc_info=True)
        entry = None
    if entry is None:
        principal = _principal_from_db(key_hash)
        try:
            # add, not set: a concurrent revocation's tombstone must win over this read.
            cache.add(_shared_key(key_hash), principal.to_cache() if principal else _TOMBSTONE, SHARED_CACHE_SECONDS)
        except Exception:
            logger.warning("shared cache unavailable for API key store", exc_info=True)
    else:
        principal = Principal.from_cache(entry) if entry else None
    if len(_local) >= _LOCAL_CAPACITY:
        _local.clear()
    _local[key_hash] = (time.monotonic(), principal)
    return principal


def _fresh_local(key_hash: str) -> tuple[bool, Principal | None]:
    hit = _local.get(key_hash)
    if hit and time.monotonic() - hit[0] < settings.PULSE_LOCAL_CACHE_SECONDS:
        return True, hit[1]
    return False, None


def _checked(principal: Principal | None) -> Principal:
    if principal is None:
        raise AuthenticationError("Invalid or revoked API key.")
    if principal.is_expired():
        raise AuthenticationError("API key has expired.", code="expired_api_key")
    return principal


def authenticate_key(raw_key: str) -> Principal:
    """The principal for raw_key, or AuthenticationError. Sync: for DRF views and commands."""
    key_hash = hash_api_key(raw_key)
    found, principal = _fresh_local(key_hash)
    return _checked(principal if found else _refresh(key_hash))


async def aauthenticate_key(raw_key: str) -> Principal:
    """authenticate_key for the async hot path: no thread unless the local copy is stale, and then
    one refresh per key however many requests arrive meanwhile (a burst must not queue hundreds)."""
    key_hash = hash_api_key(raw_key)
    found, principal = _fresh_local(key_hash)
    if not found:
        refreshing = _refreshing.get(key_hash)
        if refreshing is None or refreshing.get_loop() is not asyncio.get_running_loop():
            refreshing = _refreshing[key_hash] = asyncio.ensure_future(database_sync_to_async(_refresh)(key_hash))
            refreshing.add_done_callback(lambda _: _refreshing.pop(key_hash, None))
        principal = await asyncio.shield(refreshing)
    return _checked(principal)


def forget_api_key(key_hash: str, *, revoked: bool) -> None:
    """After a committed change to a key or its owner: a revoked key gets a tombstone; any other
    change rewrites the shared entry from the database. Either way the entry is *set*, so a
    request that read the old row just before the commit cannot add its stale copy back."""
    _local.pop(key_hash, None)
    principal = None if revoked else _principal_from_db(key_hash)
    cache.set(_shared_key(key_hash), principal.to_cache() if principal else _TOMBSTONE, SHARED_CACHE_SECONDS)


def _key_use_due(principal: Principal) -> int | None:
    """The key whose last use is due a write (None: not yet, or a signed-in session without a key)."""
    key_id = principal.key_id
    if key_id is None:
        return None
    now = time.monotonic()
    last = _last_recorded_use.get(key_id)
    if last is not None and now - last < LAST_USED_RESOLUTION_SECONDS:
        return None
    _last_recorded_use[key_id] = now
    return key_id


def _write_last_used(key_id: int) -> None:
    ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())


def record_key_use(principal: Principal) -> None:
    """Update last_used_at, at most once a minute per key and worker (not a write per request)."""
    if (key_id := _key_use_due(principal)) is not None:
        _write_last_used(key_id)


def record_key_use_later(principal: Principal) -> None:
    """record_key_use for the event loop: the write, when one is due, runs off the request's path."""
    if (key_id := _key_use_due(principal)) is not None:
        task = asyncio.create_task(database_sync_to_async(_write_last_used)(key_id))
        _background.add(task)  # a reference, so the task is not collected before it runs
        task.add_done_callback(_background.discard)


def request_principal(request: Request) -> Principal:
    """The principal of a DRF request that passed IsAuthenticated (views on the default permissions)."""
    if not isinstance(request.user, Principal):
        raise AuthenticationError("No API key: send Authorization: Bearer <key>.", code="missing_api_key")
    return request.user


class ApiKeyAuthentication(BaseAuthentication):
    """DRF authentication by API key; request.user becomes the cached Principal."""

    def authenticate(self, request) -> tuple[Principal, Principal] | None:
        raw_key = raw_key_from_headers(request.headers)
        if raw_key is None:
            return None
        try:
            principal = authenticate_key(raw_key)
        except AuthenticationError as exc:
            raise AuthenticationFailed(exc.message, code=exc.code) from None
        record_key_use(principal)
        return principal, principal

    def authenticate_header(self, request) -> str:
        return AUTH_CHALLENGE


# --- per-worker state, for tests that stand in for a fresh or another worker -------------------
def reset_key_cache() -> None:
    """Forget every key this worker holds in memory, as a freshly started worker would have none.
    The shared cache and the database are left alone."""
    _local.clear()


def reset_last_used_marks() -> None:
    """Forget when this worker last recorded each key's use: its next use is written again."""
    _last_recorded_use.clear()


def copy_local_key_cache() -> dict[str, tuple[float, Principal | None]]:
    """A copy of the keys this worker holds in memory (with when each was looked up)."""
    return dict(_local)


def restore_local_key_cache(entries: Mapping[str, tuple[float, Principal | None]]) -> None:
    """Hold these entries (from copy_local_key_cache) again, as a worker that has not looked since would."""
    _local.update(entries)
