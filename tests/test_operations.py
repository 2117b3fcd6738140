"""Health, readiness, metrics, request ids, logging, schema and docs: what operators rely on."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.observability import RequestIdLogFilter, bind_request_id

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def test_healthz_is_200(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}


def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run code in a fresh Python with Django set up from the given environment."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pulse.settings", **env}
    script = "import django; django.setup()\n" + code
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


READYZ_OVER_HTTP = """
from django.test import Client
response = Client().get("/readyz", HTTP_HOST="localhost")
print(response.status_code)
print(response.content.decode())
"""


def test_readyz_is_503_naming_postgresql_and_redis_when_unreachable():
    # Port 9 (discard) has no listener here: both connections are refused at once.
    result = run_django(
        READYZ_OVER_HTTP, DATABASE_URL="postgres://postgres:s3cret@127.0.0.1:9/test", REDIS_URL="redis://127.0.0.1:9/0"
    )
    status, body = result.stdout.splitlines()[:2]
    error = json.loads(body)["error"]

    assert status == "503", result.stderr
    assert error["code"] == "not_ready"
    assert error["checks"]["database"] != "ok" and error["checks"]["cache"] != "ok"
    assert error["checks"]["broker"] != "ok"
    assert "database" in error["message"] and "cache" in error["message"]
    assert "s3cret" not in body


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


def test_request_id_is_generated_or_echoed(client):
    generated = client.get("/healthz")["X-Request-Id"]
    assert generated.startswith("req_") and len(generated) > 20
    assert client.get("/healthz", HTTP_X_REQUEST_ID="trace-42")["X-Request-Id"] == "trace-42"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\r\n")["X-Request-Id"].startswith("req_")


def test_log_lines_are_json_with_the_request_id(settings):
    from pythonjsonlogger.json import JsonFormatter

    formatter_config = dict(settings.LOGGING["formatters"]["json"])
    formatter_config.pop("()")
    formatter = JsonFormatter(**formatter_config)
    record = logging.LogRecord("pulse.test", logging.INFO, __file__, 1, "calling %s", ("openai",), None)
    bind_request_id("req_abc")
    RequestIdLogFilter().filter(record)

    line = json.loads(formatter.format(record))

    assert line["request_id"] == "req_abc"
    assert line["message"] == "calling openai" and line["level"] == "INFO"


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/healthz")
    client.get("/v1/models")  # 401

    text = client.get("/metrics").content.decode()

    assert 'pulse_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'pulse_http_requests_total{method="GET",route="/v1/models",status="401"}' in text
    assert "pulse_http_request_duration_seconds_bucket" in text


def test_openapi_schema_documents_the_api(client):
    response = client.get("/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/v1/models" in schema["paths"] and "/readyz" in schema["paths"]
    complete = schema["paths"]["/v1/chat/complete"]["post"]
    assert "ChatCompleteRequest" in json.dumps(complete["requestBody"])
    assert {"200", "400", "401", "404", "502", "503", "504"} <= set(complete["responses"])
    assert "post" in schema["paths"]["/v1/chat/completions"]


def test_docs_page_uses_local_assets_only(client):
    html = client.get("/v1/docs/").content.decode()
    assert "swagger-ui" in html
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


def test_openapi_schema_is_valid_and_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command(
        "spectacular",
        "--urlconf",
        "gateway.schema",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )
    assert "/v1/chat/completions" in (tmp_path / "schema.yaml").read_text()
