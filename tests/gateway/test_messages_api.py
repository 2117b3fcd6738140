"""The Anthropic Messages API served by Pulse: the official anthropic SDK against the live gateway,
routed to Claude natively and to OpenAI and Gemini translated, through the one pipeline (limits,
moderation, ledger)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from billing.models import UsageRecord
from gateway.chat_formats import Answered
from gateway.messages import AnthropicStream
from gateway.models import BlockedTerm
from gateway.moderation.hooks.blocklist import reset_blocklist
from providers.clients.base import ChatDelta, ToolCallDelta, Usage
from tests.fakes import FakeToolCall, TokenCounts
from tests.fakes.openai import tiny_png
from tests.helpers import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE, GPT, GEMINI = "claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash"
PROVIDER_OF = {CLAUDE: "anthropic", GPT: "openai", GEMINI: "gemini"}
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK: Any = {"name": "get_time", "description": "The time now", "input_schema": {"type": "object", "properties": {}}}
PARIS = FakeToolCall("get_weather", {"city": "Paris"})
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
EPHEMERAL = {"type": "ephemeral"}


def sdk(gateway: str, key: str, **options: Any) -> anthropic.Anthropic:
    """The official client, pointed at Pulse exactly as a user would (no /v1: the SDK adds it)."""
    return anthropic.Anthropic(base_url=gateway, api_key=key, max_retries=0, timeout=10, **options)


def rows() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("created_at"))


def sent(fake: Any) -> dict[str, Any]:
    """The last chat request the fake received (count_tokens and moderation calls aside)."""
    chats = [r for r in fake.requests if "count" not in r.path.lower() and "moderations" not in r.path]
    return chats[-1].json


def events_of(gateway: str, key: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    response = httpx.post(
        gateway + "/v1/messages", json=body | {"stream": True}, headers={"x-api-key": key}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [(name or "", json.loads(data)) for name, data in sse_events(response)]


def outline(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any]]:
    """The event sequence with runs of deltas of one block collapsed: (event, index or delta type)."""
    shape: list[tuple[str, Any]] = []
    for name, data in events:
        assert data["type"] == name  # the data repeats its event's name, as Anthropic's does
        if name == "content_block_start":
            step: tuple[str, Any] = (name, (data["index"], data["content_block"]["type"]))
        elif name == "content_block_delta":
            step = (name, (data["index"], data["delta"]["type"]))
        elif name == "content_block_stop":
            step = (name, data["index"])
        else:
            step = (name, None)
        if not shape or shape[-1] != step or name != "content_block_delta":
            shape.append(step)
    return shape


# ---------------------------------------------------------------- answers and streams
@pytest.mark.parametrize("model", [CLAUDE, GPT, GEMINI])
def test_a_message_is_answered_in_anthropic_shape_through_each_provider(gateway, live_key, fake_providers, model):
    fake = fake_providers[PROVIDER_OF[model]]
    fake.reply("Hello there", input_tokens=12, output_tokens=2)

    raw = sdk(gateway, live_key).messages.with_raw_response.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )

    message = raw.parse()
    assert [(block.type, block.text) for block in message.content] == [("text", "Hello there")]
    assert (message.model, message.role, message.stop_reason, message.stop_sequence) == (
        model,
        "assistant",
        "end_turn",
        None,
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 2)
    assert raw.headers["x-pulse-provider"] == PROVIDER_OF[model]
    assert raw.request_id == raw.headers["x-request-id"]  # the SDK's own request id, from request-id
    [row] = rows()
    assert message.id == "msg_" + row.request_id.removeprefix("req_") and row.endpoint == "/v1/messages"
    assert "Be brief." in json.dumps(sent(fake))  # the system text reached the provider in its own shape


@pytest.mark.parametrize("model", [CLAUDE, GPT, GEMINI])
def test_a_stream_reaches_the_sdk_text_stream_through_each_provider(gateway, live_key, fake_providers, model):
    fake_providers[PROVIDER_OF[model]].reply("Hello there friend", input_tokens=12, output_tokens=3)

    with sdk(gateway, live_key).messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()

    assert text == "Hello there friend" and message.content[0].text == text
    assert message.stop_reason == "end_turn" and message.model == model
    # message_start cannot know the usage yet; message_delta carries all of it, and the SDK takes it from there.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)
    [row] = rows()
    assert row.status == "succeeded" and message.id == "msg_" + row.request_id.removeprefix("req_")


def test_a_streamed_answer_closes_its_text_block_before_a_tool_use_block_opens(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("Let me look.", tool_calls=[PARIS, FakeToolCall("get_time", {})])

    events = events_of(gateway, live_key, {"model": GPT, "max_tokens": 100, "messages": ASK, "tools": [WEATHER, CLOCK]})

    assert outline(events) == [
        ("message_start", None),
        ("content_block_start", (0, "text")),
        ("content_block_delta", (0, "text_delta")),
        ("content_block_stop", 0),
        ("content_block_start", (1, "tool_use")),
        ("content_block_delta", (1, "input_json_delta")),
        ("content_block_stop", 1),
        ("content_block_start", (2, "tool_use")),
        ("content_block_delta", (2, "input_json_delta")),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [(block.get("name"), block.get("input")) for block in starts[1:]] == [
        ("get_weather", {}),
        ("get_time", {}),
    ]
    arguments = "".join(
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta" and data["index"] == 1
    )
    assert json.loads(arguments) == {"city": "Paris"}
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[0][1]["message"]["usage"]["input_tokens"] == 0  # not known until the end


def test_streamed_thinking_is_its_own_block_sealed_by_its_signature(gateway, live_key, fake_providers):
    fake = fake_providers["anthropic"]
    fake.think("The user wants a greeting.")
    fake.reply("Hello.")

    events = events_of(gateway, live_key, {"model": CLAUDE, "max_tokens": 2048, "messages": ASK, "thinking": THINKING})

    assert outline(events) == [
        ("message_start", None),
        ("content_block_start", (0, "thinking")),
        ("content_block_delta", (0, "thinking_delta")),
        ("content_block_delta", (0, "signature_delta")),
        ("content_block_stop", 0),
        ("content_block_start", (1, "text")),
        ("content_block_delta", (1, "text_delta")),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    signature = [data["delta"] for name, data in events if data.get("delta", {}).get("type") == "signature_delta"]
    assert signature == [{"type": "signature_delta", "signature": fake.sign("The user wants a greeting.")}]


# ---------------------------------------------------------------- tool loops
def tool_result_reached(model: str, fake: Any, call_id: str) -> None:
    """The provider got the call and its result in its own shape."""
    body = sent(fake)
    if model == CLAUDE:
        assistant, result = body["messages"][1:3]
        assert assistant["content"][-1] == {
            "type": "tool_use",
            "id": call_id,
            "name": "get_weather",
            "input": {"city": "Paris"},
        }
        assert result["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "21 C and sunny"}]
    elif model == GPT:
        assistant, result = body["messages"][1:3]
        assert [(c["id"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]] == [
            (call_id, {"city": "Paris"})
        ]
        assert result == {"role": "tool", "tool_call_id": call_id, "content": "21 C and sunny"}
    else:
        model_turn, result = body["contents"][1:3]
        assert [part["functionCall"]["args"] for part in model_turn["parts"]] == [{"city": "Paris"}]
        [response] = result["parts"]
        assert response["functionResponse"]["name"] == "get_weather"
        assert "21 C and sunny" in json.dumps(response["functionResponse"]["response"])


def ask_once(client: anthropic.Anthropic, stream: bool, **request: Any) -> Any:
    if not stream:
        return client.messages.create(**request)
    with client.messages.stream(**request) as events:
        return events.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", [CLAUDE, GPT, GEMINI])
def test_a_tool_loop_runs_through_each_provider(gateway, live_key, fake_providers, model, stream):
    fake, client = fake_providers[PROVIDER_OF[model]], sdk(gateway, live_key)
    fake.reply(tool_calls=[PARIS])

    first = ask_once(client, stream, model=model, max_tokens=500, messages=ASK, tools=[WEATHER])

    assert first.stop_reason == "tool_use"
    [call] = [block for block in first.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"}) and call.id

    fake.reply("It is sunny in Paris.")
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C and sunny"}],
    }
    history: Any = [*ASK, {"role": "assistant", "content": first.content}, result]
    final = ask_once(client, stream, model=model, max_tokens=500, messages=history, tools=[WEATHER])

    assert [(block.type, block.text) for block in final.content] == [("text", "It is sunny in Paris.")]
    assert final.stop_reason == "end_turn"
    tool_result_reached(model, fake, call.id)
    assert len(rows()) == 2


def test_tool_choice_and_single_calls_reach_claude_in_its_own_terms(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply(tool_calls=[PARIS])
    choice: Any = {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}

    sdk(gateway, live_key).messages.create(
        model=CLAUDE, max_tokens=100, messages=ASK, tools=[WEATHER, CLOCK], tool_choice=choice
    )

    assert sent(fake_providers["anthropic"])["tool_choice"] == choice


def test_any_tool_choice_is_required_at_openai(gateway, live_key, fake_providers):
    fake_providers["openai"].reply(tool_calls=[PARIS])

    sdk(gateway, live_key).messages.create(
        model=GPT, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
    )

    body = sent(fake_providers["openai"])
    assert body["tool_choice"] == "required" and body["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_a_turn_of_several_results_and_text_reaches_openai_as_tool_messages_then_the_text(
    gateway, live_key, fake_providers
):
    calls: Any = {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
    }
    results: Any = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21 C"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon", "is_error": False},
            {"type": "text", "text": "And be quick."},
        ],
    }

    sdk(gateway, live_key).messages.create(
        model=GPT, max_tokens=100, messages=[*ASK, calls, results], tools=[WEATHER, CLOCK]
    )

    messages = sent(fake_providers["openai"])["messages"]
    assert [(m["role"], m.get("tool_call_id"), m["content"]) for m in messages[2:]] == [
        ("tool", "toolu_1", "21 C"),
        ("tool", "toolu_2", "noon"),
        ("user", None, "And be quick."),
    ]


def test_a_failed_tool_result_reaches_claude_marked_as_an_error(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply("Sorry.")
    calls: Any = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }
    failed: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "timed out", "is_error": True}],
    }

    sdk(gateway, live_key).messages.create(
        model=CLAUDE, max_tokens=100, messages=[*ASK, calls, failed], tools=[WEATHER]
    )

    assert sent(fake_providers["anthropic"])["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "timed out", "is_error": True}
    ]


# ---------------------------------------------------------------- thinking
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_signed_thinking_comes_back_to_claude_unchanged_in_a_tool_loop(gateway, live_key, fake_providers, stream):
    fake, client = fake_providers["anthropic"], sdk(gateway, live_key)
    fake.think("Paris, so get_weather.")
    fake.reply(tool_calls=[PARIS])
    request: Any = {"model": CLAUDE, "max_tokens": 2048, "tools": [WEATHER], "thinking": THINKING}

    first = ask_once(client, stream, messages=ASK, **request)

    thought, call = first.content
    assert (thought.type, thought.thinking) == ("thinking", "Paris, so get_weather.")
    assert thought.signature == fake.sign("Paris, so get_weather.")
    assert sent(fake)["thinking"] == THINKING

    # The fake refuses a tool loop turn that does not start with the thinking it signed, unchanged.
    fake.reply("Sunny.")
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}
    final = ask_once(
        client, stream, messages=[*ASK, {"role": "assistant", "content": first.content}, result], **request
    )

    assert [block.type for block in final.content] == ["thinking", "text"]
    assert sent(fake)["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Paris, so get_weather.",
        "signature": fake.sign("Paris, so get_weather."),
    }


def test_redacted_thinking_comes_back_to_claude_as_the_data_it_was(gateway, live_key, fake_providers):
    fake, client = fake_providers["anthropic"], sdk(gateway, live_key)
    fake.think("Withheld reasoning.", redacted=True)
    fake.reply(tool_calls=[PARIS])
    request: Any = {"model": CLAUDE, "max_tokens": 2048, "tools": [WEATHER], "thinking": THINKING}

    first = client.messages.create(messages=ASK, **request)

    redacted, call = first.content
    assert redacted.type == "redacted_thinking" and redacted.data
    fake.reply("Sunny.")
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}
    client.messages.create(messages=[*ASK, {"role": "assistant", "content": first.content}, result], **request)
    assert sent(fake)["messages"][1]["content"][0] == {"type": "redacted_thinking", "data": redacted.data}


def test_streamed_redacted_thinking_comes_back_to_claude_as_the_data_it_was(gateway, live_key, fake_providers):
    """Claude Code streams: a redacted block lost on the way would fail its next turn at Anthropic."""
    fake, client = fake_providers["anthropic"], sdk(gateway, live_key)
    fake.think("Withheld reasoning.", redacted=True)
    fake.reply(tool_calls=[PARIS])
    request: Any = {"model": CLAUDE, "max_tokens": 2048, "tools": [WEATHER], "thinking": THINKING}

    with client.messages.stream(messages=ASK, **request) as stream:
        first = stream.get_final_message()

    redacted, call = first.content
    assert redacted.type == "redacted_thinking" and redacted.data
    fake.reply("Sunny.")
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}
    client.messages.create(messages=[*ASK, {"role": "assistant", "content": first.content}, result], **request)
    assert sent(fake)["messages"][1]["content"][0] == {"type": "redacted_thinking", "data": redacted.data}


def test_a_thinking_budget_reaches_gemini_and_disabled_thinking_sends_none(gateway, live_key, fake_providers):
    client = sdk(gateway, live_key)

    client.messages.create(
        model=GEMINI, max_tokens=4096, messages=ASK, thinking={"type": "enabled", "budget_tokens": 2048}
    )
    assert sent(fake_providers["gemini"])["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 2048

    client.messages.create(model=CLAUDE, max_tokens=100, messages=ASK, thinking={"type": "disabled"})
    assert "thinking" not in sent(fake_providers["anthropic"])


def test_claude_codes_adaptive_thinking_and_context_management_are_taken(gateway, live_key, fake_providers):
    """What Claude Code sends on every request: adaptive thinking (sometimes with a budget of 0) and its
    effort, and context_management, which it cannot be told to leave out."""
    fake = fake_providers["anthropic"]
    extra = {"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}}

    sdk(gateway, live_key).messages.create(
        model=CLAUDE,
        max_tokens=4096,
        messages=ASK,
        thinking={"type": "adaptive", "budget_tokens": 0},
        output_config={"effort": "xhigh"},
        extra_body=extra,
    )

    body = sent(fake)
    # The effort (high, on Pulse's scale) as a thinking budget: half of max_tokens, leaving the rest for the answer.
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "context_management" not in body and "output_config" not in body


def test_adaptive_thinking_without_an_effort_is_left_to_the_provider(gateway, live_key, fake_providers):
    sdk(gateway, live_key).messages.create(model=GEMINI, max_tokens=100, messages=ASK, thinking={"type": "adaptive"})

    assert "thinkingConfig" not in sent(fake_providers["gemini"]).get("generationConfig", {})


# ---------------------------------------------------------------- prompt caching
def test_cache_breakpoints_reach_claude_on_the_blocks_that_carried_them(gateway, live_key, fake_providers):
    system: Any = [
        {"type": "text", "text": "You are a weather bot.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Today is Monday."},
    ]
    turn: Any = {
        "role": "user",
        "content": [
            {"type": "text", "text": "A long shared document.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "Weather in Paris?"},
        ],
    }

    sdk(gateway, live_key).messages.create(
        model=CLAUDE,
        max_tokens=100,
        system=system,
        messages=[turn],
        tools=[WEATHER, {**CLOCK, "cache_control": EPHEMERAL}],
    )

    body = sent(fake_providers["anthropic"])
    assert body["system"] == system
    assert [tool.get("cache_control") for tool in body["tools"]] == [None, EPHEMERAL]
    blocks = [
        block
        for message in body["messages"]
        for block in (message["content"] if isinstance(message["content"], list) else [{"text": message["content"]}])
    ]
    assert [(block["text"], block.get("cache_control")) for block in blocks] == [
        ("A long shared document.", {"type": "ephemeral", "ttl": "1h"}),
        ("Weather in Paris?", None),
    ]


def test_a_top_level_cache_control_marks_the_last_block(gateway, live_key, fake_providers):
    sdk(gateway, live_key).messages.create(
        model=CLAUDE, max_tokens=100, messages=ASK, extra_body={"cache_control": EPHEMERAL}
    )

    [message] = sent(fake_providers["anthropic"])["messages"]
    assert message["content"] == [{"type": "text", "text": "Weather in Paris?", "cache_control": EPHEMERAL}]


def test_usage_counts_input_as_anthropic_does_and_the_ledger_prices_each_kind(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply(
        "ok", input_tokens=1000, output_tokens=10, counts=TokenCounts(cached=600, cache_write=300)
    )

    raw = sdk(gateway, live_key).messages.with_raw_response.create(model=CLAUDE, max_tokens=100, messages=ASK)

    usage = raw.parse().usage
    # Anthropic's input_tokens leaves out the cache reads and writes (Pulse's ledger counts the whole prompt).
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (100, 600, 300)
    [row] = rows()
    assert (row.input_tokens, row.cached_input_tokens, row.cache_write_input_tokens) == (1000, 600, 300)
    # 100 x $3 + 600 x $0.30 + 300 x $3.75 + 10 x $15, per million tokens
    assert row.cost_usd == Decimal("0.001755") == Decimal(raw.headers["x-pulse-cost-usd"])


# ---------------------------------------------------------------- images
PNG = tiny_png()
PNG_BLOCK: Any = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
}
URL_BLOCK: Any = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}


def test_images_reach_claude_as_image_blocks_in_their_place(gateway, live_key, fake_providers):
    turn: Any = {"role": "user", "content": [PNG_BLOCK, {"type": "text", "text": "And this one?"}, URL_BLOCK]}

    sdk(gateway, live_key).messages.create(model=CLAUDE, max_tokens=100, messages=[turn])

    [message] = sent(fake_providers["anthropic"])["messages"]
    assert message["content"] == [PNG_BLOCK, {"type": "text", "text": "And this one?"}, URL_BLOCK]


def test_images_reach_openai_as_image_url_parts(gateway, live_key, fake_providers):
    turn: Any = {"role": "user", "content": [{"type": "text", "text": "What is it?"}, PNG_BLOCK, URL_BLOCK]}

    sdk(gateway, live_key).messages.create(model=GPT, max_tokens=100, messages=[turn])

    [message] = sent(fake_providers["openai"])["messages"]
    assert [part.get("image_url", {}).get("url") or part["text"] for part in message["content"]] == [
        "What is it?",
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "https://example.com/cat.png",
    ]


def test_an_image_that_is_not_base64_is_refused_naming_it(gateway, live_key, fake_providers):
    broken: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}

    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(gateway, live_key).messages.create(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": [broken]}]
        )

    assert refused.value.body["error"]["param"] == "messages.0.content.0.source.data"
    assert fake_providers["anthropic"].calls == 0


# ---------------------------------------------------------------- errors, limits, moderation
def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body: Any = exc.body
    assert isinstance(body, dict) and body["type"] == "error"
    return body["error"]


def test_an_unknown_model_is_the_sdk_not_found_error(gateway, live_key, fake_providers):
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(gateway, live_key).messages.create(model="no-such-model", max_tokens=100, messages=ASK)

    error = error_of(missing.value)
    assert (error["type"], error["code"], error["param"]) == ("not_found_error", "model_not_found", "model")


def test_a_request_without_max_tokens_is_a_bad_request_naming_it(gateway, live_key, fake_providers):
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(gateway, live_key).post("/v1/messages", cast_to=object, body={"model": CLAUDE, "messages": ASK})

    error = error_of(refused.value)
    assert (error["type"], error["param"]) == ("invalid_request_error", "max_tokens")
    assert "max_tokens" in error["message"]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"frobnicate": 1}, "frobnicate", "not a field this endpoint takes"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type", "web_search"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "thinking.budget_tokens", "1024"),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name", "nope"),
        ({"temperature": 1.5}, "temperature", "1"),
        ({"mcp_servers": []}, "mcp_servers", "not supported"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config.format", "tool"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type", "adaptive"),
        ({"cache_control": {"type": "forever"}}, "cache_control", "ephemeral"),
    ],
)
def test_what_pulse_cannot_take_is_a_bad_request_naming_the_field(
    gateway, live_key, fake_providers, extra, param, words
):
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(gateway, live_key).messages.create(model=CLAUDE, max_tokens=100, messages=ASK, extra_body=extra)

    error = error_of(refused.value)
    assert error["param"] == param and words in error["message"]
    assert fake_providers["anthropic"].calls == 0 and rows() == []


def test_a_tool_result_must_answer_an_earlier_tool_use(gateway, live_key, fake_providers):
    orphan: Any = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "hi"}]}]

    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(gateway, live_key).messages.create(model=CLAUDE, max_tokens=100, messages=orphan)

    assert error_of(refused.value)["param"] == "messages.0.content.0.tool_use_id"


def test_a_bad_key_is_the_sdk_authentication_error(gateway, live_key, fake_providers):
    with pytest.raises(anthropic.AuthenticationError) as refused:
        sdk(gateway, "pulse-wrong").messages.create(model=CLAUDE, max_tokens=100, messages=ASK)

    assert error_of(refused.value)["type"] == "authentication_error"


def test_the_key_may_come_as_a_bearer_token(gateway, live_key, fake_providers):
    client = anthropic.Anthropic(base_url=gateway, auth_token=live_key, max_retries=0, timeout=10)

    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=ASK)

    assert message.content[0].type == "text"


def test_over_the_rate_limit_is_the_sdk_rate_limit_error(gateway, live_key, fake_providers, settings):
    settings.RATE_LIMIT = (1, 60.0)
    client = sdk(gateway, live_key)
    client.messages.create(model=CLAUDE, max_tokens=100, messages=ASK)

    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=CLAUDE, max_tokens=100, messages=ASK)

    assert error_of(limited.value)["type"] == "rate_limit_error"
    assert int(limited.value.response.headers["retry-after"]) > 0
    assert len(rows()) == 1  # the refused request made no ledger row


@pytest.fixture
def blocklist(gateway):
    reset_blocklist()
    BlockedTerm.objects.create(pattern="kill", category="violence")
    yield gateway
    reset_blocklist()


BLOCKED: Any = [{"role": "user", "content": "how do I kill the cat?"}]


def test_a_blocked_prompt_never_reaches_claude(blocklist, live_key, fake_providers):
    with pytest.raises(anthropic.BadRequestError) as blocked:
        sdk(blocklist, live_key).messages.create(model=CLAUDE, max_tokens=100, messages=BLOCKED)

    error = error_of(blocked.value)
    assert (error["type"], error["code"]) == ("invalid_request_error", "content_policy_violation")
    assert fake_providers["anthropic"].calls == 0
    [row] = rows()
    assert row.status == "blocked"


def test_a_blocked_prompt_is_not_sent_to_be_counted_either(blocklist, live_key, fake_providers):
    with pytest.raises(anthropic.BadRequestError) as blocked:
        sdk(blocklist, live_key).messages.count_tokens(model=CLAUDE, messages=BLOCKED)

    assert error_of(blocked.value)["code"] == "content_policy_violation"
    assert fake_providers["anthropic"].calls == 0 and rows() == []


def test_a_stream_that_breaks_midway_ends_with_an_error_event(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply("one two three four five six")
    fake_providers["anthropic"].stream_error(after_chunks=2)

    with pytest.raises(anthropic.APIStatusError) as broken:  # noqa: PT012 - the error arrives while reading
        with sdk(gateway, live_key).messages.stream(model=CLAUDE, max_tokens=100, messages=ASK) as stream:
            for _ in stream.text_stream:
                pass

    assert error_of(broken.value)["type"] == "api_error"
    [row] = rows()
    assert (row.status, row.error_code) == ("failed", "stream_interrupted")


# ---------------------------------------------------------------- the ledger
def test_each_request_makes_one_ledger_row_at_the_price_of_what_it_used(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply("Hi there", input_tokens=1000, output_tokens=2000)
    client = sdk(gateway, live_key)

    plain = client.messages.create(model=CLAUDE, max_tokens=3000, messages=ASK)
    with client.messages.stream(model=CLAUDE, max_tokens=3000, messages=ASK) as stream:
        streamed = stream.get_final_message()

    assert [(row.status, row.model, row.provider, row.cost_usd) for row in rows()] == [
        ("succeeded", CLAUDE, "anthropic", Decimal("0.033")),  # 1000 x $3 + 2000 x $15 per million
        ("succeeded", CLAUDE, "anthropic", Decimal("0.033")),
    ]
    assert [row.request_id.removeprefix("req_") for row in rows()] == [
        plain.id.removeprefix("msg_"),
        streamed.id.removeprefix("msg_"),
    ]


# ---------------------------------------------------------------- count_tokens
@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_count_tokens_asks_the_models_provider_and_bills_nothing(gateway, live_key, fake_providers, model):
    fake = fake_providers[PROVIDER_OF[model]]
    fake.reply(input_tokens=321)

    counted = sdk(gateway, live_key).messages.count_tokens(
        model=model, system="Be brief.", messages=ASK, tools=[WEATHER]
    )

    assert counted.input_tokens == 321
    [request] = fake.requests
    assert "count" in request.path.lower() and "get_weather" in json.dumps(request.json)
    assert rows() == []


def test_count_tokens_for_a_provider_that_cannot_count_is_a_bad_request(gateway, live_key, fake_providers):
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(gateway, live_key).messages.count_tokens(model=GPT, messages=ASK)

    error = error_of(refused.value)
    assert error["param"] == "model" and "not supported" in error["message"]
    assert fake_providers["openai"].calls == 0


def test_count_tokens_takes_no_max_tokens(gateway, live_key, fake_providers):
    body = {"model": CLAUDE, "messages": ASK, "max_tokens": 10}

    response = httpx.post(gateway + "/v1/messages/count_tokens", json=body, headers={"x-api-key": live_key})

    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"
    assert response.json()["type"] == "error"


# ---------------------------------------------------------------- the renderer, directly
def rendered(deltas: list[ChatDelta], finish_reason: str = "stop") -> list[tuple[str, dict[str, Any]]]:
    stream = AnthropicStream(Answered("req_abc", CLAUDE, "anthropic", CLAUDE, 0), include_usage=True)
    raw = stream.start() + b"".join(stream.delta(d) for d in deltas) + stream.end(finish_reason, Usage(), Decimal(0))
    frames = [frame.split("\n", 1) for frame in raw.decode().split("\n\n") if frame]
    return [(name.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for name, data in frames]


def test_each_signed_thinking_block_is_its_own_block():
    events = rendered(
        [
            ChatDelta(reasoning="First thought."),
            ChatDelta(reasoning_signature="sig-1"),
            ChatDelta(reasoning="Second thought."),
            ChatDelta(reasoning_signature="sig-2"),
            ChatDelta(content="Answer."),
        ]
    )

    starts = [(data["index"], data["content_block"]["type"]) for name, data in events if name == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "thinking"), (2, "text")]
    signatures = [(d["index"], d["delta"]["signature"]) for n, d in events if d.get("delta", {}).get("signature")]
    assert signatures == [(0, "sig-1"), (1, "sig-2")]
    assert events[0][1]["message"]["id"] == "msg_abc"


@pytest.mark.parametrize(
    ("finish_reason", "calls", "expected"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("content_filter", False, "refusal"),
        ("tool_calls", True, "tool_use"),
        ("stop", True, "tool_use"),  # a provider that ends a call with "stop" (Gemini's STOP)
        ("length", True, "max_tokens"),  # cut off mid-call: the call is not whole
    ],
)
def test_stop_reasons_in_anthropic_words(finish_reason, calls, expected):
    deltas = [ChatDelta(tool_calls=(ToolCallDelta(0, "call_1", "get_time", "{}"),))] if calls else []

    assert rendered(deltas, finish_reason)[-2][1]["delta"]["stop_reason"] == expected
