"""The chat endpoints end to end: real HTTP to the live gateway, real HTTP to the fake providers."""

import json
from decimal import Decimal

import openai
import pytest

from providers.models import ModelRoute, Provider
from tests.helpers import MESSAGES, openai_client, post, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}


@pytest.mark.parametrize("provider", MODELS)
def test_chat_complete_answers_through_each_provider(gateway, live_key, fake_providers, provider):
    fake = fake_providers[provider]
    fake.reply("Hello there friend", input_tokens=1200, output_tokens=300)

    response = post(gateway, live_key, {"model": MODELS[provider], "messages": MESSAGES, "max_tokens": 50})

    body = response.json()
    assert response.status_code == 200, body
    assert body["provider"] == provider and body["model"] == MODELS[provider]
    assert body["message"] == {"role": "assistant", "content": "Hello there friend"}
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
    }
    route = ModelRoute.objects.get(name=MODELS[provider])
    expected = (1200 * route.input_usd_per_mtok + 300 * route.output_usd_per_mtok) / 1_000_000
    assert Decimal(body["cost_usd"]) == expected
    assert response.headers["X-Pulse-Cost-USD"] == body["cost_usd"]
    assert response.headers["X-Pulse-Provider"] == provider
    assert response.headers["X-Pulse-Model"] == MODELS[provider]
    assert response.headers["X-Request-Id"] == body["id"]
    assert response.headers["Content-Length"] == str(len(response.content))  # whole, not chunked
    assert "Transfer-Encoding" not in response.headers
    assert fake.calls == 1


def test_system_messages_and_max_tokens_reach_anthropic_in_its_own_shape(gateway, live_key, fake_providers):
    post(gateway, live_key, {"model": "claude-sonnet-4-5", "messages": MESSAGES})

    sent = fake_providers["anthropic"].last_request.json
    assert sent["system"] == "Be brief."
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["max_tokens"] == ModelRoute.objects.get(name="claude-sonnet-4-5").default_max_tokens


def test_assistant_turns_reach_gemini_as_model_role(gateway, live_key, fake_providers):
    messages = [*MESSAGES, {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Again"}]
    post(gateway, live_key, {"model": "gemini-2.5-flash", "messages": messages})

    sent = fake_providers["gemini"].last_request.json
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."


@pytest.mark.parametrize("provider", MODELS)
def test_chat_complete_streams_deltas_then_done_with_usage(gateway, live_key, fake_providers, provider):
    fake_providers[provider].reply("one two three four", input_tokens=7, output_tokens=4)

    response = post(gateway, live_key, {"model": MODELS[provider], "messages": MESSAGES, "stream": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-Pulse-Provider"] == provider
    events = sse_events(response)
    deltas = [json.loads(data)["delta"] for event, data in events if event == "delta"]
    assert len(deltas) >= 2 and "".join(deltas) == "one two three four"
    assert events[-1][0] == "done"
    done = json.loads(events[-1][1])
    assert done["usage"] == {
        "input_tokens": 7,
        "output_tokens": 4,
        "total_tokens": 11,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert done["finish_reason"] == "stop" and done["provider"] == provider
    assert Decimal(done["cost_usd"]) > 0


def test_official_openai_sdk_non_streaming(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply("Bonjour", input_tokens=5, output_tokens=1)

    completion = openai_client(gateway, live_key).chat.completions.create(
        model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=20, temperature=0.5
    )

    assert completion.object == "chat.completion"
    assert completion.model == "claude-sonnet-4-5"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 1
    assert fake_providers["anthropic"].last_request.json["temperature"] == 0.5


def test_official_openai_sdk_streaming_with_usage(gateway, live_key, fake_providers):
    fake_providers["gemini"].reply("streamed words here", input_tokens=9, output_tokens=3)

    chunks = list(
        openai_client(gateway, live_key).chat.completions.create(
            model="gemini-2.5-flash", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words here"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_official_openai_sdk_streaming_without_usage_gets_none(gateway, live_key, fake_providers):
    chunks = list(
        openai_client(gateway, live_key).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    )
    assert all(getattr(c, "usage", None) is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from fake openai"


def test_official_openai_sdk_sees_errors_as_its_exceptions(gateway, live_key, fake_providers):
    client = openai_client(gateway, live_key)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai_client(gateway, "pulse-wrong").chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_models_lists_the_enabled_routes(gateway, live_key, fake_providers):
    Provider.objects.filter(name="gemini").update(enabled=False)  # no signal: proves the cache is bypassed below
    from providers.routing import bump_routing_version

    bump_routing_version()
    models = openai_client(gateway, live_key).models.list()
    ids = {m.id for m in models}
    assert {"gpt-4o", "claude-sonnet-4-5", "gpt-*"} <= ids
    assert not any(i.startswith("gemini") for i in ids)


def test_a_chat_request_records_when_the_key_was_last_used(gateway, live_key, fake_providers):
    import time

    from gateway.models import ApiKey, hash_api_key

    post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})

    key = ApiKey.objects.get(key_hash=hash_api_key(live_key))
    deadline = time.monotonic() + 3
    while key.last_used_at is None and time.monotonic() < deadline:  # written off the request's path
        time.sleep(0.02)
        key.refresh_from_db()
    assert key.last_used_at is not None
