"""Admission: who is asking (the API key) and whether they may ask now (the rate limit).

Every transport admits a request before it parses it; a refusal is the ApiError to answer
(401, or 429 with Retry-After and the rate-limit headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from billing.ratelimit import rate_key, rate_limiter, user_rate
from core.principal import Principal
from gateway.auth import aauthenticate_key, raw_key_from_headers, record_key_use_later
from gateway.errors import ApiError, AuthenticationError


@dataclass(frozen=True)
class Admission:
    principal: Principal
    headers: dict[str, str] = field(default_factory=dict)  # the rate-limit headers, for every answer


async def admit(headers: Mapping[str, str]) -> Admission:
    """The principal of an admitted request (lower-case header names), or the ApiError to answer."""
    return await admit_principal(await authenticate(headers))


async def authenticate(headers: Mapping[str, str]) -> Principal:
    """Who the API key in the headers belongs to, or the 401 to answer."""
    raw_key = raw_key_from_headers(headers)
    if raw_key is None:
        raise AuthenticationError("No API key: send Authorization: Bearer <key>.", code="missing_api_key")
    principal = await aauthenticate_key(raw_key)
    record_key_use_later(principal)
    return principal


async def admit_principal(principal: Principal) -> Admission:
    """One request of an authenticated principal past the rate limit (a WebSocket authenticates once,
    then admits each request it carries), or the 429 to answer."""
    limit, window_s = user_rate(principal)
    decision = await rate_limiter.acquire(rate_key(principal), limit, window_s)
    if not decision.allowed:
        raise ApiError(
            f"Rate limit reached: {limit} requests per {window_s:g} s. "
            f"Retry after {decision.headers()['Retry-After']} s.",
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=decision.headers(),
        )
    return Admission(principal, decision.headers())
