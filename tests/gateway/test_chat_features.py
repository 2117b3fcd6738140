"""What real clients send, through Pulse, with the official OpenAI SDK, on each provider: a tool-calling
agent loop (streamed and not), an image question, and a JSON-schema answer; and Pulse's own format
doing the same. The fakes check each provider's wire format strictly, so a translation that is wrong
for the provider fails here."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from billing.models import UsageRecord
from tests.fakes import FakeToolCall
from tests.fakes.images import PNG, ImageHost
from tests.helpers import openai_client, post, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    with ImageHost.start() as host:
        yield host


def streamed_tool_calls(chunks: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The tool calls a stream made, put together from their pieces as the SDK's users do."""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    return [calls[index] for index in sorted(calls)], finish


def tool_result_sent(provider: str, body: dict[str, Any]) -> Any:
    """The tool result as the provider received it, in its own format."""
    if provider == "openai":
        return next(m for m in body["messages"] if m["role"] == "tool")["content"]
    if provider == "anthropic":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        return next(b for b in blocks if b["type"] == "tool_result")["content"]
    parts = [p for c in body["contents"] for p in c["parts"]]
    return next(p for p in parts if "functionResponse" in p)["functionResponse"]["response"]


@pytest.mark.parametrize("provider", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_tool_calling_agent_loop(gateway, live_key, fake_providers, provider, stream):
    fake, model = fake_providers[provider], MODELS[provider]
    client = openai_client(gateway, live_key)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]

    fake.reply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})])
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], stream=True))
        [call], finish = streamed_tool_calls(chunks)
        messages.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            }
        )
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        finish, message = first.choices[0].finish_reason, first.choices[0].message
        [tool_call] = message.tool_calls
        messages.append(message)  # the SDK's own object, as agent loops append it
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert finish == "tool_calls"
    assert (name, json.loads(arguments)) == ("get_weather", {"city": "Paris"})

    messages.append({"role": "tool", "tool_call_id": call_id, "content": "18 C and sunny"})
    fake.reply("It is 18 C and sunny in Paris.")
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])

    assert final.choices[0].message.content == "It is 18 C and sunny in Paris."
    assert final.choices[0].finish_reason == "stop"
    assert "18 C and sunny" in json.dumps(tool_result_sent(provider, fake.last_request.json))
    assert UsageRecord.objects.filter(status="succeeded", provider=provider).count() == 2


def image_sent(provider: str, body: dict[str, Any]) -> Any:
    if provider == "openai":
        return next(p for p in body["messages"][-1]["content"] if p["type"] == "image_url")["image_url"]["url"]
    if provider == "anthropic":
        return next(b for b in body["messages"][-1]["content"] if b["type"] == "image")["source"]
    return next(p for p in body["contents"][-1]["parts"] if "inlineData" in p)["inlineData"]


@pytest.mark.parametrize("provider", MODELS)
def test_an_image_question_by_data_url(gateway, live_key, fake_providers, provider):
    fake = fake_providers[provider]
    fake.reply("A tiny square.")
    question = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}},
    ]

    answer = openai_client(gateway, live_key).chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": question}]
    )

    assert answer.choices[0].message.content == "A tiny square."
    sent = image_sent(provider, fake.last_request.json)
    expected = {
        "openai": DATA_URL,
        "anthropic": {"type": "base64", "media_type": "image/png", "data": DATA_URL.split(",")[1]},
        "gemini": {"mimeType": "image/png", "data": DATA_URL.split(",")[1]},
    }[provider]
    assert sent == expected


@pytest.mark.parametrize("provider", MODELS)
def test_an_image_question_by_url(gateway, live_key, fake_providers, provider, image_host, settings):
    """OpenAI and Anthropic fetch a URL themselves; Gemini needs the bytes, so Pulse fetches them."""
    settings.CHAT_IMAGE_FETCH_PRIVATE = True  # the image host is on loopback here
    fake = fake_providers[provider]
    url = image_host.url("cat.png")
    question = [{"type": "text", "text": "Describe it"}, {"type": "image_url", "image_url": {"url": url}}]

    openai_client(gateway, live_key).chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": question}]
    )

    expected = {
        "openai": url,
        "anthropic": {"type": "url", "url": url},
        "gemini": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()},
    }[provider]
    assert image_sent(provider, fake.last_request.json) == expected


def test_an_image_url_into_a_private_network_is_refused_before_any_provider(gateway, live_key, fake_providers):
    question = [
        {"type": "text", "text": "Describe it"},
        {"type": "image_url", "image_url": {"url": "http://10.0.0.1/a.png"}},
    ]

    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway, live_key).chat.completions.create(
            model=MODELS["gemini"], messages=[{"role": "user", "content": question}]
        )

    assert refused.value.code == "invalid_image_url"
    assert fake_providers["gemini"].calls == 0


class Weather(BaseModel):
    city: str
    temp_c: int


@pytest.mark.parametrize("provider", MODELS)
def test_a_json_schema_answer(gateway, live_key, fake_providers, provider):
    fake = fake_providers[provider]
    fake.reply('{"city": "Paris", "temp_c": 18}')

    parsed = openai_client(gateway, live_key).chat.completions.parse(
        model=MODELS[provider],
        messages=[{"role": "user", "content": "The weather in Paris, as JSON."}],
        response_format=Weather,
    )

    assert parsed.choices[0].message.parsed == Weather(city="Paris", temp_c=18)
    body = fake.last_request.json
    if provider == "openai":
        assert body["response_format"]["json_schema"]["name"] == "Weather"
    elif provider == "anthropic":
        assert (body["tool_choice"]["type"], body["tool_choice"]["name"]) == ("tool", "Weather")
    else:
        assert body["generationConfig"]["responseMimeType"] == "application/json"


def test_a_field_no_candidate_can_honour_is_a_400_naming_it(gateway, live_key, fake_providers):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway, live_key).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}], n=2
        )

    assert (refused.value.code, refused.value.param) == ("unsupported_parameter", "n")
    assert fake_providers["anthropic"].calls == 0 and UsageRecord.objects.count() == 0


def test_n_choices_where_the_provider_makes_them(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("Same answer")

    answer = openai_client(gateway, live_key).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], n=3
    )

    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert fake_providers["openai"].last_request.json["n"] == 3


def test_pulse_format_calls_tools_and_streams_their_pieces(gateway, live_key, fake_providers):
    fake = fake_providers["anthropic"]
    fake.reply(tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"})])
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Oslo?"}], "tools": [WEATHER]}

    answer = post(gateway, live_key, body).json()
    [call] = answer["message"]["tool_calls"]
    assert answer["finish_reason"] == "tool_calls" and answer["message"]["content"] is None
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("get_weather", {"city": "Oslo"})

    events = sse_events(post(gateway, live_key, body | {"stream": True}))
    pieces = [json.loads(data) for name, data in events if name == "tool_call"]
    assert pieces[0]["id"] and pieces[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"city": "Oslo"}
    assert json.loads(events[-1][1])["finish_reason"] == "tool_calls"


def test_a_tool_loop_moves_from_gemini_3_to_openai_midway(gateway, live_key, fake_providers):
    """Gemini 3's signed call ids are long; OpenAI refuses ids over 40 characters, so the id goes
    without its signature (and the tool result's id with it)."""
    signed = "call_abc__thought__" + "A" * 300
    messages = [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "tool_calls": [call_json(signed, "get_weather", '{"city": "Rome"}')]},
        {"role": "tool", "tool_call_id": signed, "content": "21 C"},
    ]

    answer = openai_client(gateway, live_key).chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER]
    )

    assert answer.choices[0].finish_reason == "stop"
    sent = fake_providers["openai"].last_request.json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"] == "call_abc"


def call_json(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
