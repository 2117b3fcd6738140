import json

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.gateway.error_urls")]


def error_of(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert set(body) == {"error"}
    assert {"type", "code", "message", "param"} <= set(body["error"])
    return body["error"]


def post_json(client, url, payload, **extra):
    return client.post(url, data=json.dumps(payload), content_type="application/json", **extra)


def test_validation_error_names_the_nested_param(client):
    response = post_json(
        client,
        "/t/echo",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]},
    )
    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "invalid_value"
    assert error["param"] == "messages.1.role"
    assert "wizard" in error["message"]


def test_missing_field_names_the_param(client):
    error = error_of(post_json(client, "/t/echo", {"messages": []}))
    assert error["param"] == "model"


def test_malformed_json_is_400_invalid_json(client):
    response = client.post("/t/echo", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_wrong_content_type_is_415(client):
    response = client.post("/t/echo", data="model=x", content_type="text/plain")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_wrong_method_is_405(client):
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_unknown_url_is_404_envelope(client):
    response = client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"


@pytest.mark.parametrize("url", ["/t/forbidden", "/t/django-forbidden"])
def test_permission_denied_is_403(client, url):
    response = client.get(url)
    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_error"


def test_throttled_is_429_with_retry_after(client):
    response = client.get("/t/throttled")
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert response["Retry-After"] == "7"


@pytest.mark.parametrize("url", ["/t/broken", "/t/broken-plain"])
def test_unhandled_exception_is_500_without_traceback_or_detail(url):
    client = Client(raise_request_exception=False)
    response = client.get(url)
    error = error_of(response)
    assert response.status_code == 500
    assert error["code"] == "internal_error"
    assert b"hunter2" not in response.content and b"Traceback" not in response.content


def test_oversize_body_is_413_before_parsing(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = post_json(client, "/t/echo", {"model": "m" * 5000, "messages": []})
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
