"""Health, readiness, schema and docs: what operators rely on."""

import json

import pytest

from tests.helpers import run_django

pytestmark = pytest.mark.django_db


def test_healthz_is_200(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}


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
