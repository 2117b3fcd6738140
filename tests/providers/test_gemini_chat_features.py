"""The Gemini client's chat features against FakeGemini (real HTTP on 127.0.0.1): tool loops answered
by function name, Gemini 3's thought signatures carried through the tool call id and back, streamed
function calls, images as bytes (those given by URL fetched by Pulse), structured output, several
candidates, thinking settings per model, token counting, and the fields Gemini cannot honour. The
official `google-genai` SDK talks to the fake directly at the end: proof that the fake speaks the
protocol the client is tested against."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types

from core.shutdown import run_shutdown_hooks
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
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from providers.clients.gemini_chat import call_id_with_signature, split_call_id
from tests.fakes import FakeGemini, FakeToolCall
from tests.fakes.gemini import INPUT_IMAGE_TOKENS
from tests.fakes.images import PNG, ImageHost
from tests.providers.test_clients import client_of, collect

FLASH = "gemini-2.5-flash"
GEMINI_3 = "gemini-3-pro-preview"
WEATHER = Tool(
    "get_weather",
    "The weather in a city now",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    strict=True,
)
CLOCK = Tool("get_time")  # no parameters
ASK = ChatMessage("user", "What is the weather in Paris and the time?")
TOOL_ASK = ChatRequest(messages=(ASK,), tools=(WEATHER, CLOCK))
PARIS = FakeToolCall("get_weather", {"city": "Paris"})
NOON = FakeToolCall("get_time", {})
REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",  # full JSON Schema: not the OpenAPI subset
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini.start() as fake:
        yield fake


@pytest.fixture
def gem(gemini_server: FakeGemini) -> FakeGemini:
    gemini_server.reset()
    return gemini_server


@pytest.fixture
def client(gem: FakeGemini) -> ProviderClient:
    return client_of(gem)


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    with ImageHost.start() as host:
        yield host


@pytest.fixture(autouse=True)
async def _close_loop_resources() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled sessions (provider and image fetch)."""
    yield
    await run_shutdown_hooks()


def sent(fake: FakeGemini) -> dict[str, Any]:
    received = fake.last_request
    assert received is not None
    return dict(received.json)


def assistant_turn(result: ChatResult) -> ChatMessage:
    """The answer as the next request's history carries it (what an OpenAI client sends back)."""
    return ChatMessage("assistant", result.content, tool_calls=result.tool_calls)


def streamed_turn(deltas: list[ChatDelta]) -> ChatMessage:
    """A stream's pieces put together, as an OpenAI client does."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            call["name"] = piece.name or call["name"]
            call["arguments"] += piece.arguments
    calls_made = tuple(ToolCall(**calls[index]) for index in sorted(calls))
    return ChatMessage("assistant", "".join(d.content for d in deltas), tool_calls=calls_made)


def results_of(*calls: ToolCall) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage("tool", json.dumps({"ok": call.name}), tool_call_id=call.id) for call in calls)


async def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


# ---- tools -------------------------------------------------------------------------------------


async def test_a_tool_loop_answers_each_call_by_name_in_one_user_turn(gem: FakeGemini, client: ProviderClient) -> None:
    gem.reply(tool_calls=[PARIS, NOON])
    first = await client.complete(TOOL_ASK, model=FLASH)
    assert (first.finish_reason, first.content) == (TOOL_CALLS, "")
    assert [(c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert all(c.id.startswith("call_") and SAFE_ID.fullmatch(c.id) for c in first.tool_calls)
    assert sent(gem)["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city now",
                    "parametersJsonSchema": WEATHER.parameters,
                },
                {"name": "get_time"},
            ]
        }
    ]

    gem.reply("Sunny, and it is noon.")
    weather, clock = first.tool_calls
    results = (
        ChatMessage("tool", '{"celsius": 21}', tool_call_id=weather.id),
        ChatMessage("tool", "the clock is broken", tool_call_id=clock.id, is_error=True),
    )
    second = await client.complete(
        dataclasses.replace(TOOL_ASK, messages=(ASK, assistant_turn(first), *results)), model=FLASH
    )

    assert (second.content, second.finish_reason) == ("Sunny, and it is noon.", STOP)
    contents = sent(gem)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    # Pulse's own call ids stay with Pulse: Gemini matches results to calls by name and order.
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"error": {"result": "the clock is broken"}}}},
    ]


async def test_a_result_for_a_call_the_turn_did_not_make_is_the_upstreams_400(
    gem: FakeGemini, client: ProviderClient
) -> None:
    gem.reply(tool_calls=[PARIS])
    first = await client.complete(TOOL_ASK, model=FLASH)
    stray = ChatMessage("tool", "12:00", tool_call_id="call_from_nowhere")
    error = await failure(
        client.complete(dataclasses.replace(TOOL_ASK, messages=(ASK, assistant_turn(first), stray)), model=FLASH)
    )
    assert (error.status, error.retryable) == (400, False)


@pytest.mark.parametrize(
    ("choice", "calling"),
    [
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("tool", "get_time"), {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
        (None, None),
    ],
)
async def test_tool_choice_in_gemini_terms_and_parallel_calls_dropped(
    gem: FakeGemini, client: ProviderClient, choice: ToolChoice | None, calling: dict[str, Any] | None
) -> None:
    if choice is not None and choice.mode != "none":
        gem.reply(tool_calls=[NOON])
    request = dataclasses.replace(TOOL_ASK, tool_choice=choice, parallel_tool_calls=False)
    await client.complete(request, model=FLASH)
    body = sent(gem)
    assert body.get("toolConfig") == (None if calling is None else {"functionCallingConfig": calling})
    assert "parallel" not in json.dumps(body).lower()


async def test_streamed_function_calls_come_whole_one_delta_each(gem: FakeGemini, client: ProviderClient) -> None:
    gem.reply("Let me look.", tool_calls=[PARIS, FakeToolCall("get_time", {"zone": "Europe/Paris"})])
    deltas = await collect(client.stream(TOOL_ASK, model=FLASH))
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    assert [(p.index, p.name, json.loads(p.arguments)) for p in pieces] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_time", {"zone": "Europe/Paris"}),
    ]
    assert all(piece.id for piece in pieces) and all(len(d.tool_calls) <= 1 for d in deltas)
    assert "".join(d.content for d in deltas) == "Let me look."
    assert deltas[-1].finish_reason == TOOL_CALLS and deltas[-1].usage is not None


# ---- Gemini 3's thought signatures -------------------------------------------------------------


async def test_a_gemini_3_signature_rides_in_the_call_id_and_goes_back_on_its_call(
    gem: FakeGemini, client: ProviderClient
) -> None:
    gem.reply(tool_calls=[PARIS, NOON])
    first = await client.complete(TOOL_ASK, model=GEMINI_3)
    weather, clock = first.tool_calls
    assert "__thought__" in weather.id and "__thought__" not in clock.id  # Gemini signs the first call of a step
    assert SAFE_ID.fullmatch(weather.id)  # URL-safe base64: the id stays a valid id for any provider

    gem.reply("Sunny, and it is noon.")
    history = (ASK, assistant_turn(first), *results_of(weather, clock))
    second = await client.complete(dataclasses.replace(TOOL_ASK, messages=history), model=GEMINI_3)

    assert second.content == "Sunny, and it is noon."  # the fake took the signature back as its own
    calls = sent(gem)["contents"][1]["parts"]
    assert "thoughtSignature" in calls[0] and "thoughtSignature" not in calls[1]
    assert "id" not in calls[0]["functionCall"]


async def test_a_gemini_3_call_that_comes_back_without_its_signature_is_refused(
    gem: FakeGemini, client: ProviderClient
) -> None:
    gem.reply(tool_calls=[PARIS])
    first = await client.complete(TOOL_ASK, model=GEMINI_3)
    (weather,) = first.tool_calls
    stripped = dataclasses.replace(weather, id=split_call_id(weather.id)[0])
    history = (ASK, ChatMessage("assistant", "", tool_calls=(stripped,)), *results_of(stripped))
    error = await failure(client.complete(dataclasses.replace(TOOL_ASK, messages=history), model=GEMINI_3))
    assert (error.status, error.retryable) == (400, False)
    assert "missing a thought_signature" in error.message


async def test_streamed_gemini_3_calls_carry_their_signature_back_too(gem: FakeGemini, client: ProviderClient) -> None:
    gem.reply(tool_calls=[PARIS])
    message = streamed_turn(await collect(client.stream(TOOL_ASK, model="gemini-3-flash-preview")))
    gem.reply("Sunny.")
    history = (ASK, message, *results_of(*message.tool_calls))
    deltas = await collect(
        client.stream(dataclasses.replace(TOOL_ASK, messages=history), model="gemini-3-flash-preview")
    )
    assert "".join(d.content for d in deltas) == "Sunny." and deltas[-1].finish_reason == STOP


def test_a_signature_survives_the_id_whatever_its_base64_characters() -> None:
    signature = base64.b64encode(bytes(range(250, 256)) + b"\xfb\xff").decode()  # has "+", "/" and "="
    call_id = call_id_with_signature("call_abc", signature)
    assert SAFE_ID.fullmatch(call_id)
    assert split_call_id(call_id) == ("call_abc", signature)
    assert split_call_id("call_abc__thought__!!not base64!!") == ("call_abc", None)
    assert split_call_id("toolu_01") == ("toolu_01", None)


async def test_a_call_id_gemini_did_not_get_from_pulse_is_sent_on_call_and_result(
    gem: FakeGemini, client: ProviderClient
) -> None:
    """A conversation begun with another provider keeps its ids: they go to Gemini as call ids."""
    call = ToolCall("toolu_01A", "get_weather", '{"city": "Paris"}')
    history = (ASK, ChatMessage("assistant", "", tool_calls=(call,)), *results_of(call))
    await client.complete(dataclasses.replace(TOOL_ASK, messages=history), model=FLASH)
    model_turn, results = sent(gem)["contents"][1:]
    assert model_turn["parts"][0]["functionCall"]["id"] == "toolu_01A"
    assert results["parts"][0]["functionResponse"]["id"] == "toolu_01A"


# ---- images ------------------------------------------------------------------------------------


async def test_images_go_as_inline_bytes_and_a_url_is_fetched_first(
    gem: FakeGemini, client: ProviderClient, image_host: ImageHost, settings: Any
) -> None:
    settings.CHAT_IMAGE_FETCH_PRIVATE = True  # the image host is on loopback
    parts = (
        "Compare",
        ChatImage(content_type="image/jpeg", data=b"\xff\xd8\xff jpeg"),
        "with",
        ChatImage(url=image_host.url("cat.png")),
    )
    result = await client.complete(
        ChatRequest(messages=(ChatMessage("user", "Compare with", parts=parts),)), model=FLASH
    )
    assert sent(gem)["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(b"\xff\xd8\xff jpeg").decode()}},
        {"text": "with"},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
    ]
    assert result.usage.input_tokens == 2 + 2 * INPUT_IMAGE_TOKENS  # the fake counted both pictures


@pytest.mark.parametrize("name", ["cat.png", "page.html"])
async def test_an_image_url_pulse_will_not_use_is_a_final_400_before_any_call(
    gem: FakeGemini, client: ProviderClient, image_host: ImageHost, settings: Any, name: str
) -> None:
    # cat.png: loopback is off limits by default; page.html: allowed, but not an image.
    settings.CHAT_IMAGE_FETCH_PRIVATE = name != "cat.png"
    message = ChatMessage("user", "Look", parts=("Look", ChatImage(url=image_host.url(name))))
    error = await failure(client.complete(ChatRequest(messages=(message,)), model=FLASH))
    assert (error.status, error.code, error.retryable) == (400, "invalid_image_url", False)
    assert gem.calls == 0


# ---- structured output, candidates, sampling ---------------------------------------------------


@pytest.mark.parametrize(
    ("response_format", "config"),
    [
        (ResponseFormat("json_object"), {"responseMimeType": "application/json"}),
        (
            ResponseFormat("json_schema", REPORT_SCHEMA, name="weather_report", strict=True),
            {"responseMimeType": "application/json", "responseJsonSchema": REPORT_SCHEMA},
        ),
    ],
)
async def test_structured_output_asks_for_json_by_mime_type_and_json_schema(
    gem: FakeGemini, client: ProviderClient, response_format: ResponseFormat, config: dict[str, Any]
) -> None:
    gem.reply('{"city": "Paris", "celsius": 21}')
    result = await client.complete(ChatRequest(messages=(ASK,), response_format=response_format), model=FLASH)
    assert json.loads(result.content) == {"city": "Paris", "celsius": 21}
    assert sent(gem)["generationConfig"] == config


async def test_n_choices_are_candidates_and_come_back_as_more_choices(gem: FakeGemini, client: ProviderClient) -> None:
    gem.reply("Blue sky")
    result = await client.complete(ChatRequest(messages=(ASK,), n=3), model=FLASH)
    assert sent(gem)["generationConfig"] == {"candidateCount": 3}
    assert [(c.content, c.finish_reason) for c in result.more_choices] == [("Blue sky", STOP)] * 2
    assert result.content == "Blue sky" and result.usage.output_tokens == 3 * 2  # every candidate's words


async def test_seed_top_k_and_penalties_pass_and_user_is_dropped(gem: FakeGemini, client: ProviderClient) -> None:
    request = ChatRequest(
        messages=(ASK,), seed=7, top_k=40, presence_penalty=0.5, frequency_penalty=-0.5, user="user-1234"
    )
    assert client.unsupported_param(request, model="gemini-2.0-flash") is None  # 2.0 still takes penalties
    await client.complete(request, model="gemini-2.0-flash")
    body = sent(gem)
    assert body["generationConfig"] == {"seed": 7, "topK": 40, "presencePenalty": 0.5, "frequencyPenalty": -0.5}
    assert "user-1234" not in json.dumps(body)


# ---- thinking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "effort", "budget", "thinking"),
    [
        ("gemini-2.5-flash", "minimal", None, {"thinkingBudget": 0}),
        ("gemini-2.5-flash", "low", None, {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "medium", None, {"thinkingBudget": 8192}),
        ("gemini-2.5-flash", "high", None, {"thinkingBudget": 24576}),
        ("gemini-2.5-pro", "minimal", None, {"thinkingBudget": 128}),  # Pro cannot stop thinking
        ("gemini-2.5-pro", "high", None, {"thinkingBudget": 32768}),
        ("gemini-2.5-flash-lite", "minimal", None, {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", None, 100, {"thinkingBudget": 512}),  # under its range: its least
        ("gemini-2.5-flash", "low", 50000, {"thinkingBudget": 24576}),  # a budget wins, kept in range
        ("gemini-2.5-pro", None, 0, {"thinkingBudget": 128}),
        ("gemini-3-pro-preview", "minimal", None, {"thinkingLevel": "LOW"}),
        ("gemini-3-pro-preview", "medium", None, {"thinkingLevel": "HIGH"}),  # Pro has LOW and HIGH only
        ("gemini-3-flash-preview", "minimal", None, {"thinkingLevel": "MINIMAL"}),
        ("gemini-3-flash-preview", "medium", None, {"thinkingLevel": "MEDIUM"}),
        ("gemini-3-pro-preview", None, 2048, {"thinkingBudget": 2048}),
        ("gemini-2.5-flash", None, None, None),  # the model's own dynamic thinking
    ],
)
async def test_reasoning_effort_and_budgets_become_the_models_thinking_config(
    gem: FakeGemini,
    client: ProviderClient,
    model: str,
    effort: str | None,
    budget: int | None,
    thinking: dict[str, Any] | None,
) -> None:
    request = ChatRequest(messages=(ASK,), reasoning_effort=effort, thinking_budget=budget)
    assert client.unsupported_param(request, model=model) is None
    await client.complete(request, model=model)  # the fake checks each value against the model's range
    assert sent(gem).get("generationConfig", {}).get("thinkingConfig") == thinking


# ---- count_tokens and what Gemini cannot honour -------------------------------------------------


async def test_count_tokens_counts_what_generate_content_would(gem: FakeGemini, client: ProviderClient) -> None:
    message = ChatMessage("user", "Look at this", parts=("Look at this", ChatImage(content_type="image/png", data=PNG)))
    request = ChatRequest(messages=(ChatMessage("system", "Be brief."), message), tools=(WEATHER,), n=2)
    counted = await client.count_tokens(request, model=FLASH)
    received = gem.last_request
    assert received is not None and received.path == f"/v1beta/models/{FLASH}:countTokens"
    inner = received.json["generateContentRequest"]
    assert inner["model"] == f"models/{FLASH}" and "tools" in inner and "generationConfig" not in inner
    result = await client.complete(request, model=FLASH)
    assert counted == result.usage.input_tokens == 5 + INPUT_IMAGE_TOKENS


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [
        (FLASH, {"logprobs": True}, "logprobs"),
        (FLASH, {"logprobs": True, "top_logprobs": 3}, "logprobs"),
        (GEMINI_3, {"n": 2}, "n"),
        (FLASH, {"n": 9}, "n"),
        (FLASH, {"presence_penalty": 0.5}, "presence_penalty"),
        (GEMINI_3, {"frequency_penalty": 0.5}, "frequency_penalty"),
        ("gemini-2.0-flash", {"reasoning_effort": "low"}, "reasoning_effort"),
        ("gemini-2.0-flash", {"thinking_budget": 1024}, "thinking"),
    ],
)
async def test_what_gemini_cannot_honour_is_named_before_any_call(
    gem: FakeGemini, client: ProviderClient, model: str, fields: dict[str, Any], param: str
) -> None:
    request = ChatRequest(messages=(ASK,), **fields)
    unsupported = client.unsupported_param(request, model=f"models/{model}")
    assert unsupported is not None and unsupported.param == param


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (GEMINI_3, {"n": 2}, "Multiple candidates is not enabled"),
        (FLASH, {"presence_penalty": 0.5}, "Penalty is not enabled"),
    ],
)
async def test_the_upstream_refuses_what_unsupported_param_guards(
    gem: FakeGemini, client: ProviderClient, model: str, fields: dict[str, Any], message: str
) -> None:
    """Why the guard is there: sent anyway, the request is Gemini's 400."""
    error = await failure(client.complete(ChatRequest(messages=(ASK,), **fields), model=model))
    assert error.status == 400 and message in error.message


# ---- the official SDK against the fake --------------------------------------------------------


def test_the_google_genai_sdk_gets_a_signed_call_and_the_fake_wants_it_back(gemini_server: FakeGemini) -> None:
    gem = gemini_server
    gem.reset()
    gem.reply(tool_calls=[PARIS])
    sdk = genai.Client(api_key=gem.api_key, http_options=types.HttpOptions(base_url=gem.base_url, api_version="v1beta"))
    weather = types.FunctionDeclaration(
        name="get_weather",
        description="The weather in a city now",
        parameters=types.Schema(
            type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}, required=["city"]
        ),
    )
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[weather])])
    ask = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])

    first = sdk.models.generate_content(model=GEMINI_3, contents=[ask], config=config)
    (call,) = first.function_calls or []
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    model_turn = (first.candidates or [])[0].content
    assert model_turn is not None and model_turn.parts and model_turn.parts[0].thought_signature

    gem.reply("Sunny in Paris.")
    result = types.Content(
        role="user", parts=[types.Part.from_function_response(name="get_weather", response={"celsius": 21})]
    )
    second = sdk.models.generate_content(model=GEMINI_3, contents=[ask, model_turn, result], config=config)
    assert second.text == "Sunny in Paris."

    signed_call = model_turn.parts[0]
    unsigned = model_turn.model_copy(update={"parts": [signed_call.model_copy(update={"thought_signature": None})]})
    with pytest.raises(genai.errors.ClientError) as caught:
        sdk.models.generate_content(model=GEMINI_3, contents=[ask, unsigned, result], config=config)
    assert caught.value.code == 400 and "thought_signature" in str(caught.value.message)
