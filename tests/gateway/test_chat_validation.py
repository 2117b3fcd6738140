"""Bad chat requests get a clear error naming the offending param, before any provider is called."""

import httpx
import pytest

from tests.helpers import MESSAGES, post

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def force(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def call(call_id: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "body, status, code, param",
    [
        ({"model": "nope-1", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"messages": MESSAGES}, 400, "invalid_value", "model"),
        ({"model": "gpt-4o", "messages": []}, 400, "invalid_value", "messages"),
        (
            {"model": "gpt-4o", "messages": [{"role": "wizard", "content": "hi"}]},
            400,
            "invalid_value",
            "messages.0.role",
        ),
        ({"model": "gpt-4o", "messages": [{"role": "user"}]}, 400, "invalid_value", "messages.0.content"),
        (
            {"model": "gpt-4o", "messages": [{"role": "system", "content": "only system"}]},
            400,
            "invalid_value",
            "messages",
        ),
        ({"model": "gpt-4o", "messages": MESSAGES, "temperature": "hot"}, 400, "invalid_value", "temperature"),
        ({"model": "gpt-4o", "messages": MESSAGES, "temperature": 3}, 400, "invalid_value", "temperature"),
        ({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
        ({"model": "gpt-4o", "messages": MESSAGES, "fallbacks": ["unknown-x"]}, 400, "model_not_found", "fallbacks.0"),
        ({"model": "nano-banana", "messages": MESSAGES}, 400, "wrong_modality", "model"),
    ],
)
def test_bad_chat_complete_requests(gateway, live_key, fake_providers, body, status, code, param):
    response = post(gateway, live_key, body)

    error = response.json()["error"]
    assert response.status_code == status, error
    assert (error["code"], error["param"]) == (code, param)
    assert sum(fake.calls for fake in fake_providers.values()) == 0


@pytest.mark.parametrize(
    "body, param",
    [
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content.0.image_url.url",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [image_part("data:image/png;base64,@@")]}]},
            "messages.0.content.0.image_url.url",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [image_part("data:text/html;base64,AA==")]}]},
            "messages.0.content.0.image_url.url",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": [image_part("file:///etc/passwd")]}]},
            "messages.0.content.0.image_url.url",
        ),
        ({"model": "gpt-4o", "messages": MESSAGES, "tools": [{"type": "function"}]}, "tools.0.function"),
        (
            {"model": "gpt-4o", "messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools.0.function.name",
        ),
        ({"model": "gpt-4o", "messages": MESSAGES, "tool_choice": "required"}, "tool_choice"),
        (
            {"model": "gpt-4o", "messages": MESSAGES, "tools": [TOOL], "tool_choice": force("nope")},
            "tool_choice.function.name",
        ),
        (
            {"model": "gpt-4o", "messages": [*MESSAGES, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
            "messages.2.tool_call_id",
        ),
        (
            {
                "model": "gpt-4o",
                "messages": [
                    *MESSAGES,
                    {"role": "assistant", "tool_calls": [call("call_1", "[1]")]},
                ],
            },
            "messages.2.tool_calls.0.function.arguments",
        ),
        ({"model": "gpt-4o", "messages": MESSAGES, "response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"model": "gpt-4o", "messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
        ),
        ({"model": "gpt-4o", "messages": MESSAGES, "n": 2, "stream": True}, "n"),
        ({"model": "gpt-4o", "messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
        ({"model": "gpt-4o", "messages": MESSAGES, "reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"model": "gpt-4o", "messages": MESSAGES, "temprature": 0.2}, "temprature"),
        ({"model": "gpt-4o", "messages": MESSAGES, "functions": [{"name": "f"}]}, "functions"),
        ({"model": "gpt-4o", "messages": MESSAGES, "stop": [1, 2]}, "stop"),
    ],
)
def test_bad_chat_completions_requests(gateway, live_key, fake_providers, body, param):
    response = post(gateway, live_key, body, path="/v1/chat/completions")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_openai_text_parts_are_accepted(gateway, live_key, fake_providers):
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
    }
    response = post(gateway, live_key, body, path="/v1/chat/completions")

    assert response.status_code == 200
    assert fake_providers["openai"].last_request.json["messages"][0]["content"] == "hi there"


@pytest.mark.parametrize("path", ["/v1/chat/complete", "/v1/chat/completions"])
def test_transport_level_errors(gateway, live_key, fake_providers, path, settings):
    url, auth = gateway + path, {"Authorization": f"Bearer {live_key}"}

    missing = httpx.post(url, json={"model": "gpt-4o", "messages": MESSAGES})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    bad = httpx.post(url, json={}, headers={"Authorization": "Bearer pulse-nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    malformed = httpx.post(url, content=b"{oops", headers={**auth, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    form = httpx.post(url, content=b"a=b", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    get = httpx.get(url, headers=auth)
    assert get.status_code == 405 and get.json()["error"]["code"] == "method_not_allowed"
    huge = httpx.post(
        url, content=b"x" * (settings.MAX_REQUEST_BODY_BYTES + 1), headers={**auth, "Content-Type": "application/json"}
    )
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    assert all(r.headers["X-Request-Id"] for r in (missing, bad, malformed, form, get, huge))
