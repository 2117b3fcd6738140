import os

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from billing.ratelimit import rate_limiter
from gateway.auth import reset_key_cache, reset_last_used_marks
from gateway.keys import api_key_create
from providers.breaker import breaker
from providers.routing import reset_routing_table
from pulse.config import mask_url
from tests.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeReplicate
from tests.live import LiveGateway


def pytest_configure(config):
    # CI's second run must really use PostgreSQL and Redis, never fall back silently.
    if os.environ.get("PULSE_REQUIRE_SERVICES"):
        engine = settings.DATABASES["default"]["ENGINE"]
        backend = settings.CACHES["default"]["BACKEND"]
        assert engine.endswith("postgresql"), f"PULSE_REQUIRE_SERVICES set but database is {engine}"
        assert backend.endswith("RedisCache"), f"PULSE_REQUIRE_SERVICES set but cache is {backend}"
    # Without a broker server, the in-process test workers pass messages in memory (the embedded
    # default keeps them in files under var/, shared with `make run`).
    from pulse.celery import app

    if settings.CELERY_BROKER_URL == "filesystem://":
        app.conf.broker_url = "memory://"
        app.conf.broker_transport_options = {"polling_interval": 0.05}


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with empty shared and per-worker caches."""
    cache.clear()
    reset_key_cache()
    reset_last_used_marks()
    reset_routing_table()
    breaker.reset()
    rate_limiter.reset()
    yield
    reset_key_cache()


@pytest.fixture
def redis_url() -> str:
    """A real Redis for the tests that need one, its database emptied first: REDIS_URL when the run
    has one, else PULSE_TEST_REDIS_URL, else redis://127.0.0.1:6379/14.

    These tests run in CI, where Redis is up (and PULSE_REQUIRE_SERVICES is set, so an unreachable
    Redis fails them); they are skipped only on a laptop without Redis."""
    url = settings.REDIS_URL or os.environ.get("PULSE_TEST_REDIS_URL") or "redis://127.0.0.1:6379/14"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {mask_url(url)}: these tests need a real Redis ({exc})"
        if os.environ.get("PULSE_REQUIRE_SERVICES"):
            pytest.fail(reason, pytrace=False)
        raise pytest.skip.Exception(reason) from None
    else:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="correct horse battery staple")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        "root-admin", password="correct horse battery staple", is_staff=True, is_superuser=True
    )


@pytest.fixture
def api_key(user):
    """(ApiKey row, raw key) for alice."""
    return api_key_create(user=user, name="test")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob")


@pytest.fixture
def staff_api(staff_user, client_for):
    """An API client authenticated as a staff user."""
    return client_for(api_key_create(user=staff_user, name="staff")[1])


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


# --- fake providers and the live gateway --------------------------------------------
@pytest.fixture(scope="session")
def fakes():
    """One fake server per provider for the session; reset before each test that uses them."""
    servers = {
        "openai": FakeOpenAI.start(),
        "anthropic": FakeAnthropic.start(),
        "gemini": FakeGemini.start(),
        "replicate": FakeReplicate.start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def fake_providers(fakes, settings, transactional_db):
    """Provider rows and default routes pointing at the fakes, made the way an operator would:
    environment variables, then `manage.py sync_providers`."""
    from django.core.management import call_command

    for fake in fakes.values():
        fake.reset()
    settings.PROVIDER_ENV = {name: {"api_key": fake.api_key, "base_url": fake.base_url} for name, fake in fakes.items()}
    call_command("sync_providers", stdout=open(os.devnull, "w"))
    return fakes


@pytest.fixture(scope="session")
def live_gateway(django_db_setup):
    """After the test database exists, and stopped before it is dropped: the server's shutdown closes
    its connections, so none is left on the database at teardown."""
    server = LiveGateway().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(live_gateway, fake_providers, transactional_db):
    """The live gateway's base URL, with providers on the fakes."""
    return live_gateway.url


@pytest.fixture
def live_key(transactional_db, django_user_model):
    user = django_user_model.objects.create_user("live-user")
    return api_key_create(user=user, name="live")[1]


@pytest.fixture
def job_worker(transactional_db, settings, tmp_path):
    """A real Celery worker (in this process, on a thread) running the job tasks from the broker,
    countdowns included; polls and backoffs shortened, job files under a temporary MEDIA_ROOT."""
    from celery.contrib.testing.worker import start_worker

    from pulse.celery import app

    settings.JOB_POLL_S = 0.05
    settings.JOB_RETRY_BACKOFF_S = 0.05
    settings.MEDIA_ROOT = str(tmp_path / "media")
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield app


@pytest.fixture
def chain(fake_providers):
    """gpt-4o falls back to claude-sonnet-4-5, then gemini-2.5-flash."""
    from providers.models import ModelRoute, RouteFallback

    primary = ModelRoute.objects.get(name="gpt-4o")
    for position, name in enumerate(["claude-sonnet-4-5", "gemini-2.5-flash"]):
        RouteFallback.objects.create(route=primary, fallback=ModelRoute.objects.get(name=name), position=position)
    return fake_providers
