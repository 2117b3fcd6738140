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
