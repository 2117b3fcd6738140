"""The admin site, with brute-force protection on its login form (django-ratelimit)."""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpResponse
from django_ratelimit.core import is_ratelimited


def too_many_login_attempts(request) -> bool:
    """Counts login POSTs per client IP and per attempted username; True once either is over its rate."""
    by_ip = is_ratelimited(
        request, group="admin-login:ip", key="ip", rate=settings.ADMIN_LOGIN_RATE_PER_IP, method="POST", increment=True
    )
    by_username = is_ratelimited(
        request,
        group="admin-login:username",
        key="post:username",
        rate=settings.ADMIN_LOGIN_RATE_PER_USERNAME,
        method="POST",
        increment=True,
    )
    return by_ip or by_username


class PulseAdminSite(admin.AdminSite):
    site_header = "Pulse AI Gateway"
    site_title = "Pulse admin"
    index_title = "Providers, routes, keys and usage"
    index_template = "admin/pulse_index.html"  # the stock index, with a link to the usage dashboard on top

    def login(self, request, extra_context=None):
        if request.method == "POST" and too_many_login_attempts(request):
            return HttpResponse(
                "Too many login attempts. Wait a minute and try again.",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": "60"},
            )
        return super().login(request, extra_context)


class PulseAdminConfig(AdminConfig):
    default_site = "pulse.admin_site.PulseAdminSite"
