"""The per-user rate limit on DRF endpoints: the same limiter and bucket as the chat consumers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponseBase
from rest_framework.throttling import BaseThrottle

from billing.ratelimit import RateDecision, rate_key, rate_limiter, user_rate
from core.principal import Principal

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES): no cycle at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView


class UserRateThrottle(BaseThrottle):
    decision: RateDecision | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        # Typed as Django's user classes in the stubs; ApiKeyAuthentication sets a Principal.
        principal: object = request.user
        if not isinstance(principal, Principal):
            return True  # unauthenticated endpoints (health, docs) are not per-user limited
        limit, window_s = user_rate(principal)
        self.decision = rate_limiter.acquire_sync(rate_key(principal), limit, window_s)
        # For RateLimitHeadersMiddleware: Pulse's own attribute on Django's request, which declares none.
        request._request.rate_limit_headers = self.decision.headers()  # type: ignore[attr-defined]
        return self.decision.allowed

    def wait(self) -> float | None:
        return self.decision.reset_s if self.decision else None


class RateLimitHeadersMiddleware:
    """Puts the X-RateLimit-* headers a throttle computed on the response, errors included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response  # synchronous: this middleware is not async_capable

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        headers: dict[str, str] = getattr(request, "rate_limit_headers", {})
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
