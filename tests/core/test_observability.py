"""Request ids, JSON log lines and request metrics (core.observability)."""

import json
import logging

import pytest

from core.observability import RequestIdLogFilter, bind_request_id

pytestmark = pytest.mark.django_db


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
