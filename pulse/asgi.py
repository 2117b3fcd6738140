"""ASGI entry point: Channels routes the hot-path consumers first, Django serves the rest.

The chat endpoints are AsyncHttpConsumers rather than Django views: Django's
view stack costs about half a millisecond per request even with no middleware
(see DESIGN.md for the measurements).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pulse.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from core.gcpacer import in_flight  # noqa: E402
from gateway.routing import http_consumer_routes, websocket_routes  # noqa: E402
from pulse.lifespan import lifespan_app  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Channels' URLRouter routes to ASGI apps through re_path; django-stubs types its target as a view.
        # Counted in flight: the garbage collector's pacer waits for none before it collects (core.gcpacer).
        "http": in_flight.track(URLRouter([*http_consumer_routes, re_path(r"", django_asgi_app)])),  # type: ignore[arg-type]
        # The session (and its user) for browsers on the playground; programs send a key instead.
        "websocket": in_flight.track(AuthMiddlewareStack(URLRouter(websocket_routes))),
        "lifespan": lifespan_app,
    }
)
