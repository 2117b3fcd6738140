"""The Anthropic client's chat features against FakeAnthropic (real HTTP on 127.0.0.1): tool loops,
streamed tool use, signed thinking sent back unchanged, images, structured output by a forced tool,
cache breakpoints, token counting, and the fields Anthropic cannot honour. The official `anthropic`
SDK talks to the fake directly at the end: proof that the fake speaks the protocol the client is
tested against."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from providers.clients.base import (
    STOP,
    TOOL_CALLS,
    ChatDelta,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ProviderClient,
    ProviderError,
    Reasoning,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from providers.http import close_shared_session
from tests.fakes import FakeAnthropic, FakeToolCall
from tests.providers.test_clients import client_of, collect

MODEL = "claude-sonnet-4-5"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
WEATHER = Tool(
    "get_weather",
    "The weather in a city now",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    strict=True,
)
CLOCK = Tool("get_time")  # no parameters
ASK = ChatMessage("user", "What is the weather in Paris and the time?")
TOOL_ASK = ChatRequest(messages=(ASK,), tools=(WEATHER, CLOCK))
THINKING_ASK = ChatRequest(messages=(ASK,), tools=(WEATHER,), reasoning_effort="low")
PARIS = FakeToolCall("get_weather", {"city": "Paris"})
REPORT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
REPORT = ResponseFormat("json_schema", REPORT_SCHEMA, name="weather_report", strict=True)


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start() as fake:
        yield fake


@pytest.fixture
def ant(anthropic_server: FakeAnthropic) -> FakeAnthropic:
    anthropic_server.reset()
    return anthropic_server


@pytest.fixture
def client(ant: FakeAnthropic) -> ProviderClient:
    return client_of(ant)


@pytest.fixture(autouse=True)
async def _close_session() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await close_shared_session()


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    received = fake.last_request
    assert received is not None
    return dict(received.json)


def assistant_turn(result: ChatResult) -> ChatMessage:
    """The answer as the next request's history carries it (what a client sends back)."""
    return ChatMessage("assistant", result.content, tool_calls=result.tool_calls, reasoning=result.reasoning)


def streamed_turn(deltas: list[ChatDelta]) -> tuple[ChatMessage, str | None]:
    """A stream's pieces put together (as Pulse's Anthropic API will) and its finish reason."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            call["name"] = piece.name or call["name"]
            call["arguments"] += piece.arguments
    signature = next((d.reasoning_signature for d in deltas if d.reasoning_signature), None)
    thought = "".join(d.reasoning for d in deltas)
    message = ChatMessage(
        "assistant",
        "".join(d.content for d in deltas),
        tool_calls=tuple(ToolCall(**calls[index]) for index in sorted(calls)),
        reasoning=(Reasoning(thought, signature),) if thought else (),
    )
    return message, deltas[-1].finish_reason


def tool_results(*calls: ToolCall, error: bool = False) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage("tool", f"result of {c.name}", tool_call_id=c.id, is_error=error) for c in calls)


# ---- tools -------------------------------------------------------------------------------------


async def test_a_tool_loop_sends_every_result_in_one_user_message_and_the_fake_accepts_it(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.reply(tool_calls=[PARIS, FakeToolCall("get_time", {})])
    first = await client.complete(TOOL_ASK, model=MODEL)
    assert first.finish_reason == TOOL_CALLS and first.content == ""
    assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert all(call.id.startswith("toolu_") for call in first.tool_calls)
    weather, clock = first.tool_calls

    ant.reply("Sunny, and it is noon.")
    history = (ASK, assistant_turn(first), *tool_results(weather), *tool_results(clock, error=True))
    follow_up = ChatMessage("user", "Anything else?")
    second = await client.complete(dataclasses.replace(TOOL_ASK, messages=(*history, follow_up)), model=MODEL)

    assert second.content == "Sunny, and it is noon."
    body = sent(ant)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": weather.id, "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": clock.id, "name": "get_time", "input": {}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": weather.id, "content": "result of get_weather"},
        {"type": "tool_result", "tool_use_id": clock.id, "content": "result of get_time", "is_error": True},
        {"type": "text", "text": "Anything else?"},
    ]


async def test_tools_are_sent_with_input_schemas_and_without_strict(ant: FakeAnthropic, client: ProviderClient) -> None:
    await client.complete(TOOL_ASK, model=MODEL)
    assert sent(ant)["tools"] == [
        {"name": "get_weather", "description": "The weather in a city now", "input_schema": WEATHER.parameters},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent(ant)  # Anthropic's default is auto


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("tool", "get_time"), None, {"type": "tool", "name": "get_time"}),
        (ToolChoice("none"), False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
async def test_tool_choice_and_parallel_calls_in_anthropic_terms(
    ant: FakeAnthropic, client: ProviderClient, choice: ToolChoice | None, parallel: bool | None, wire: dict[str, Any]
) -> None:
    if choice is not None and choice.mode != "none":
        ant.reply(tool_calls=[FakeToolCall("get_time", {})])
    request = dataclasses.replace(TOOL_ASK, tool_choice=choice, parallel_tool_calls=parallel)
    await client.complete(request, model=MODEL)
    assert sent(ant)["tool_choice"] == wire


async def test_streamed_tool_use_arrives_as_tool_call_pieces_by_call_index(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.reply("Let me look.", tool_calls=[PARIS, FakeToolCall("get_time", {"zone": "Europe/Paris"})])
    deltas = await collect(client.stream(TOOL_ASK, model=MODEL))
    heads = [piece for delta in deltas for piece in delta.tool_calls if piece.id]
    assert [(head.index, head.name) for head in heads] == [(0, "get_weather"), (1, "get_time")]
    message, finish = streamed_turn(deltas)
    assert finish == TOOL_CALLS and message.content == "Let me look."
    assert [json.loads(call.arguments) for call in message.tool_calls] == [{"city": "Paris"}, {"zone": "Europe/Paris"}]
    assert all(len(d.tool_calls) <= 1 for d in deltas) and sum(bool(d.tool_calls) for d in deltas) > 4


# ---- thinking ----------------------------------------------------------------------------------


async def test_signed_thinking_goes_back_unchanged_before_the_tool_call(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.think("The user wants Paris weather.")
    ant.reply(tool_calls=[PARIS])
    first = await client.complete(THINKING_ASK, model=MODEL)
    assert sent(ant)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert first.reasoning == (Reasoning("The user wants Paris weather.", ant.sign("The user wants Paris weather.")),)

    ant.reply("Sunny.")
    history = (ASK, assistant_turn(first), *tool_results(*first.tool_calls))
    second = await client.complete(dataclasses.replace(THINKING_ASK, messages=history), model=MODEL)
    assert second.content == "Sunny."
    blocks = sent(ant)["messages"][1]["content"]
    assert [block["type"] for block in blocks] == ["thinking", "tool_use"]
    assert blocks[0]["signature"] == first.reasoning[0].signature


async def test_thinking_altered_on_the_way_back_is_refused(ant: FakeAnthropic, client: ProviderClient) -> None:
    ant.reply(tool_calls=[PARIS])
    first = await client.complete(THINKING_ASK, model=MODEL)
    altered = dataclasses.replace(first, reasoning=(dataclasses.replace(first.reasoning[0], text="Something else."),))
    history = (ASK, assistant_turn(altered), *tool_results(*first.tool_calls))
    with pytest.raises(ProviderError) as caught:
        await client.complete(dataclasses.replace(THINKING_ASK, messages=history), model=MODEL)
    assert caught.value.status == 400 and "signature" in caught.value.message


async def test_streamed_thinking_and_its_signature_make_a_turn_the_fake_accepts_back(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.think("Paris, so get_weather.")
    ant.reply(tool_calls=[PARIS])
    deltas = await collect(client.stream(THINKING_ASK, model=MODEL))
    thinking = [d for d in deltas if d.reasoning]
    assert len(thinking) > 1 and all(not d.content and not d.tool_calls for d in thinking)
    message, _ = streamed_turn(deltas)
    assert message.reasoning == (Reasoning("Paris, so get_weather.", ant.sign("Paris, so get_weather.")),)

    ant.reply("Sunny.")
    history = (ASK, message, *tool_results(*message.tool_calls))
    deltas = await collect(client.stream(dataclasses.replace(THINKING_ASK, messages=history), model=MODEL))
    assert "".join(d.content for d in deltas) == "Sunny." and deltas[-1].finish_reason == STOP


async def test_redacted_thinking_comes_back_as_the_opaque_data_it_was(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.think("Withheld reasoning.", redacted=True)
    ant.reply(tool_calls=[PARIS])
    first = await client.complete(THINKING_ASK, model=MODEL)
    (redacted,) = first.reasoning
    assert redacted.redacted and redacted.signature is None and "Withheld" not in redacted.text

    history = (ASK, assistant_turn(first), *tool_results(*first.tool_calls))
    await client.complete(dataclasses.replace(THINKING_ASK, messages=history), model=MODEL)
    assert sent(ant)["messages"][1]["content"][0] == {"type": "redacted_thinking", "data": redacted.text}


async def test_thinking_from_another_provider_is_left_out(ant: FakeAnthropic, client: ProviderClient) -> None:
    unsigned = ChatMessage("assistant", "Hello.", reasoning=(Reasoning("Another model's thoughts."),))
    await client.complete(ChatRequest(messages=(ASK, unsigned, ChatMessage("user", "Hi"))), model=MODEL)
    assert sent(ant)["messages"][1]["content"] == "Hello."


@pytest.mark.parametrize(
    ("effort", "budget", "max_tokens", "thinking"),
    [
        ("minimal", None, None, None),
        ("low", None, None, {"type": "enabled", "budget_tokens": 1024}),
        ("medium", None, 16000, {"type": "enabled", "budget_tokens": 4096}),
        ("high", None, 64000, {"type": "enabled", "budget_tokens": 16384}),
        # An effort leaves half of max_tokens for the answer: the default 4096 still serves "high".
        ("high", None, None, {"type": "enabled", "budget_tokens": 2048}),
        (None, 3000, 8000, {"type": "enabled", "budget_tokens": 3000}),  # a budget in tokens is sent as is
        ("high", 0, None, None),  # a zero budget turns thinking off
    ],
)
async def test_reasoning_effort_becomes_a_thinking_budget(
    ant: FakeAnthropic,
    client: ProviderClient,
    effort: str | None,
    budget: int | None,
    max_tokens: int | None,
    thinking: dict[str, Any] | None,
) -> None:
    request = ChatRequest(messages=(ASK,), reasoning_effort=effort, thinking_budget=budget, max_tokens=max_tokens)
    assert client.unsupported_param(request, model=MODEL) is None
    result = await client.complete(request, model=MODEL)
    assert sent(ant).get("thinking") == thinking
    assert bool(result.reasoning) == (thinking is not None)


# ---- images, cache breakpoints, request fields --------------------------------------------------


async def test_images_go_as_base64_or_url_blocks_in_their_place(ant: FakeAnthropic, client: ProviderClient) -> None:
    parts = (
        "Compare",
        ChatImage(content_type="image/png", data=PNG, detail="high"),
        "with",
        ChatImage(url="https://example.com/cat.jpg"),
    )
    message = ChatMessage("user", "Compare with", parts=parts)
    await client.complete(ChatRequest(messages=(message,)), model=MODEL)
    assert sent(ant)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAA"},
        },
        {"type": "text", "text": "with"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_an_image_whose_bytes_are_not_its_type_is_refused(ant: FakeAnthropic, client: ProviderClient) -> None:
    mislabelled = ChatMessage("user", "", parts=(ChatImage(content_type="image/png", data=JPEG),))
    with pytest.raises(ProviderError) as caught:
        await client.complete(ChatRequest(messages=(mislabelled,)), model=MODEL)
    assert caught.value.status == 400 and "appears to be a image/jpeg image" in caught.value.message


async def test_cache_breakpoints_go_on_the_last_block_of_their_message_and_tool(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ephemeral, hour = {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}
    ant.reply(tool_calls=[PARIS])
    first = await client.complete(TOOL_ASK, model=MODEL)
    messages = (
        ChatMessage("system", "You are terse."),
        ChatMessage("system", "Long shared instructions.", cache_control=hour),
        ChatMessage(
            "user", "Look", parts=("Look", ChatImage(content_type="image/png", data=PNG)), cache_control=ephemeral
        ),
        assistant_turn(first),
        dataclasses.replace(tool_results(*first.tool_calls)[0], cache_control=ephemeral),
    )
    tools = (dataclasses.replace(WEATHER, cache_control=ephemeral), CLOCK)
    await client.complete(ChatRequest(messages=messages, tools=tools), model=MODEL)
    body = sent(ant)
    assert body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Long shared instructions.", "cache_control": hour},
    ]
    assert body["tools"][0]["cache_control"] == ephemeral and "cache_control" not in body["tools"][1]
    user, _, results = body["messages"]
    assert [("cache_control" in block) for block in user["content"]] == [False, True]
    assert results["content"][0]["cache_control"] == ephemeral


async def test_user_becomes_metadata_top_k_passes_and_seed_is_dropped(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    request = ChatRequest(messages=(ASK,), user="user-1234", top_k=40, seed=7, stop=("END",))
    await client.complete(request, model=MODEL)
    body = sent(ant)
    assert body["metadata"] == {"user_id": "user-1234"} and body["top_k"] == 40 and body["stop_sequences"] == ["END"]
    assert "seed" not in body and "user" not in body


# ---- structured output --------------------------------------------------------------------------


async def test_json_schema_is_answered_through_a_forced_tool_as_text(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.reply(tool_calls=[FakeToolCall("weather_report", {"city": "Paris", "celsius": 21})])
    request = ChatRequest(messages=(ASK,), response_format=REPORT)
    result = await client.complete(request, model=MODEL)
    assert json.loads(result.content) == {"city": "Paris", "celsius": 21}
    assert (result.finish_reason, result.tool_calls) == (STOP, ())
    body = sent(ant)
    assert body["tools"][0]["name"] == "weather_report" and body["tools"][0]["input_schema"] == REPORT_SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "weather_report", "disable_parallel_tool_use": True}


async def test_streamed_json_schema_answer_arrives_as_content_pieces(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    ant.reply(tool_calls=[FakeToolCall("weather_report", {"city": "Paris", "celsius": 21})])
    deltas = await collect(client.stream(ChatRequest(messages=(ASK,), response_format=REPORT), model=MODEL))
    assert sum(bool(d.content) for d in deltas) > 2 and not any(d.tool_calls for d in deltas)
    assert json.loads("".join(d.content for d in deltas)) == {"city": "Paris", "celsius": 21}
    assert deltas[-1].finish_reason == STOP


async def test_json_object_forces_a_tool_taking_any_object(ant: FakeAnthropic, client: ProviderClient) -> None:
    ant.reply(tool_calls=[FakeToolCall("response", {"answer": 42})])
    result = await client.complete(
        ChatRequest(messages=(ASK,), response_format=ResponseFormat("json_object")), model=MODEL
    )
    assert json.loads(result.content) == {"answer": 42}
    assert sent(ant)["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


# ---- count_tokens ------------------------------------------------------------------------------


async def test_count_tokens_counts_the_prompt_as_a_message_call_would(
    ant: FakeAnthropic, client: ProviderClient
) -> None:
    request = ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ASK),
        tools=(WEATHER,),
        max_tokens=100,
        temperature=0.5,
        stop=("END",),
        user="u1",
    )
    counted = await client.count_tokens(request, model=MODEL)
    received = ant.last_request
    assert received is not None and received.path == "/v1/messages/count_tokens"
    assert set(received.json) == {"model", "messages", "system", "tools"}
    result = await client.complete(request, model=MODEL)
    assert counted == result.usage.input_tokens == 11


# ---- what Anthropic cannot do -------------------------------------------------------------------

THINKING = ChatRequest(messages=(ASK,), reasoning_effort="low")
UNSUPPORTED = {
    "n": ChatRequest(messages=(ASK,), n=2),
    "logprobs": ChatRequest(messages=(ASK,), logprobs=True),
    "top_logprobs": ChatRequest(messages=(ASK,), top_logprobs=3),
    "presence_penalty": ChatRequest(messages=(ASK,), presence_penalty=0.5),
    "frequency_penalty": ChatRequest(messages=(ASK,), frequency_penalty=-0.5),
    "temperature": ChatRequest(messages=(ASK,), temperature=1.5),
    "response_format": dataclasses.replace(TOOL_ASK, response_format=REPORT),
    "reasoning_effort": ChatRequest(messages=(ASK,), reasoning_effort="extreme"),
    "messages.0.content": ChatRequest(
        messages=(ChatMessage("user", "", parts=(ChatImage(content_type="image/bmp", data=b"BM"),)),)
    ),
    "messages.1.tool_calls": ChatRequest(
        messages=(ASK, ChatMessage("assistant", "", tool_calls=(ToolCall("toolu_1", "get_time", "[1]"),)))
    ),
}
# Each of these is also what the fake (like the real API) answers 400 to.
UNSUPPORTED_WHILE_THINKING = {
    "temperature": dataclasses.replace(THINKING, temperature=0.2),
    "top_k": dataclasses.replace(THINKING, top_k=10),
    "top_p": dataclasses.replace(THINKING, top_p=0.5),
    "tool_choice": dataclasses.replace(THINKING, tools=(WEATHER,), tool_choice=ToolChoice("required")),
    "reasoning_effort": ChatRequest(messages=(ASK,), thinking_budget=512),
    "max_tokens": ChatRequest(messages=(ASK,), thinking_budget=4096, max_tokens=4096),
}


@pytest.mark.parametrize("param", sorted(UNSUPPORTED))
def test_what_anthropic_cannot_honour_is_named(client: ProviderClient, param: str) -> None:
    unsupported = client.unsupported_param(UNSUPPORTED[param], model=MODEL)
    assert unsupported is not None and unsupported.param == param and unsupported.message


@pytest.mark.parametrize("param", sorted(UNSUPPORTED_WHILE_THINKING))
async def test_what_thinking_rules_out_is_named_and_is_what_the_fake_refuses(
    client: ProviderClient, param: str
) -> None:
    request = UNSUPPORTED_WHILE_THINKING[param]
    unsupported = client.unsupported_param(request, model=MODEL)
    assert unsupported is not None and unsupported.param == param
    with pytest.raises(ProviderError) as caught:
        await client.complete(request, model=MODEL)
    assert caught.value.status == 400


def test_thinking_with_structured_output_is_named(client: ProviderClient) -> None:
    request = dataclasses.replace(THINKING, response_format=REPORT)
    unsupported = client.unsupported_param(request, model=MODEL)
    assert unsupported is not None and unsupported.param == "response_format"


@pytest.mark.parametrize(
    "request_",
    [
        TOOL_ASK,
        ChatRequest(messages=(ASK,), n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, seed=3),
        ChatRequest(messages=(ASK,), reasoning_effort="minimal", temperature=0.2, top_k=5),
        dataclasses.replace(THINKING, temperature=1, top_p=0.95, tools=(WEATHER,), tool_choice=ToolChoice("auto")),
    ],
)
def test_what_anthropic_can_honour_is_not_named(client: ProviderClient, request_: ChatRequest) -> None:
    assert client.unsupported_param(request_, model=MODEL) is None


# ---- the fake is as strict as the real API --------------------------------------------------------


def post(fake: FakeAnthropic, body: dict[str, Any], path: str = "/v1/messages") -> httpx.Response:
    headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{fake.base_url}{path}", json=body, headers=headers)


CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}
TIME_TOOL = {"name": "get_time", "input_schema": {"type": "object"}}
BASE = {"model": MODEL, "max_tokens": 2048, "messages": [{"role": "user", "content": "time?"}], "tools": [TIME_TOOL]}
LOOP = [
    {"role": "user", "content": "time?"},
    {"role": "assistant", "content": [CALL]},
    {"role": "user", "content": [RESULT]},
]
THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (BASE | {"tools": [{"name": "x" * 129, "input_schema": {"type": "object"}}]}, "^[a-zA-Z0-9_-]{1,128}$"),
        (BASE | {"tools": [{"name": "get.time", "input_schema": {"type": "object"}}]}, "should match pattern"),
        (BASE | {"tools": [{"name": "get_time"}]}, "input_schema: Field required"),
        (BASE | {"tools": [{"name": "t", "input_schema": {"type": "array"}}]}, "input_schema.type"),
        (BASE | {"tools": [TIME_TOOL, TIME_TOOL]}, "Tool names must be unique"),
        (BASE | {"tool_choice": {"type": "tool", "name": "get_weather"}}, "not found"),
        (BASE | {"tool_choice": {"type": "required"}}, "Input tag 'required'"),
        (BASE | {"messages": LOOP[:2]}, "`tool_use` ids were found without `tool_result` blocks"),
        (BASE | {"messages": [LOOP[0], {"role": "assistant", "content": "ok"}, LOOP[2]]}, "unexpected `tool_use_id`"),
        (
            BASE | {"messages": [*LOOP[:2], {"role": "user", "content": [{"type": "text", "text": "hi"}, RESULT]}]},
            "tool_result blocks must come first",
        ),
        (BASE | THINK | {"messages": LOOP}, "Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
        (
            BASE
            | THINK
            | {
                "messages": [
                    LOOP[0],
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "hm", "signature": "forged"}, CALL],
                    },
                    LOOP[2],
                ]
            },
            "Invalid `signature` in `thinking` block",
        ),
        (BASE | {"thinking": {"type": "enabled", "budget_tokens": 1000}}, "greater than or equal to 1024"),
        (BASE | {"max_tokens": 1024} | THINK, "`max_tokens` must be greater than `thinking.budget_tokens`"),
        (BASE | THINK | {"temperature": 0.7}, "`temperature` may only be set to 1 when thinking is enabled"),
        (BASE | THINK | {"top_k": 5}, "`top_k` must be unset when thinking is enabled"),
        (
            BASE | THINK | {"tool_choice": {"type": "any"}},
            "Thinking may not be enabled when tool_choice forces tool use",
        ),
        (
            BASE
            | {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}
                        ],
                    }
                ]
            },
            "media_type",
        ),
        (
            BASE
            | {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"},
                            }
                        ],
                    }
                ]
            },
            "Invalid base64",
        ),
        (
            BASE | {"system": [{"type": "text", "text": "s", "cache_control": {"type": "persistent"}}]},
            "cache_control",
        ),
        (
            BASE | {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "2h"}}]},
            "ttl",
        ),
        (
            BASE
            | {"system": [{"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]},
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
        (BASE | {"metadata": {"user": "u1"}}, "metadata.user: Extra inputs are not permitted"),
        (BASE | {"seed": 3}, "seed: Extra inputs are not permitted"),
    ],
)
def test_the_fake_refuses_what_the_real_api_refuses(ant: FakeAnthropic, body: dict[str, Any], message: str) -> None:
    answer = post(ant, body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]["message"]


def test_the_fake_refuses_a_scripted_call_of_a_tool_the_request_did_not_offer(ant: FakeAnthropic) -> None:
    ant.reply(tool_calls=[PARIS])
    answer = post(ant, BASE)
    assert answer.status_code == 400 and "get_weather" in answer.json()["error"]["message"]


def test_count_tokens_takes_no_max_tokens(ant: FakeAnthropic) -> None:
    answer = post(ant, BASE, "/v1/messages/count_tokens")
    assert answer.status_code == 400 and "max_tokens: Extra inputs" in answer.json()["error"]["message"]
    body = {k: v for k, v in BASE.items() if k != "max_tokens"}
    assert post(ant, body, "/v1/messages/count_tokens").json() == {"input_tokens": 1}


# ---- the official SDK against the fake ----------------------------------------------------------

SDK_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk(fake: FakeAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)


def test_the_sdk_reads_a_tool_call_and_sends_its_result_back(ant: FakeAnthropic) -> None:
    ant.reply(tool_calls=[PARIS])
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    message = sdk(ant).messages.create(model=MODEL, max_tokens=1024, messages=ask, tools=[SDK_TOOL])
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert call.type == "tool_use" and call.id.startswith("toolu_") and call.input == {"city": "Paris"}

    ant.reply("Sunny.")
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}
    history: Any = [*ask, {"role": "assistant", "content": message.content}, result]
    answer = sdk(ant).messages.create(model=MODEL, max_tokens=1024, messages=history, tools=[SDK_TOOL])
    assert answer.content[0].type == "text" and answer.content[0].text == "Sunny."


def test_the_sdk_streams_thinking_then_a_tool_call_and_sends_both_back(ant: FakeAnthropic) -> None:
    ant.think("Paris means get_weather.")
    ant.reply(tool_calls=[PARIS])
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    client = sdk(ant)
    with client.messages.stream(
        model=MODEL, max_tokens=2048, messages=ask, tools=[SDK_TOOL], thinking=thinking
    ) as stream:
        pieces = [event.thinking for event in stream if event.type == "thinking"]
        message = stream.get_final_message()
    assert "".join(pieces) == "Paris means get_weather." and len(pieces) > 1
    thought, call = message.content
    assert thought.type == "thinking" and thought.signature == ant.sign("Paris means get_weather.")
    assert call.type == "tool_use" and call.input == {"city": "Paris"} and message.stop_reason == "tool_use"

    ant.reply("Sunny.")
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 C"}]}
    history: Any = [*ask, {"role": "assistant", "content": message.content}, result]
    answer = client.messages.create(model=MODEL, max_tokens=2048, messages=history, tools=[SDK_TOOL], thinking=thinking)
    assert [block.type for block in answer.content] == ["thinking", "text"]
