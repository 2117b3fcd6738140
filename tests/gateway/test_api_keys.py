import hashlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway import auth
from gateway.keys import api_key_create, api_key_revoke
from gateway.models import ApiKey

pytestmark = pytest.mark.django_db


def run_create_api_key(*args) -> list[str]:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines()


def test_create_api_key_command_prints_key_alone_on_last_line_and_stores_only_its_hash(django_user_model):
    raw_key = run_create_api_key("bob", "--name", "ci")[-1]

    key = ApiKey.objects.get(user__username="bob")
    assert raw_key.startswith("pulse-") and len(raw_key) > 40
    assert key.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert raw_key.startswith(key.prefix) and len(key.prefix) < len(raw_key) // 2
    assert key.name == "ci"
    stored = [str(v) for v in ApiKey.objects.values_list().get()]
    assert not any(raw_key in value for value in stored)
    assert not django_user_model.objects.get(username="bob").has_usable_password()


def test_create_api_key_command_reuses_user_and_sets_staff(django_user_model):
    first = run_create_api_key("carol")[-1]
    second = run_create_api_key("carol", "--staff")[-1]

    assert first != second
    assert django_user_model.objects.filter(username="carol").count() == 1
    assert django_user_model.objects.get(username="carol").is_staff
    assert ApiKey.objects.filter(user__username="carol").count() == 2


def test_good_key_authenticates_with_bearer_and_x_api_key(api_key, client_for):
    _, raw_key = api_key
    assert client_for(raw_key).get("/v1/models").status_code == 200
    assert client_for(raw_key, header="x-api-key").get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"HTTP_AUTHORIZATION": "Bearer pulse-not-a-real-key"}, "invalid_api_key"),
        ({"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="}, "missing_api_key"),
    ],
)
def test_missing_or_bad_key_is_401_envelope(client, headers, code):
    response = client.get("/v1/models", **headers)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_rejected(api_key, client_for, django_capture_on_commit_callbacks):
    key, raw_key = api_key
    client = client_for(raw_key)
    assert client.get("/v1/models").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        assert api_key_revoke(key=key) is True
        assert api_key_revoke(key=key) is False  # revoking twice keeps the first time

    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revocation_reaches_another_worker_within_its_local_cache_interval(
    api_key, client_for, monkeypatch, settings, django_capture_on_commit_callbacks
):
    key, raw_key = api_key
    client = client_for(raw_key)
    assert client.get("/v1/models").status_code == 200
    other_worker_copy = auth.copy_local_key_cache()

    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(key=key)
    auth.restore_local_key_cache(other_worker_copy)  # a worker that has not looked since
    assert client.get("/v1/models").status_code == 200  # still inside its local interval

    # Patch the module's clock only: the global time.monotonic also drives the live servers' threads.
    later = auth.time.monotonic() + settings.PULSE_LOCAL_CACHE_SECONDS + 0.01
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: later))
    assert client.get("/v1/models").status_code == 401


def test_deactivating_the_owner_disables_their_keys(api_key, client_for, user, django_capture_on_commit_callbacks):
    client = client_for(api_key[1])
    assert client.get("/v1/models").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()
    assert client.get("/v1/models").status_code == 401


def test_expired_key_is_rejected(user, client_for):
    _, raw_key = api_key_create(user=user, expires_at=timezone.now() - timedelta(seconds=1))

    response = client_for(raw_key).get("/v1/models")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "expired_api_key"


def test_key_expiring_after_it_was_cached_is_rejected_at_expiry(user, client_for, monkeypatch):
    _, raw_key = api_key_create(user=user, expires_at=timezone.now() + timedelta(minutes=5))
    client = client_for(raw_key)
    assert client.get("/v1/models").status_code == 200

    later = timezone.now() + timedelta(minutes=6)
    monkeypatch.setattr(auth.timezone, "now", lambda: later)
    assert client.get("/v1/models").status_code == 401


def test_authenticated_request_reads_no_database_row_for_auth_once_warm(api, django_assert_num_queries):
    assert api.get("/v1/models").status_code == 200  # first use: DB read and last-used write
    with django_assert_num_queries(0):
        assert api.get("/v1/models").status_code == 200


def test_shared_cache_serves_a_second_worker_without_the_database(api, django_assert_num_queries):
    assert api.get("/v1/models").status_code == 200
    auth.reset_key_cache()  # a fresh worker process: nothing local, the shared cache has it
    with django_assert_num_queries(0):
        assert api.get("/v1/models").status_code == 200


def test_last_used_is_recorded(api, api_key):
    api.get("/v1/models")
    api_key[0].refresh_from_db()
    assert api_key[0].last_used_at is not None


def test_a_non_revoking_change_rewrites_the_shared_entry(api, user, django_capture_on_commit_callbacks):
    from django.core.cache import cache

    assert api.get("/v1/models").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user.is_staff = True
        user.save()
    [entry] = [cache.get(f"apikey:{h}") for h in user.api_keys.values_list("key_hash", flat=True)]
    assert entry["is_staff"] is True  # set from the committed row, so a stale add cannot win
