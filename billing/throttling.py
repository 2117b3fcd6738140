"""The per-user rate limit on DRF endpoints: the same limiter and bucket as the chat consumers."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from billing.ratelimit import RateDecision, rate_key, rate_limiter, user_rate
from core.principal import Principal


class UserRateThrottle(BaseThrottle):
    decision: RateDecision | None = None

    def allow_request(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return True  # unauthenticated endpoints (health, docs) are not per-user limited
        limit, window_s = user_rate(principal)
        self.decision = rate_limiter.acquire_sync(rate_key(principal), limit, window_s)
        request._request.rate_limit_headers = self.decision.headers()
        return self.decision.allowed

    def wait(self) -> float | None:
        return self.decision.reset_s if self.decision else None


class RateLimitHeadersMiddleware:
    """Puts the X-RateLimit-* headers a throttle computed on the response, errors included."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        for name, value in getattr(request, "rate_limit_headers", {}).items():
            response.headers.setdefault(name, value)
        return response
