"""Settings from the environment: a malformed value stops start-up with a clear message (pulse.config)."""

import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_django


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql-ish://u:pw@h/db", "not a supported database URL"),
        ("postgres://u:pw@h:notaport/db", "malformed"),
        ("definitely not a url", "not a supported database URL"),
    ],
)
def test_settings_reject_a_malformed_database_url_with_a_clear_message(url, fragment):
    result = run_django("", DATABASE_URL=url)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DATABASE_URL" in result.stderr and fragment in result.stderr
    assert ":pw@" not in result.stderr  # the password is masked


def test_settings_reject_a_malformed_redis_url_and_rate_limit():
    assert "REDIS_URL" in run_django("", REDIS_URL="http://localhost").stderr
    assert "RATE_LIMIT" in run_django("", RATE_LIMIT="sixty per minute").stderr


def test_an_asgi_worker_loads_no_twisted_and_runserver_is_still_daphnes():
    """Daphne's app (and with it Twisted, Autobahn and pyOpenSSL, about 12 MB) is for `manage.py
    runserver` only: what uvicorn loads stays without it."""
    worker = run_django("import sys, pulse.asgi\nprint(sorted({'daphne', 'twisted', 'autobahn'} & set(sys.modules)))")
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.strip() == "[]"

    runserver = subprocess.run(
        [sys.executable, "manage.py", "runserver", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert runserver.returncode == 0, runserver.stderr
    assert "--noasgi" in runserver.stdout  # daphne's runserver, serving the ASGI application
