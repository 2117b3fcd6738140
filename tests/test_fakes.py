"""Self-tests for tests/fakes: the fakes speak the documented wire protocols and are strict.

If a fake drifts from the real API, every gateway test built on it proves nothing, so
these tests pin the protocol facts from PROVIDERS.md: the official OpenAI SDK must
parse FakeOpenAI's answers, and each fake must reject what the real API rejects.
Plain sync tests: the fakes run in their own threads; nothing here touches the database.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fakes import INSUFFICIENT_QUOTA, FakeAnthropic, FakeGemini, FakeOpenAI

USER_HI = [{"role": "user", "content": "say hi to me"}]  # 4 words


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start() as fake:
        yield fake


@pytest.fixture
def ant() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start() as fake:
        yield fake


@pytest.fixture
def gem() -> Iterator[FakeGemini]:
    with FakeGemini.start() as fake:
        yield fake


def sdk(fake: FakeOpenAI, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, **kwargs)


def openai_post(fake: FakeOpenAI, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or fake.api_key}"}
    return httpx.post(f"{fake.base_url}/chat/completions", json=body, headers=headers)


def anthropic_post(fake: FakeAnthropic, body: dict, **headers: str) -> httpx.Response:
    base = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
    return httpx.post(f"{fake.base_url}/v1/messages", json=body, headers=base | headers)


def gemini_url(fake: FakeGemini, action: str = "generateContent", model: str = "gemini-2.5-flash") -> str:
    return f"{fake.base_url}/v1beta/models/{model}:{action}"


def gemini_post(fake: FakeGemini, body: dict, key: str | None = None, **kwargs) -> httpx.Response:
    headers = {"x-goog-api-key": key or fake.api_key}
    return httpx.post(gemini_url(fake, **kwargs), json=body, headers=headers)


def openai_data(raw: str) -> list[str]:
    """The `data:` payloads of an OpenAI stream, in order."""
    return [line[len("data: ") :] for line in raw.split("\n\n") if line.startswith("data: ")]


def anthropic_events(raw: str) -> list[tuple[str, dict]]:
    events = []
    for block in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


GEMINI_HI = {"contents": [{"role": "user", "parts": [{"text": "say hi to me"}]}]}
CLAUDE_HI = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": USER_HI}


# ---- common behaviour --------------------------------------------------------------


def test_base_urls_follow_each_sdk_convention(oai, ant, gem):
    assert oai.base_url == f"http://127.0.0.1:{oai.port}/v1"
    assert ant.base_url == f"http://127.0.0.1:{ant.port}"
    assert gem.base_url == f"http://127.0.0.1:{gem.port}"
    assert oai.api_key == "sk-test-openai"


def test_api_key_can_be_chosen():
    with FakeGemini.start(api_key="AIza-custom") as fake:
        assert gemini_post(fake, GEMINI_HI, key="AIza-custom").status_code == 200
        assert gemini_post(fake, GEMINI_HI, key=FakeGemini.default_api_key).status_code == 400


def test_stop_closes_the_port():
    fake = FakeOpenAI.start()
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        openai_post(fake, {"model": "gpt-4o-mini", "messages": USER_HI})


def test_requests_are_logged_with_lowercased_headers_and_reset_clears_them(oai):
    oai.reply("scripted")
    oai.fail(500, times=3)
    openai_post(oai, {"model": "gpt-4o-mini", "messages": USER_HI})
    received = oai.requests[0]
    assert (received.method, received.path, received.query) == ("POST", "/v1/chat/completions", {})
    assert received.headers["authorization"] == f"Bearer {oai.api_key}"
    assert received.json["model"] == "gpt-4o-mini" and oai.calls == 1
    oai.reset()
    assert oai.calls == 0
    answer = openai_post(oai, {"model": "gpt-4o-mini", "messages": USER_HI})
    assert answer.status_code == 200  # the two remaining 500s were cleared ...
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from fake openai"  # ... and the reply


def test_faults_apply_in_fifo_order_for_their_times_then_stop(oai):
    oai.fail(503, times=2)
    oai.fail(429)
    statuses = [openai_post(oai, {"model": "m", "messages": USER_HI}).status_code for _ in range(4)]
    assert statuses == [503, 503, 429, 200]


def test_fault_with_path_only_matches_that_endpoint(oai):
    oai.fail(500, path="/moderations")
    assert openai_post(oai, {"model": "m", "messages": USER_HI}).status_code == 200
    with pytest.raises(openai.InternalServerError):
        sdk(oai).moderations.create(input="x")
    assert sdk(oai).moderations.create(input="x").results[0].flagged is False


def test_stream_faults_skip_non_stream_requests(oai):
    oai.cut_stream(after_chunks=1)
    assert openai_post(oai, {"model": "m", "messages": USER_HI}).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        openai_post(oai, {"model": "m", "messages": USER_HI, "stream": True})


def test_delay_makes_a_short_client_timeout_fire(gem):
    gem.delay(0.3)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gemini_url(gem), json=GEMINI_HI, headers={"x-goog-api-key": gem.api_key}, timeout=0.1)
    assert time.monotonic() - started < 0.25
    assert gemini_post(gem, GEMINI_HI).status_code == 200  # used up: the next answer is prompt


def test_fail_takes_a_raw_body_and_extra_headers(ant):
    ant.fail(502, body="<html>502 Bad Gateway</html>", headers={"x-should-retry": "true"})
    answer = anthropic_post(ant, CLAUDE_HI)
    assert (answer.status_code, answer.text) == (502, "<html>502 Bad Gateway</html>")
    assert answer.headers["x-should-retry"] == "true"


def test_bad_auth_does_not_use_up_a_fault(ant):
    ant.fail(529)
    assert anthropic_post(ant, CLAUDE_HI, **{"x-api-key": "wrong"}).status_code == 401
    assert anthropic_post(ant, CLAUDE_HI).status_code == 529


# ---- OpenAI ----------------------------------------------------------------------


def test_openai_sdk_parses_a_completion_with_detailed_usage(oai):
    completion = sdk(oai).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, *USER_HI],
        max_tokens=50,
        temperature=0.2,
    )
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Hello from fake openai")
    assert choice.finish_reason == "stop" and completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-") and completion.model == "gpt-4o-mini"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 4, 10)
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_sdk_stream_with_include_usage(oai):
    oai.reply("one two three", input_tokens=7, output_tokens=5)
    stream = sdk(oai).chat.completions.create(
        model="gpt-4o-mini", messages=USER_HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert contents == ["one", " two", " three"]
    finish = chunks[-2].choices[0]
    assert finish.finish_reason == "stop" and finish.delta.content is None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 5)


def test_openai_raw_stream_shape(oai):
    body = {"model": "m", "messages": USER_HI, "stream": True, "stream_options": {"include_usage": True}}
    payloads = openai_data(openai_post(oai, body).text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["usage"]["total_tokens"] == 4 + 4

    plain = openai_post(oai, {"model": "m", "messages": USER_HI, "stream": True})
    assert plain.headers["content-type"].startswith("text/event-stream")
    assert not any("usage" in json.loads(p) for p in openai_data(plain.text)[:-1])


@pytest.mark.parametrize(
    ("status", "exception", "code"),
    [
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (503, openai.InternalServerError, "server_is_overloaded"),
        (404, openai.NotFoundError, "model_not_found"),
    ],
)
def test_openai_sdk_raises_the_matching_exception(oai, status, exception, code):
    oai.fail(status)
    with pytest.raises(exception) as caught:
        sdk(oai).chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert caught.value.status_code == status and caught.value.code == code
    assert caught.value.response.headers["x-request-id"]


def test_openai_insufficient_quota_body_can_be_injected(oai):
    oai.fail(429, body=INSUFFICIENT_QUOTA)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(oai).chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert caught.value.code == "insufficient_quota"


def test_openai_wrong_key_is_401_without_echoing_the_key(oai):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=oai.base_url, api_key="sk-wrong-secret-1234", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=USER_HI
        )
    assert caught.value.code == "invalid_api_key"
    assert "sk-wrong-secret-1234" not in caught.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER_HI}, None),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "messages": USER_HI, "max_tokens": "10"}, "max_tokens"),
        ({"model": "m", "messages": USER_HI, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": USER_HI, "temperature": 2.5}, "temperature"),
        ({"model": "m", "messages": USER_HI, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": USER_HI, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "messages": USER_HI, "fallbacks": ["x"]}, None),
    ],
)
def test_openai_rejects_what_the_real_api_rejects(oai, body, param):
    answer = openai_post(oai, body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.json()["error"]["param"] == param


def test_openai_finish_reason_and_max_tokens(oai):
    oai.reply("I cannot help with that", finish_reason="content_filter")
    refused = openai_post(oai, {"model": "m", "messages": USER_HI}).json()["choices"][0]
    assert (refused["message"]["content"], refused["finish_reason"]) == ("I cannot help with that", "content_filter")
    oai.reply()  # back to the default text, cut by max_tokens like the real API
    choice = openai_post(oai, {"model": "m", "messages": USER_HI, "max_tokens": 2}).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("Hello from", "length")


def test_openai_stream_error_and_cut_reach_the_sdk(oai):
    oai.stream_error(after_chunks=1)
    with pytest.raises(openai.APIError, match="server had an error"):
        list(sdk(oai).chat.completions.create(model="m", messages=USER_HI, stream=True))
    oai.cut_stream(after_chunks=2)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in sdk(oai).chat.completions.create(model="m", messages=USER_HI, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Hello", " from"]


def test_openai_malformed_answers_are_not_json(oai):
    oai.malformed(times=2)
    with pytest.raises(json.JSONDecodeError):
        openai_post(oai, {"model": "m", "messages": USER_HI}).json()
    broken = openai_data(openai_post(oai, {"model": "m", "messages": USER_HI, "stream": True}).text)[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)


def test_openai_moderation_flags_configured_terms(oai):
    oai.flag_terms.add("bomb")
    result = sdk(oai).moderations.create(input=["I will KILL it", "a nice day", "bomb"])
    flagged = [r.flagged for r in result.results]
    assert flagged == [True, False, True]
    assert result.results[0].categories.violence is True
    assert result.results[0].category_scores.violence > 0.9 > result.results[1].category_scores.violence
    assert sdk(oai).moderations.create(input="hello", model="omni-moderation-latest").results[0].flagged is False


# ---- Anthropic -------------------------------------------------------------------


def test_anthropic_message_shape(ant):
    answer = anthropic_post(ant, CLAUDE_HI | {"system": [{"type": "text", "text": "be brief"}]})
    body = answer.json()
    assert answer.status_code == 200 and body["id"].startswith("msg_") and body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": "Hello from fake anthropic"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["usage"] == {
        "input_tokens": 6,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }


def test_anthropic_accepts_bearer_and_rejects_bad_keys(ant):
    assert anthropic_post(ant, CLAUDE_HI, **{"x-api-key": ""}).status_code == 401
    bearer = httpx.post(
        f"{ant.base_url}/v1/messages",
        json=CLAUDE_HI,
        headers={"authorization": f"Bearer {ant.api_key}", "anthropic-version": "2023-06-01"},
    )
    assert bearer.status_code == 200
    wrong = anthropic_post(ant, CLAUDE_HI, **{"x-api-key": "sk-ant-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "c", "messages": USER_HI}, "max_tokens: Field required"),
        (CLAUDE_HI | {"messages": [{"role": "system", "content": "x"}, *USER_HI]}, 'Unexpected role "system"'),
        (CLAUDE_HI | {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (CLAUDE_HI | {"temperature": 1.5}, "temperature"),
        (CLAUDE_HI | {"stream_options": {"include_usage": True}}, "Extra inputs are not permitted"),
        (CLAUDE_HI | {"messages": [{"role": "user", "content": ""}]}, "non-empty content"),
        (CLAUDE_HI | {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "Input tag"),
    ],
)
def test_anthropic_rejects_what_the_real_api_rejects(ant, body, message):
    answer = anthropic_post(ant, body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"] and error["request_id"].startswith("req_")


def test_anthropic_requires_the_version_header(ant):
    answer = httpx.post(f"{ant.base_url}/v1/messages", json=CLAUDE_HI, headers={"x-api-key": ant.api_key})
    assert answer.status_code == 400 and "anthropic-version" in answer.json()["error"]["message"]


def test_anthropic_stream_event_order_and_cumulative_usage(ant):
    ant.reply("one two three four five", finish_reason="refusal")
    answer = anthropic_post(ant, CLAUDE_HI | {"stream": True})
    events = anthropic_events(answer.text)
    assert all(name == data["type"] for name, data in events)
    deltas = ["content_block_delta"] * 5
    assert [name for name, _ in events] == [
        *("message_start", "content_block_start", "ping"),
        *deltas,
        *("content_block_stop", "message_delta", "message_stop"),
    ]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 4
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "one two three four five"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "refusal"
    assert delta["usage"]["output_tokens"] == 5  # the total, not an increment on message_start's 1
    assert "[DONE]" not in answer.text


def test_anthropic_errors_by_status(ant):
    ant.fail(529)
    ant.fail(429)
    overloaded = anthropic_post(ant, CLAUDE_HI)
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
    limited = anthropic_post(ant, CLAUDE_HI)
    assert limited.json()["error"]["type"] == "rate_limit_error" and limited.headers["retry-after"] == "1"


def test_anthropic_mid_stream_error_event(ant):
    ant.stream_error(after_chunks=2)
    events = anthropic_events(anthropic_post(ant, CLAUDE_HI | {"stream": True}).text)
    assert [n for n, _ in events][-3:] == ["content_block_delta", "content_block_delta", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


def test_anthropic_cut_stream_aborts_the_connection(ant):
    ant.cut_stream(after_chunks=1)
    raw = b""
    headers = {"x-api-key": ant.api_key, "anthropic-version": "2023-06-01"}
    url = f"{ant.base_url}/v1/messages"
    with (
        httpx.stream("POST", url, json=CLAUDE_HI | {"stream": True}, headers=headers) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for piece in r.iter_raw():
            raw += piece
    names = [n for n, _ in anthropic_events(raw.decode())]
    assert names[-1] == "content_block_delta" and "message_stop" not in names


# ---- Gemini ----------------------------------------------------------------------


def test_gemini_response_shape(gem):
    body = GEMINI_HI | {"systemInstruction": {"parts": [{"text": "be brief"}]}, "generationConfig": {}}
    answer = gemini_post(gem, body).json()
    candidate = answer["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Hello from fake gemini"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    usage = answer["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (6, 4, 10)
    assert answer["modelVersion"] == "gemini-2.5-flash" and answer["responseId"]


def test_gemini_key_by_header_or_query_and_bad_key_is_400(gem):
    by_query = httpx.post(gemini_url(gem), params={"key": gem.api_key}, json=GEMINI_HI)
    assert by_query.status_code == 200
    assert httpx.post(gemini_url(gem), json=GEMINI_HI).json()["error"]["status"] == "PERMISSION_DENIED"
    bad = gemini_post(gem, GEMINI_HI, key="AIza-wrong")
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "Please use a valid role: user, model."),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
        ({"contents": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}, 'Unknown name "type"'),
        ({"messages": USER_HI}, 'Unknown name "messages"'),
        (GEMINI_HI | {"generationConfig": {"temperature": "hot"}}, "generation_config.temperature"),
        (GEMINI_HI | {"generationConfig": {"maxOutputTokens": 1.5}}, "generation_config.max_output_tokens"),
        (GEMINI_HI | {"generationConfig": {"max_tokens": 10}}, 'Unknown name "max_tokens"'),
        (GEMINI_HI | {"systemInstruction": "be brief"}, "Invalid value at 'system_instruction'"),
    ],
)
def test_gemini_rejects_what_the_real_api_rejects(gem, body, message):
    answer = gemini_post(gem, body)
    error = answer.json()["error"]
    assert answer.status_code == 400 and (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_gemini_accepts_snake_case_fields(gem):
    body = GEMINI_HI | {"generation_config": {"max_output_tokens": 2, "temperature": 1}}
    candidate = gemini_post(gem, body).json()["candidates"][0]
    assert (candidate["content"]["parts"][0]["text"], candidate["finishReason"]) == ("Hello from", "MAX_TOKENS")


def test_gemini_stream_uses_crlf_separators_and_cumulative_usage(gem):
    raw = httpx.post(
        gemini_url(gem, "streamGenerateContent"),
        params={"alt": "sse"},
        json=GEMINI_HI,
        headers={"x-goog-api-key": gem.api_key},
    ).text
    assert raw.endswith("\r\n\r\n") and "[DONE]" not in raw
    events = [json.loads(e.removeprefix("data: ")) for e in raw.split("\r\n\r\n") if e]
    assert len(events) == 4
    counts = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert counts == [1, 2, 3, 4]
    assert "finishReason" not in events[0]["candidates"][0] and events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "Hello from fake gemini"


def test_gemini_safety_finish_has_no_content_and_block_prompt_has_no_candidates(gem):
    gem.reply(finish_reason="SAFETY")
    candidate = gemini_post(gem, GEMINI_HI).json()["candidates"][0]
    assert candidate["finishReason"] == "SAFETY" and "content" not in candidate
    gem.block_prompt()
    blocked = gemini_post(gem, GEMINI_HI).json()
    assert blocked["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in blocked
    assert "candidatesTokenCount" not in blocked["usageMetadata"]  # zero is omitted, as in proto3 JSON


def test_gemini_errors_by_status(gem):
    gem.fail(429)
    gem.fail(503)
    limited = gemini_post(gem, GEMINI_HI)
    assert limited.status_code == 429 and limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert limited.json()["error"]["details"][0]["retryDelay"] == "1s"
    assert gemini_post(gem, GEMINI_HI).json()["error"]["status"] == "UNAVAILABLE"


def test_gemini_stream_without_alt_sse_is_a_json_array(gem):
    answer = gemini_post(gem, GEMINI_HI, action="streamGenerateContent")
    assert answer.headers["content-type"].startswith("application/json")
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in answer.json()] == [1, 2, 3, 4]


def test_anthropic_and_gemini_malformed_streams(ant, gem):
    ant.malformed()
    events = anthropic_post(ant, CLAUDE_HI | {"stream": True}).text.split("\n\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[3].split("data: ", 1)[1])
    gem.malformed()
    url = gemini_url(gem, "streamGenerateContent") + "?alt=sse"
    raw = httpx.post(url, json=GEMINI_HI, headers={"x-goog-api-key": gem.api_key}).text
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.split("\r\n\r\n")[0].removeprefix("data: "))


def test_gemini_cut_stream_aborts_the_connection(gem):
    gem.cut_stream(after_chunks=2)
    raw = b""
    url = gemini_url(gem, "streamGenerateContent") + "?alt=sse"
    with (
        httpx.stream("POST", url, json=GEMINI_HI, headers={"x-goog-api-key": gem.api_key}) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for piece in r.iter_raw():
            raw += piece
    assert raw.count(b"data: ") == 2


# ---- Gemini media: Nano Banana and Veo --------------------------------------------------------

VEO_URL_MODEL = "veo-3.1-generate-preview"


def test_gemini_image_models_answer_a_png_and_reject_bad_inline_data(gem):
    body = {"contents": [{"parts": [{"text": "a red fox"}]}], "generationConfig": {"responseModalities": ["IMAGE"]}}
    [part] = gemini_post(gem, body, model="gemini-2.5-flash-image").json()["candidates"][0]["content"]["parts"]
    assert base64.b64decode(part["inlineData"]["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    bad = {"contents": [{"parts": [{"text": "edit"}, {"inlineData": {"mimeType": "image/png", "data": "%%"}}]}]}
    assert gemini_post(gem, bad, model="gemini-2.5-flash-image").json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "parameters",
    [{"durationSeconds": "8"}, {"durationSeconds": 7}, {"fps": 24}, {"resolution": "480p"}],
)
def test_gemini_veo_rejects_what_the_gemini_api_does_not_take(gem, parameters):
    body = {"instances": [{"prompt": "a fox"}], "parameters": parameters}
    answer = gemini_post(gem, body, action="predictLongRunning", model=VEO_URL_MODEL)
    assert (answer.status_code, answer.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_gemini_veo_operation_omits_done_while_running(gem):
    gem.video_script(polls=1)
    body = {"instances": [{"prompt": "a fox"}], "parameters": {"durationSeconds": 4}}
    name = gemini_post(gem, body, action="predictLongRunning", model=VEO_URL_MODEL).json()["name"]
    poll = httpx.get(f"{gem.base_url}/v1beta/{name}", headers={"x-goog-api-key": gem.api_key})
    assert poll.json() == {"name": name}
    done = httpx.get(f"{gem.base_url}/v1beta/{name}", headers={"x-goog-api-key": gem.api_key}).json()
    uri = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
    redirect = httpx.get(uri, headers={"x-goog-api-key": gem.api_key})
    assert redirect.status_code == 302 and redirect.headers["location"].startswith(
        f"http://127.0.0.1:{gem.storage_port}/"
    )
    assert httpx.get(redirect.headers["location"], headers={"x-goog-api-key": gem.api_key}).status_code == 400
    assert httpx.get(redirect.headers["location"]).headers["content-type"] == "video/mp4"
