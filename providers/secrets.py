"""Encryption at rest for provider API keys (Fernet, key derived from settings)."""

from __future__ import annotations

import base64
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


@cache
def _fernet() -> Fernet:
    # PULSE_ENCRYPTION_KEY lets operators rotate SECRET_KEY without losing provider keys.
    material = (settings.PULSE_ENCRYPTION_KEY or settings.SECRET_KEY).encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"pulse-provider-keys", info=b"fernet").derive(material)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_secret(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt_secret(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("a provider API key cannot be decrypted: was PULSE_ENCRYPTION_KEY changed?") from None


def mask_secret(plaintext: str) -> str:
    """What an admin page may show of a secret: its last four characters at most."""
    if not plaintext:
        return ""
    return f"…{plaintext[-4:]}" if len(plaintext) >= 12 else "…"
