"""Settings from the environment: a malformed value stops start-up with a clear message (pulse.config)."""

import pytest

from tests.helpers import run_django


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
