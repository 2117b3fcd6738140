"""API key services: create (the key is returned once, never stored), revoke."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from gateway.auth import forget_api_key
from gateway.models import API_KEY_PREFIX, VISIBLE_PREFIX_LENGTH, ApiKey, hash_api_key


def new_key_material() -> tuple[str, dict[str, str]]:
    """A fresh random key and the fields stored for it (visible prefix and hash, not the key)."""
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return raw_key, {"prefix": raw_key[:VISIBLE_PREFIX_LENGTH], "key_hash": hash_api_key(raw_key)}


def api_key_create(*, user: User, name: str = "", expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for user. The raw key is in the return value only."""
    raw_key, stored = new_key_material()
    return ApiKey.objects.create(user=user, name=name, expires_at=expires_at, **stored), raw_key


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke once (the first revocation time is kept); True when this call revoked it.

    A conditional update, so two concurrent revokes cannot both act; the caches get
    a tombstone once the revocation is committed.
    """
    if not ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        return False
    transaction.on_commit(lambda: forget_api_key(key.key_hash, revoked=True))
    key.refresh_from_db(fields=["revoked_at"])
    return True
