"""The OpenAI chat client's newer request fields against FakeOpenAI (real HTTP on 127.0.0.1): tools and
tool results, streamed tool calls, images, structured output, n, logprobs, the sampling settings that
pass through and top_k, which only compatible servers take. The official `openai` SDK talks to the
same fake, which proves the fake speaks the protocol the client is tested against.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from providers.clients.base import (
    STOP,
    TOOL_CALLS,
    ChatDelta,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ProviderError,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    Unsupported,
)
from providers.http import close_shared_session
from tests.fakes import FakeOpenAI, FakeToolCall
from tests.fakes.openai import FAKE_PNG, FakeOpenAICompatible
from tests.providers.test_clients import client_of

MODEL = "gpt-4o-mini"
WEATHER = Tool(
    "get_weather",
    "The weather in a city now",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    strict=True,
)
TIME = Tool("get_time", parameters={"type": "object", "properties": {}})
ASK_WEATHER = ChatMessage("user", "What is the weather in Paris?")
WEATHER_CALL = [FakeToolCall("get_weather", {"city": "Paris"})]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start() as fake:
        yield fake


@pytest.fixture
def oai(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@pytest.fixture
def vllm() -> Iterator[FakeOpenAICompatible]:
    with FakeOpenAICompatible.start() as fake:
        yield fake


@pytest.fixture(autouse=True)
async def _close_session() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await close_shared_session()


def chat(*messages: ChatMessage, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=messages, **fields)


def sent(fake: FakeOpenAI) -> dict[str, Any]:
    """The body of the last request the fake received."""
    assert fake.last_request is not None
    return fake.last_request.json  # type: ignore[no-any-return]


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [delta async for delta in stream]


async def refusal(fake: FakeOpenAI, request: ChatRequest, kind: str = "openai") -> ProviderError:
    """The fake's 400 for a request the real API refuses too."""
    with pytest.raises(ProviderError) as caught:
        await client_of(fake, kind).complete(request, model=MODEL)
    assert (caught.value.status, caught.value.retryable) == (400, False)
    return caught.value


# ---- tools ---------------------------------------------------------------------------------


async def test_a_tool_call_and_its_result_make_a_round_trip(oai: FakeOpenAI) -> None:
    oai.reply(tool_calls=WEATHER_CALL)
    first = chat(ASK_WEATHER, tools=(WEATHER, TIME), tool_choice=ToolChoice("tool", "get_weather"))
    called = await client_of(oai).complete(first, model=MODEL)

    assert sent(oai)["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now",
            "parameters": WEATHER.parameters,
            "strict": True,
        },
    }
    # No description and no strict: left out rather than sent empty.
    assert sent(oai)["tools"][1] == {
        "type": "function",
        "function": {"name": "get_time", "parameters": TIME.parameters},
    }
    assert sent(oai)["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    (call,) = called.tool_calls
    assert (call.name, json.loads(call.arguments), call.id.startswith("call_")) == (
        "get_weather",
        {"city": "Paris"},
        True,
    )
    assert (called.content, called.finish_reason) == ("", TOOL_CALLS)

    oai.reply("It is 18 C and sunny in Paris.")
    answered = chat(
        ASK_WEATHER,
        ChatMessage("assistant", "", tool_calls=called.tool_calls),
        ChatMessage("tool", '{"celsius": 18, "sky": "sunny"}', tool_call_id=call.id),
        tools=(WEATHER, TIME),
    )
    result = await client_of(oai).complete(answered, model=MODEL)

    assert result.content == "It is 18 C and sunny in Paris."
    assistant, tool = sent(oai)["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
        ],
    }
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18, "sky": "sunny"}'}


async def test_tool_choice_modes_and_parallel_tool_calls_pass_through(oai: FakeOpenAI) -> None:
    for mode in ("auto", "none", "required"):
        request = chat(ASK_WEATHER, tools=(WEATHER,), tool_choice=ToolChoice(mode), parallel_tool_calls=False)
        await client_of(oai).complete(request, model=MODEL)
        assert (sent(oai)["tool_choice"], sent(oai)["parallel_tool_calls"]) == (mode, False)


async def test_streamed_tool_calls_arrive_as_indexed_pieces(oai: FakeOpenAI) -> None:
    oai.reply(tool_calls=[*WEATHER_CALL, FakeToolCall("get_time", {})])
    request = chat(ASK_WEATHER, tools=(WEATHER, TIME))
    deltas = await collect(client_of(oai).stream(request, model=MODEL))

    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    heads = [piece for piece in pieces if piece.id is not None]
    assert [(head.index, head.name) for head in heads] == [(0, "get_weather"), (1, "get_time")]
    assert all(head.id and head.id.startswith("call_") for head in heads)
    arguments = {index: "".join(p.arguments for p in pieces if p.index == index) for index in (0, 1)}
    assert {index: json.loads(text) for index, text in arguments.items()} == {0: {"city": "Paris"}, 1: {}}
    assert len(pieces) > 3  # the arguments came in fragments, after each call's head
    assert deltas[-1].finish_reason == TOOL_CALLS
    assert "".join(delta.content for delta in deltas) == ""


async def test_fake_refuses_a_scripted_call_the_request_does_not_offer(oai: FakeOpenAI) -> None:
    oai.reply(tool_calls=WEATHER_CALL)
    error = await refusal(oai, chat(ASK_WEATHER, tools=(TIME,)))
    assert "get_weather" in error.message
    await refusal(oai, chat(ASK_WEATHER, tools=(WEATHER,), tool_choice=ToolChoice("none")))


async def test_fake_refuses_a_tool_result_for_a_call_never_made(oai: FakeOpenAI) -> None:
    stray = chat(ASK_WEATHER, ChatMessage("tool", "18 C", tool_call_id="call_nobody_made"), tools=(WEATHER,))
    error = await refusal(oai, stray)
    assert "must be a response to a preceeding message with 'tool_calls'" in error.message

    unanswered = chat(ASK_WEATHER, ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "get_weather"),)))
    assert "call_1" in (await refusal(oai, unanswered)).message


async def test_fake_refuses_tool_choice_without_tools_and_bad_function_names(oai: FakeOpenAI) -> None:
    await refusal(oai, chat(ASK_WEATHER, tool_choice=ToolChoice("auto")))
    await refusal(oai, chat(ASK_WEATHER, tools=(WEATHER,), tool_choice=ToolChoice("tool", "get_time")))
    await refusal(oai, chat(ASK_WEATHER, tools=(Tool("get weather"),)))


# ---- images --------------------------------------------------------------------------------


async def test_images_go_by_url_and_as_data_urls_in_order(oai: FakeOpenAI) -> None:
    remote = ChatImage(url="https://example.com/cat.jpg", detail="low")
    inline = ChatImage(content_type="image/png", data=FAKE_PNG)
    message = ChatMessage("user", "Compare these and", parts=("Compare", remote, "these and", inline))
    await client_of(oai).complete(chat(message), model=MODEL)

    assert sent(oai)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "text", "text": "these and"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{base64.b64encode(FAKE_PNG).decode()}"}},
    ]


async def test_fake_refuses_a_data_url_that_holds_no_image(oai: FakeOpenAI) -> None:
    not_an_image = ChatImage(content_type="image/png", data=b"just some text")
    error = await refusal(oai, chat(ChatMessage("user", "What is this?", parts=("What is this?", not_an_image))))
    assert error.details["upstream_code"] == "invalid_image_format"


def test_an_image_outside_a_user_message_is_unsupported(oai: FakeOpenAI) -> None:
    image = ChatImage(url="https://example.com/cat.jpg")
    request = chat(ChatMessage("user", "Hi"), ChatMessage("assistant", "Here", parts=("Here", image)))
    unsupported = client_of(oai).unsupported_param(request, model=MODEL)
    assert unsupported is not None and unsupported.param == "messages.1.content"


# ---- structured output, n, logprobs ---------------------------------------------------------


async def test_json_schema_response_format(oai: FakeOpenAI) -> None:
    oai.reply('{"colour": "red"}')
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    request = chat(
        ChatMessage("user", "Name a colour"), response_format=ResponseFormat("json_schema", schema, "colour", True)
    )
    result = await client_of(oai).complete(request, model=MODEL)

    assert sent(oai)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "colour", "schema": schema, "strict": True},
    }
    assert json.loads(result.content) == {"colour": "red"}


async def test_json_object_needs_the_word_json_in_the_messages(oai: FakeOpenAI) -> None:
    json_mode = ResponseFormat("json_object")
    await refusal(oai, chat(ChatMessage("user", "Name a colour"), response_format=json_mode))
    await client_of(oai).complete(
        chat(ChatMessage("user", "Name a colour, as JSON"), response_format=json_mode), model=MODEL
    )
    assert sent(oai)["response_format"] == {"type": "json_object"}


async def test_n_answers_come_back_as_more_choices(oai: FakeOpenAI) -> None:
    oai.reply("red", output_tokens=1)
    result = await client_of(oai).complete(chat(ChatMessage("user", "Name a colour"), n=3), model=MODEL)

    assert sent(oai)["n"] == 3
    assert [choice.content for choice in result.more_choices] == ["red", "red"]
    assert [choice.finish_reason for choice in result.more_choices] == [STOP, STOP]
    assert (result.content, result.usage.output_tokens) == ("red", 3)  # every choice is billed


async def test_logprobs_come_back_with_their_top_alternatives(oai: FakeOpenAI) -> None:
    oai.reply("red and blue")
    request = chat(ChatMessage("user", "Name two colours"), logprobs=True, top_logprobs=2)
    result = await client_of(oai).complete(request, model=MODEL)

    assert (sent(oai)["logprobs"], sent(oai)["top_logprobs"]) == (True, 2)
    tokens = result.logprobs["content"]
    assert "".join(token["token"] for token in tokens) == "red and blue"
    assert all(len(token["top_logprobs"]) == 2 for token in tokens)


async def test_streamed_logprobs_ride_on_the_text_pieces(oai: FakeOpenAI) -> None:
    oai.reply("red and blue")
    request = chat(ChatMessage("user", "Name two colours"), logprobs=True, top_logprobs=1)
    deltas = await collect(client_of(oai).stream(request, model=MODEL))

    with_text = [delta for delta in deltas if delta.content]
    assert [delta.logprobs["content"][0]["token"] for delta in with_text] == ["red", " and", " blue"]


# ---- settings that pass through, and top_k ------------------------------------------------------


async def test_sampling_settings_pass_through(oai: FakeOpenAI) -> None:
    request = chat(
        ASK_WEATHER, seed=7, user="user-42", presence_penalty=0.5, frequency_penalty=-0.5, reasoning_effort="minimal"
    )
    await client_of(oai).complete(request, model=MODEL)
    body = sent(oai)
    assert (body["seed"], body["user"], body["reasoning_effort"]) == (7, "user-42", "minimal")
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2047, "low"), (2048, "medium"), (16383, "medium"), (16384, "high")]
)
async def test_a_thinking_budget_becomes_a_reasoning_effort(oai: FakeOpenAI, budget: int, effort: str) -> None:
    await client_of(oai).complete(chat(ASK_WEATHER, thinking_budget=budget), model="o4-mini")
    assert sent(oai)["reasoning_effort"] == effort


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gpt-5-chat-latest"])
async def test_a_thinking_budget_is_dropped_for_a_model_that_does_not_reason(oai: FakeOpenAI, model: str) -> None:
    await client_of(oai).complete(chat(ASK_WEATHER, thinking_budget=8000), model=model)
    assert "reasoning_effort" not in oai.requests[0].json


async def test_a_reasoning_effort_wins_over_a_thinking_budget(oai: FakeOpenAI) -> None:
    await client_of(oai).complete(chat(ASK_WEATHER, thinking_budget=30000, reasoning_effort="low"), model="o4-mini")
    assert sent(oai)["reasoning_effort"] == "low"


def test_top_k_is_unsupported_by_openai(oai: FakeOpenAI) -> None:
    request = chat(ASK_WEATHER, top_k=40)
    assert client_of(oai).unsupported_param(request, model=MODEL) == Unsupported("top_k", "OpenAI does not take top_k")
    assert client_of(oai, "openai_compatible").unsupported_param(request, model="llama3") is None


async def test_top_k_goes_to_compatible_servers_only(oai: FakeOpenAI, vllm: FakeOpenAICompatible) -> None:
    request = chat(ASK_WEATHER, top_k=40, max_tokens=20)
    await client_of(vllm).complete(request, model="llama3")
    assert (sent(vllm)["top_k"], sent(vllm)["max_tokens"]) == (40, 20)

    error = await refusal(oai, request, kind="openai_compatible")  # the real OpenAI refuses it as unknown
    assert "top_k" in error.message


# ---- the official SDK against the fake --------------------------------------------------------


def sdk(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)


SDK_TOOLS: Any = [{"type": "function", "function": {"name": WEATHER.name, "parameters": WEATHER.parameters}}]
SDK_ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_openai_sdk_reads_a_tool_call_and_sends_its_result(oai: FakeOpenAI) -> None:
    oai.reply(tool_calls=WEATHER_CALL)
    completion = sdk(oai).chat.completions.create(
        model=MODEL, messages=SDK_ASK, tools=SDK_TOOLS, tool_choice="required"
    )
    choice = completion.choices[0]
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert (json.loads(call.function.arguments), choice.finish_reason, choice.message.content) == (
        {"city": "Paris"},
        "tool_calls",
        None,
    )

    oai.reply("Sunny.")
    turn: Any = [
        *SDK_ASK,
        choice.message.model_dump(exclude_none=True, exclude={"annotations", "refusal"}),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    answer = sdk(oai).chat.completions.create(model=MODEL, messages=turn, tools=SDK_TOOLS)
    assert answer.choices[0].message.content == "Sunny."


def test_openai_sdk_stream_helper_assembles_a_streamed_tool_call(oai: FakeOpenAI) -> None:
    oai.reply(tool_calls=WEATHER_CALL)
    with sdk(oai).chat.completions.stream(model=MODEL, messages=SDK_ASK, tools=SDK_TOOLS) as stream:
        done = [event for event in stream if event.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(event.name, event.arguments) for event in done] == [("get_weather", '{"city": "Paris"}')]
    (call,) = final.choices[0].message.tool_calls or []
    assert call.id.startswith("call_") and final.choices[0].finish_reason == "tool_calls"
