"""The playground: a page where a signed-in user (staff or not) tries the chat and image models.

The page talks to WS /ws/v1/chat with its session as the credential (no API key), so its requests
go through the same pipeline as any client's: the user's rate limit and caps, moderation, fallback,
and one ledger row each. Its script and styles are static files (gateway/static/playground/).

Not every staff member is a user of the page and not every user is staff, so it has its own small
login form rather than the admin's, which only staff may pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.modality import Modality
from gateway.jobs.serializers import JobSerializer
from gateway.models import Job
from gateway.ws import PATH as SOCKET_PATH
from providers.routing import Route, routing_table

LOGIN_URL = "playground-login"


@dataclass(frozen=True)
class PlaygroundModel:
    """A model as the page's selects show it: its exact name, who serves it, and its price."""

    name: str
    provider: str
    price: str


def playground_models(modality: str) -> list[PlaygroundModel]:
    """The exact, enabled and priced routes of one modality, by provider then name. Patterns are left
    out (a select needs a name to send), and so are unpriced routes: they answer 403 model_not_priced."""
    routes = [
        route
        for route in routing_table().routes
        if route.enabled
        and route.provider_enabled
        and not route.is_pattern
        and route.modality == modality
        and route.prices.covers(modality)
    ]
    routes.sort(key=lambda route: (route.provider.name, route.name))
    return [PlaygroundModel(route.name, route.provider.name, price_text(route)) for route in routes]


def price_text(route: Route) -> str:
    prices = route.prices
    if route.modality == Modality.CHAT:
        return f"${usd(prices.input_usd_per_mtok)} in, ${usd(prices.output_usd_per_mtok)} out per 1M tokens"
    if route.modality == Modality.IMAGE:
        return f"${usd(prices.usd_per_image)} per image"
    return f"${usd(prices.usd_per_video_second)} per second of video"


def usd(price: Decimal | None) -> str:
    """A list price without trailing zeros beyond the cents: 0.15, 2.50, 0.039."""
    text = f"{price or 0:f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


@login_required(login_url=LOGIN_URL)
@require_GET
def playground_view(request: HttpRequest) -> HttpResponse:
    context = {
        "chat_models": playground_models(Modality.CHAT),
        "image_models": playground_models(Modality.IMAGE),
        "socket_path": SOCKET_PATH,
    }
    return render(request, "playground.html", context)


@login_required(login_url=LOGIN_URL)
@require_GET
def playground_job_view(request: HttpRequest, job_id: Any) -> JsonResponse:
    """One of the user's own jobs, as job.update frames carry it (signed relative output URLs).

    The page polls this while a job runs, beside the socket's job.update frames: those need a
    channel layer the Celery worker shares, and the embedded default's (in-process) reaches no
    worker in another process."""
    job = Job.objects.prefetch_related("outputs").filter(pk=job_id, user_id=int(request.user.pk or 0)).first()
    if job is None:
        return JsonResponse({"error": {"type": "not_found_error", "code": "job_not_found"}}, status=404)
    return JsonResponse(JobSerializer(job, context={"base_url": ""}).data)


class PlaygroundLoginView(LoginView):
    """Django's login form for any active user, then back to the page (or ?next=)."""

    template_name = "playground_login.html"
    redirect_authenticated_user = True
    next_page = "playground"
    # Set where the URL is routed (pulse/urls.py): the admin login's brute-force limits, shared with
    # it, so trying passwords on both forms gains nothing.
    too_many_attempts: Callable[[HttpRequest], bool] | None = None

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self.too_many_attempts is not None and self.too_many_attempts(request):
            return HttpResponse(
                "Too many login attempts. Wait a minute and try again.",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": "60"},
            )
        return super().post(request, *args, **kwargs)
