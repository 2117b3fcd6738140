from types import SimpleNamespace

import pytest

from gateway.models import ApiKey, hash_api_key

pytestmark = pytest.mark.django_db


def test_admin_add_shows_the_key_once_and_list_shows_only_the_prefix(client, staff_user, user):
    client.force_login(staff_user)

    response = client.post("/admin/gateway/apikey/add/", {"user": user.pk, "name": "from admin"})
    html = response.content.decode()
    key = ApiKey.objects.get(name="from admin")
    raw_key = html.split('id="new-api-key"')[1].split(">", 1)[1].split("<", 1)[0].strip()

    assert response.status_code == 200
    assert hash_api_key(raw_key) == key.key_hash
    for page in (f"/admin/gateway/apikey/{key.pk}/change/", "/admin/gateway/apikey/"):
        shown = client.get(page).content.decode()
        assert key.prefix in shown
        assert raw_key not in shown and key.key_hash not in shown


def test_admin_action_revokes_keys(client, staff_user, api_key):
    client.force_login(staff_user)
    client.post("/admin/gateway/apikey/", {"action": "revoke_keys", "_selected_action": [api_key[0].pk]})
    api_key[0].refresh_from_db()
    assert api_key[0].is_revoked


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
