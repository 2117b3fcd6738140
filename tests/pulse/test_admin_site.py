"""The admin site's login form (pulse.admin_site)."""

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.django_db


def test_admin_login_is_rate_limited_per_username(client, staff_user, monkeypatch):
    # django-ratelimit counts in fixed windows: hold its clock still so no window boundary falls mid-test.
    import django_ratelimit.core

    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    statuses = [
        client.post("/admin/login/", {"username": staff_user.username, "password": f"wrong-{i}"}).status_code
        for i in range(7)
    ]
    assert statuses[:5] == [200] * 5  # the form again, with an error
    assert statuses[5:] == [429, 429]
