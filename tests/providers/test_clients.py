"""Provider chat clients against the fake upstreams (real HTTP on 127.0.0.1).

The behaviour every protocol must share (text, finish reasons, usage, error mapping,
timeouts, cut streams) runs once per protocol through the `upstream` fixture; what only
one protocol has (request translation, its own error shapes) has its own tests below.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from providers.clients import (
    CLIENTS,
    AnthropicClient,
    GeminiClient,
    OpenAIClient,
    OpenAICompatibleClient,
    client_for,
)
from providers.clients.anthropic import anthropic_usage, counts_of
from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ImageRequest,
    ProviderClient,
    ProviderConfig,
    ProviderError,
    Usage,
)
from providers.clients.http_client import retry_after_s
from providers.clients.openai import openai_usage
from providers.http import close_shared_session
from tests.fakes import INSUFFICIENT_QUOTA, FakeAnthropic, FakeGemini, FakeOpenAI, FakeProvider, TokenCounts

HI = ChatRequest(messages=(ChatMessage("user", "say hi to me"),))
CONVERSATION = ChatRequest(
    messages=(
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi, how can I help?"),
        ChatMessage("system", "Answer in English."),
        ChatMessage("user", "Name a colour"),
    ),
    max_tokens=50,
    temperature=0.5,
    top_p=0.9,
    stop=("END",),
)
TEXT = "The quick brown fox"


@dataclass(frozen=True)
class Protocol:
    fixture: str
    model: str
    refusal: str  # the provider's finish reason for a refused answer
    overloaded: int
    bad_request_message: str  # the fake's default 400 message
    rate_limit_headers: dict[str, str] | None  # sent with a 429 (None: the provider's own)
    retry_after_s: float


PROTOCOLS = {
    "openai": Protocol("oai", "gpt-4o-mini", "content_filter", 503, "Bad request.", {"retry-after-ms": "1500"}, 1.5),
    # Anthropic's fake sends retry-after: 1 with every 429.
    "anthropic": Protocol("ant", "claude-sonnet-4-5", "refusal", 529, "Invalid request.", None, 1.0),
    # Gemini has no rate-limit headers: the fake's 429 body holds RetryInfo.retryDelay "1s".
    "gemini": Protocol("gem", "gemini-2.5-flash", "SAFETY", 503, "Request contains an invalid argument.", None, 1.0),
}


@dataclass
class Upstream:
    fake: FakeProvider
    protocol: Protocol

    @property
    def model(self) -> str:
        return self.protocol.model

    def client(self, **config: Any) -> ProviderClient:
        return client_of(self.fake, **config)


def client_of(fake: FakeProvider, kind: str | None = None, **config: Any) -> ProviderClient:
    """The registry's client for a fake (whose name is its provider kind) with config changes."""
    kind = kind or fake.provider
    provider = ProviderConfig(f"fake-{kind}", kind, fake.base_url, fake.api_key)
    return client_for(dataclasses.replace(provider, **config))


# ---- fixtures: each fake starts once per module and is reset per test ---------------


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start() as fake:
        yield fake


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini.start() as fake:
        yield fake


@pytest.fixture
def oai(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@pytest.fixture
def ant(anthropic_server: FakeAnthropic) -> FakeAnthropic:
    anthropic_server.reset()
    return anthropic_server


@pytest.fixture
def gem(gemini_server: FakeGemini) -> FakeGemini:
    gemini_server.reset()
    return gemini_server


@pytest.fixture(params=sorted(PROTOCOLS))
def upstream(request: pytest.FixtureRequest) -> Upstream:
    protocol = PROTOCOLS[request.param]
    return Upstream(request.getfixturevalue(protocol.fixture), protocol)


@pytest.fixture(autouse=True)
async def _close_session() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await close_shared_session()


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [delta async for delta in stream]


async def collect_until_error(stream: AsyncIterator[ChatDelta]) -> tuple[list[ChatDelta], ProviderError]:
    deltas: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in stream:
            deltas.append(delta)
    return deltas, caught.value


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# ---- what every protocol does --------------------------------------------------------


async def test_complete_returns_text_finish_reason_and_usage(upstream: Upstream) -> None:
    upstream.fake.reply(TEXT, input_tokens=11, output_tokens=4)
    result = await upstream.client().complete(HI, model=upstream.model)
    assert result.content == TEXT
    assert result.finish_reason == STOP
    assert result.usage == Usage(input_tokens=11, output_tokens=4)
    assert result.upstream_model == upstream.model
    assert result.upstream_id


async def test_stream_yields_text_then_finish_reason_and_final_usage(upstream: Upstream) -> None:
    # 4 words but 9 output tokens: Anthropic's message_start says 1 and its message_delta 9
    # (a running total); Gemini's chunks say 1, 2, 3, 9. Adding them up would be wrong.
    upstream.fake.reply(TEXT, input_tokens=11, output_tokens=9)
    deltas = await collect(upstream.client().stream(HI, model=upstream.model))
    *pieces, last = deltas
    assert len(pieces) >= 2
    assert "".join(d.content for d in pieces) == TEXT
    assert all(d.finish_reason is None and d.usage is None for d in pieces)
    assert last.finish_reason == STOP
    assert last.usage == Usage(input_tokens=11, output_tokens=9)


async def test_hitting_max_tokens_finishes_with_length(upstream: Upstream) -> None:
    request = dataclasses.replace(HI, max_tokens=2)  # the fakes' default answer has 4 words
    result = await upstream.client().complete(request, model=upstream.model)
    assert result.finish_reason == LENGTH
    assert len(result.content.split()) == 2


async def test_refusal_finishes_with_content_filter(upstream: Upstream) -> None:
    upstream.fake.reply("I can't help with that.", finish_reason=upstream.protocol.refusal)
    client = upstream.client()
    result = await client.complete(HI, model=upstream.model)
    deltas = await collect(client.stream(HI, model=upstream.model))
    assert result.finish_reason == CONTENT_FILTER
    assert deltas[-1].finish_reason == CONTENT_FILTER


async def test_rate_limit_is_retryable_with_retry_after(upstream: Upstream) -> None:
    upstream.fake.fail(429, headers=upstream.protocol.rate_limit_headers)
    with pytest.raises(ProviderError) as caught:
        await upstream.client().complete(HI, model=upstream.model)
    error = caught.value
    assert (error.status, error.code, error.retryable) == (429, "upstream_rate_limited", True)
    assert error.retry_after_s == upstream.protocol.retry_after_s


async def test_overload_is_retryable(upstream: Upstream) -> None:
    upstream.fake.fail(upstream.protocol.overloaded)
    with pytest.raises(ProviderError) as caught:
        await upstream.client().complete(HI, model=upstream.model)
    assert caught.value.code == "upstream_overloaded"
    assert caught.value.retryable is True


async def test_stream_that_fails_before_starting_raises_the_status_error(upstream: Upstream) -> None:
    upstream.fake.fail(500)
    deltas, error = await collect_until_error(upstream.client().stream(HI, model=upstream.model))
    assert deltas == []
    assert (error.status, error.code, error.retryable) == (500, "upstream_error", True)


async def test_bad_request_is_not_retryable_and_keeps_the_provider_message(upstream: Upstream) -> None:
    upstream.fake.fail(400)
    client = upstream.client()
    with pytest.raises(ProviderError) as caught:
        await client.complete(HI, model=upstream.model)
    error = caught.value
    assert (error.status, error.code, error.retryable) == (400, "upstream_invalid_request", False)
    assert error.message == upstream.protocol.bad_request_message
    assert str(error) == f"{client.provider.name}: {upstream.protocol.bad_request_message}"


async def test_unknown_model_is_model_not_found(upstream: Upstream) -> None:
    upstream.fake.fail(404)
    with pytest.raises(ProviderError) as caught:
        await upstream.client().complete(HI, model="no-such-model")
    assert (caught.value.code, caught.value.retryable) == ("model_not_found", False)


async def test_wrong_key_is_a_retryable_auth_error_without_the_key(upstream: Upstream) -> None:
    with pytest.raises(ProviderError) as caught:
        await upstream.client(api_key="wrong-secret-key").complete(HI, model=upstream.model)
    error = caught.value
    assert (error.code, error.retryable) == ("upstream_auth_error", True)
    assert error.status in (400, 401)  # Gemini says 400 with reason API_KEY_INVALID
    assert "wrong-secret-key" not in str(error)


async def test_read_timeout_is_retryable(upstream: Upstream) -> None:
    upstream.fake.delay(0.5)
    with pytest.raises(ProviderError) as caught:
        await upstream.client(read_timeout_s=0.2).complete(HI, model=upstream.model)
    assert (caught.value.code, caught.value.retryable) == ("upstream_timeout", True)


async def test_closed_port_is_retryable_unreachable(upstream: Upstream) -> None:
    base_url = upstream.fake.base_url.replace(f":{upstream.fake.port}", f":{closed_port()}")
    with pytest.raises(ProviderError) as caught:
        await upstream.client(base_url=base_url).complete(HI, model=upstream.model)
    error = caught.value
    assert (error.code, error.retryable, error.status) == ("upstream_unreachable", True, None)


async def test_a_cookie_a_provider_sets_is_never_sent_back(upstream: Upstream) -> None:
    # One session serves every user's requests: a cookie kept from one answer (Cloudflare's __cf_bm,
    # say) would ride on everyone's next requests. By host name, since aiohttp keeps none for an IP.
    client = upstream.client(base_url=upstream.fake.base_url.replace("127.0.0.1", "localhost"))
    upstream.fake.fail(upstream.protocol.overloaded, headers={"Set-Cookie": "__cf_bm=first-user; Path=/"})
    with pytest.raises(ProviderError):
        await client.complete(HI, model=upstream.model)
    upstream.fake.reply(TEXT)
    await client.complete(HI, model=upstream.model)
    answered = upstream.fake.last_request
    assert answered is not None and "cookie" not in answered.headers


async def test_cut_stream_is_retryable_after_the_first_deltas(upstream: Upstream) -> None:
    upstream.fake.reply(TEXT)
    upstream.fake.cut_stream(2)
    deltas, error = await collect_until_error(upstream.client().stream(HI, model=upstream.model))
    assert "".join(d.content for d in deltas) == "The quick"
    assert error.retryable is True
    assert error.code in ("upstream_stream_cut", "upstream_unreachable")


async def test_stream_closed_without_its_end_is_cut(upstream: Upstream) -> None:
    upstream.fake.fail(200, body={})  # a 200 that ends cleanly without a single event
    deltas, error = await collect_until_error(upstream.client().stream(HI, model=upstream.model))
    assert deltas == []
    assert (error.code, error.retryable) == ("upstream_stream_cut", True)


async def test_malformed_answer_is_a_retryable_bad_response(upstream: Upstream) -> None:
    upstream.fake.malformed()
    with pytest.raises(ProviderError) as caught:
        await upstream.client().complete(HI, model=upstream.model)
    assert (caught.value.code, caught.value.retryable) == ("upstream_bad_response", True)


async def test_malformed_stream_is_a_retryable_bad_response(upstream: Upstream) -> None:
    upstream.fake.malformed()
    _, error = await collect_until_error(upstream.client().stream(HI, model=upstream.model))
    assert (error.code, error.retryable) == ("upstream_bad_response", True)


async def test_answer_without_the_expected_fields_is_a_bad_response(upstream: Upstream) -> None:
    upstream.fake.fail(200, body={"unexpected": True})
    with pytest.raises(ProviderError) as caught:
        await upstream.client().complete(HI, model=upstream.model)
    assert (caught.value.code, caught.value.retryable) == ("upstream_bad_response", True)


# ---- OpenAI ----------------------------------------------------------------------------


async def test_openai_sends_max_completion_tokens_and_sampling_settings(oai: FakeOpenAI) -> None:
    await client_of(oai).complete(CONVERSATION, model="gpt-4o-mini")
    received = oai.requests[0]
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {oai.api_key}"
    assert received.json["max_completion_tokens"] == 50
    assert "max_tokens" not in received.json
    assert received.json["temperature"] == 0.5
    assert (received.json["top_p"], received.json["stop"]) == (0.9, ["END"])
    assert [m["role"] for m in received.json["messages"]] == ["system", "user", "assistant", "system", "user"]


async def test_openai_compatible_sends_max_tokens(oai: FakeOpenAI) -> None:
    await client_of(oai, "openai_compatible").complete(CONVERSATION, model="llama3")
    assert oai.requests[0].json["max_tokens"] == 50
    assert "max_completion_tokens" not in oai.requests[0].json


async def test_openai_compatible_without_a_key_sends_no_authorization(oai: FakeOpenAI) -> None:
    with pytest.raises(ProviderError):  # this fake wants a key; a local Ollama would not
        await client_of(oai, "openai_compatible", api_key="").complete(HI, model="llama3")
    assert "authorization" not in oai.requests[0].headers


async def test_openai_unset_settings_are_left_out(oai: FakeOpenAI) -> None:
    await client_of(oai).complete(HI, model="gpt-4o-mini")
    assert set(oai.requests[0].json) == {"model", "messages"}


async def test_openai_stream_asks_for_usage(oai: FakeOpenAI) -> None:
    await collect(client_of(oai).stream(HI, model="gpt-4o-mini"))
    body = oai.requests[0].json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_openai_error_event_mid_stream_is_retryable(oai: FakeOpenAI) -> None:
    oai.reply(TEXT)
    oai.stream_error(2)
    deltas, error = await collect_until_error(client_of(oai).stream(HI, model="gpt-4o-mini"))
    assert "".join(d.content for d in deltas) == "The quick"
    assert (error.code, error.retryable) == ("upstream_stream_error", True)


async def test_openai_insufficient_quota_keeps_the_upstream_code(oai: FakeOpenAI) -> None:
    oai.fail(429, body=INSUFFICIENT_QUOTA)
    with pytest.raises(ProviderError) as caught:
        await client_of(oai).complete(HI, model="gpt-4o-mini")
    assert caught.value.details["upstream_code"] == "insufficient_quota"


async def test_error_message_is_bounded_and_never_holds_the_key(oai: FakeOpenAI) -> None:
    oai.fail(400, body={"error": {"message": f"key {oai.api_key} rejected " + "x" * 1000}})
    with pytest.raises(ProviderError) as caught:
        await client_of(oai).complete(HI, model="gpt-4o-mini")
    assert oai.api_key not in caught.value.message
    assert len(caught.value.message) == 500


def test_retry_after_prefers_milliseconds_then_seconds_then_an_http_date() -> None:
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= (retry_after_s({"retry-after": in_a_minute}) or 0) <= 60
    assert retry_after_s({"retry-after": "soon"}) is None


def test_openai_usage_reads_details_and_tolerates_their_absence() -> None:
    full = {
        "prompt_tokens": 20,
        "completion_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 12},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    expected = Usage(input_tokens=20, output_tokens=8, cached_input_tokens=12, reasoning_tokens=5)
    assert openai_usage(full) == expected
    bare = {"prompt_tokens": 20, "completion_tokens": 8, "prompt_tokens_details": None}
    assert openai_usage(bare) == Usage(input_tokens=20, output_tokens=8)
    assert openai_usage(None).estimated is True


# ---- Anthropic -------------------------------------------------------------------------


async def test_anthropic_sends_system_text_top_level_and_required_headers(ant: FakeAnthropic) -> None:
    await client_of(ant).complete(CONVERSATION, model="claude-sonnet-4-5")
    received = ant.requests[0]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == ant.api_key
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.json["system"] == "Be brief.\n\nAnswer in English."
    assert [m["role"] for m in received.json["messages"]] == ["user", "assistant", "user"]
    assert (received.json["max_tokens"], received.json["stop_sequences"]) == (50, ["END"])


async def test_anthropic_defaults_max_tokens(ant: FakeAnthropic) -> None:
    await client_of(ant).complete(HI, model="claude-sonnet-4-5")
    assert ant.requests[0].json["max_tokens"] == 4096
    assert "system" not in ant.requests[0].json


async def test_anthropic_overloaded_error_event_is_retryable(ant: FakeAnthropic) -> None:
    ant.reply(TEXT)
    ant.stream_error(2)
    deltas, error = await collect_until_error(client_of(ant).stream(HI, model="claude-sonnet-4-5"))
    assert "".join(d.content for d in deltas) == "The quick"
    assert (error.code, error.retryable, error.message) == ("upstream_stream_error", True, "Overloaded")


def test_anthropic_usage_counts_cache_writes_and_reads_as_input_each_kept_apart() -> None:
    counts = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30,
        "output_tokens": 5,
    }
    # Without the cache_creation breakdown every write is a 5-minute one.
    assert anthropic_usage(counts) == Usage(
        input_tokens=60, output_tokens=5, cached_input_tokens=30, cache_write_tokens=20
    )
    usage = {**counts, "cache_creation": {"ephemeral_5m_input_tokens": 12, "ephemeral_1h_input_tokens": 8}}
    assert anthropic_usage(counts_of(usage)) == Usage(
        input_tokens=60, output_tokens=5, cached_input_tokens=30, cache_write_tokens=12, cache_write_1h_tokens=8
    )


async def test_each_provider_reports_cached_and_reasoning_tokens_in_pulses_terms(upstream: Upstream) -> None:
    # 1,000 prompt tokens of which 600 cached; 4 visible output tokens plus 30 of reasoning. Anthropic
    # reports no reasoning count of its own (thinking is inside its output_tokens).
    upstream.fake.reply(TEXT, input_tokens=1000, output_tokens=4, counts=TokenCounts(cached=600, reasoning=30))
    result = await upstream.client().complete(HI, model=upstream.model)
    deltas = await collect(upstream.client().stream(HI, model=upstream.model))
    reasoning = 0 if upstream.fake.provider == "anthropic" else 30
    expected = Usage(input_tokens=1000, output_tokens=34, cached_input_tokens=600, reasoning_tokens=reasoning)
    assert result.usage == expected and deltas[-1].usage == expected


# ---- Gemini ----------------------------------------------------------------------------


async def test_gemini_translates_roles_system_text_and_generation_config(gem: FakeGemini) -> None:
    await client_of(gem).complete(CONVERSATION, model="gemini-2.5-flash")
    received = gem.requests[0]
    assert received.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert received.headers["x-goog-api-key"] == gem.api_key
    assert [c["role"] for c in received.json["contents"]] == ["user", "model", "user"]
    assert received.json["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in English."}]}
    assert received.json["generationConfig"] == {
        "temperature": 0.5,
        "maxOutputTokens": 50,
        "topP": 0.9,
        "stopSequences": ["END"],
    }


async def test_gemini_streams_over_sse(gem: FakeGemini) -> None:
    await collect(client_of(gem).stream(HI, model="gemini-2.5-flash"))
    received = gem.requests[0]
    assert received.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert received.query == {"alt": "sse"}
    assert "generationConfig" not in received.json and "systemInstruction" not in received.json


async def test_gemini_blocked_prompt_is_a_final_content_policy_violation(gem: FakeGemini) -> None:
    gem.block_prompt("PROHIBITED_CONTENT", times=2)
    client = client_of(gem)
    with pytest.raises(ProviderError) as caught:
        await client.complete(HI, model="gemini-2.5-flash")
    _, stream_error = await collect_until_error(client.stream(HI, model="gemini-2.5-flash"))
    for error in (caught.value, stream_error):
        assert (error.code, error.retryable, error.status) == ("content_policy_violation", False, 400)
        assert "PROHIBITED_CONTENT" in error.message


async def test_gemini_skips_thoughts_and_bills_them_as_output(gem: FakeGemini) -> None:
    parts = [{"text": "Pondering...", "thought": True}, {"text": "Blue"}]
    answer = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 1,
            "thoughtsTokenCount": 7,
            "cachedContentTokenCount": 2,
        },
    }
    gem.fail(200, body=answer)
    result = await client_of(gem).complete(HI, model="gemini-2.5-flash")
    assert result.content == "Blue"
    assert result.usage == Usage(input_tokens=5, output_tokens=8, cached_input_tokens=2, reasoning_tokens=7)


# ---- registry --------------------------------------------------------------------------


def test_registry_has_one_client_per_provider_config() -> None:
    config = ProviderConfig("local-vllm", "openai_compatible", "http://vllm:8000/v1", "none")
    client = client_for(config)
    assert isinstance(client, OpenAIClient)
    assert client_for(dataclasses.replace(config)) is client
    assert client_for(dataclasses.replace(config, read_timeout_s=1.0)) is not client
    assert CLIENTS["anthropic"] is AnthropicClient
    assert CLIENTS["gemini"] is GeminiClient


def test_openai_sends_max_completion_tokens_and_compatible_servers_max_tokens() -> None:
    request = dataclasses.replace(HI, max_tokens=7)
    openai = client_for(ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "sk-x"))
    compatible = client_for(ProviderConfig("vllm", "openai_compatible", "http://127.0.0.1:9/v1", "none"))
    assert isinstance(compatible, OpenAICompatibleClient)
    assert openai.body(request, "m")["max_completion_tokens"] == 7 and "max_tokens" not in openai.body(request, "m")
    assert compatible.body(request, "m")["max_tokens"] == 7


async def test_a_capability_the_provider_lacks_is_unsupported_and_retryable() -> None:
    client = client_for(ProviderConfig("claude", "anthropic", "http://127.0.0.1:9", "sk-ant-x"))
    with pytest.raises(ProviderError) as caught:
        await client.generate_image(ImageRequest("a red fox"), model="claude-sonnet-4-5")
    assert (caught.value.code, caught.value.retryable) == ("unsupported_capability", True)


def test_gemini_reads_the_wait_from_retry_info_and_a_bad_key_is_pulses_own_problem() -> None:
    client = client_for(ProviderConfig("gemini", "gemini", "http://127.0.0.1:9", "AIza-x"))
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}
    throttled = client.status_error(429, {"error": {"message": "slow down", "details": [retry_info]}}, {})
    assert throttled.retry_after_s == 34.0
    bad_key = {"error": {"message": "API key not valid", "details": [{"reason": "API_KEY_INVALID"}]}}
    assert (client.status_error(400, bad_key, {}).code, client.status_error(400, bad_key, {}).retryable) == (
        "upstream_auth_error",
        True,
    )
    # Another protocol's 400 with the same body is the client's own bad request.
    openai = client_for(ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "sk-x"))
    assert openai.status_error(400, bad_key, {}).retryable is False


def test_registry_refuses_a_kind_without_a_client() -> None:
    with pytest.raises(ValueError, match="bedrock"):
        client_for(ProviderConfig("bedrock", "bedrock", "https://bedrock.test.invalid", "x"))
