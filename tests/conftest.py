import os

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from gateway import auth
from gateway.keys import api_key_create


def pytest_configure(config):
    # CI's second run must really use PostgreSQL and Redis, never fall back silently.
    if os.environ.get("PULSE_REQUIRE_SERVICES"):
        engine = settings.DATABASES["default"]["ENGINE"]
        backend = settings.CACHES["default"]["BACKEND"]
        assert engine.endswith("postgresql"), f"PULSE_REQUIRE_SERVICES set but database is {engine}"
        assert backend.endswith("RedisCache"), f"PULSE_REQUIRE_SERVICES set but cache is {backend}"


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with empty shared and per-worker caches."""
    cache.clear()
    auth._local.clear()
    auth._last_recorded_use.clear()
    yield
    auth._local.clear()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="correct horse battery staple")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("root-admin", password="correct horse battery staple",
                                                 is_staff=True, is_superuser=True)


@pytest.fixture
def api_key(user):
    """(ApiKey row, raw key) for alice."""
    return api_key_create(user=user, name="test")


@pytest.fixture
def client_for():
    def make(raw_key: str, header: str = "bearer") -> APIClient:
        client = APIClient()
        if header == "bearer":
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        else:
            client.credentials(HTTP_X_API_KEY=raw_key)
        return client

    return make


@pytest.fixture
def api(api_key, client_for) -> APIClient:
    """An API client authenticated as alice."""
    return client_for(api_key[1])
