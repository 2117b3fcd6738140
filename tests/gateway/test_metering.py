"""The ledger, end to end: one row per request, exactly once, for every way a request can end."""

import json
import time
from decimal import Decimal

import httpx
import pytest

from billing.models import UsageRecord
from providers.models import ModelRoute, RouteFallback
from tests.fakes import TokenCounts
from tests.helpers import MESSAGES, post, sse_events

pytestmark = pytest.mark.django_db(transaction=True)


def rows() -> list[UsageRecord]:
    return list(UsageRecord.objects.order_by("created_at"))


def test_a_successful_call_writes_exactly_one_priced_row(gateway, live_key, fake_providers):
    fake_providers["anthropic"].reply("Hi", input_tokens=1000, output_tokens=2000)

    body = post(gateway, live_key, {"model": "claude-sonnet-4-5", "messages": MESSAGES}).json()

    [row] = rows()
    assert row.request_id == body["id"]
    assert (row.status, row.provider, row.model, row.upstream_model) == (
        "succeeded",
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
    )
    assert (row.input_tokens, row.output_tokens) == (1000, 2000)
    assert row.cost_usd == Decimal("0.033") == Decimal(body["cost_usd"])  # 1000 * $3/M + 2000 * $15/M
    assert row.user.username == "live-user" and row.api_key is not None and row.latency_ms >= 0


def test_fallback_records_one_row_for_the_provider_that_answered_with_what_was_tried(gateway, live_key, fake_providers):
    RouteFallback.objects.create(
        route=ModelRoute.objects.get(name="gpt-4o"), fallback=ModelRoute.objects.get(name="gemini-2.5-flash")
    )
    fake_providers["openai"].fail(503)

    post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})

    [row] = rows()
    assert row.provider == "gemini" and row.status == "succeeded"
    assert [a["provider"] for a in row.attempts] == ["openai"]


def test_a_failed_request_is_recorded_at_zero_cost(gateway, live_key, fake_providers):
    fake_providers["openai"].fail(500)

    post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})

    [row] = rows()
    assert (row.status, row.cost_usd, row.error_code) == ("failed", 0, "upstream_error")
    assert row.attempts[0]["status"] == 500


def test_a_provider_refusal_is_recorded_as_blocked_and_billed_for_its_usage(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("", input_tokens=400, output_tokens=0, finish_reason="content_filter")
    post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES})
    [row] = rows()
    assert (row.status, row.error_code, row.input_tokens) == ("blocked", "content_policy_violation", 400)
    assert row.cost_usd == Decimal("0.001")  # 400 tokens at $2.50 per million


def test_a_refusal_at_the_start_of_a_stream_is_billed_like_one_without_a_stream(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("", input_tokens=400, output_tokens=0, finish_reason="content_filter")

    response = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES, "stream": True})

    assert response.status_code == 400 and response.json()["error"]["code"] == "content_policy_violation"
    [row] = rows()
    assert (row.status, row.provider, row.input_tokens, row.usage_estimated) == ("blocked", "openai", 400, False)
    assert row.cost_usd == Decimal("0.001")  # the provider charged the prompt it declined


def test_a_stream_is_metered_with_the_usage_the_provider_reported(gateway, live_key, fake_providers):
    fake_providers["gemini"].reply("a b c", input_tokens=40, output_tokens=3)

    response = post(gateway, live_key, {"model": "gemini-2.5-flash", "messages": MESSAGES, "stream": True})

    done = json.loads(sse_events(response)[-1][1])
    [row] = rows()
    assert (row.input_tokens, row.output_tokens, row.usage_estimated) == (40, 3, False)
    assert row.cost_usd == Decimal(done["cost_usd"])


def test_a_stream_cut_midway_is_metered_with_an_estimate(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("one two three four five six seven eight")
    fake_providers["openai"].cut_stream(after_chunks=3)

    post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES, "stream": True})

    [row] = rows()
    assert (row.status, row.error_code, row.usage_estimated) == ("failed", "stream_interrupted", True)
    assert row.output_tokens == 4  # "one two three" is 13 characters: about 4 tokens
    assert row.cost_usd > 0


def wait_for_rows(count: int, timeout: float = 3.0) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := rows()) >= count:
            return found
        time.sleep(0.02)
    return rows()


def test_a_client_disconnecting_midway_is_metered_as_canceled(gateway, live_key, fake_providers):
    fake_providers["openai"].reply("one two three four five six")
    fake_providers["openai"].stall_stream(after_chunks=2, seconds=2.0)

    with httpx.stream(
        "POST",
        gateway + "/v1/chat/complete",
        headers={"Authorization": f"Bearer {live_key}"},
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
        timeout=5,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and "two" in line:
                break  # leave after the second delta, while the provider is stalled

    [row] = wait_for_rows(1)
    assert (row.status, row.error_code, row.usage_estimated) == ("canceled", "client_disconnected", True)
    assert row.output_tokens == 2  # "one two" was produced


def test_requests_without_a_route_or_over_the_rate_limit_write_no_row(gateway, live_key, fake_providers, settings):
    settings.RATE_LIMIT = (2, 60.0)
    assert post(gateway, live_key, {"model": "no-such-model", "messages": MESSAGES}).status_code == 404
    assert rows() == []
    assert post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES}).status_code == 200
    assert post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES}).status_code == 429
    assert len(rows()) == 1


def test_a_provider_that_reports_no_usage_is_billed_on_an_estimate(gateway, live_key, fake_providers):
    completion = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "x" * 400},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    fake_providers["openai"].fail(200, body=completion)  # a 200 without "usage", as some compatible servers send

    body = post(gateway, live_key, {"model": "gpt-4o", "messages": MESSAGES}).json()

    [row] = rows()
    assert (row.usage_estimated, row.output_tokens) == (True, 100)  # 400 characters: about 100 tokens
    assert row.cost_usd > 0 and Decimal(body["cost_usd"]) == row.cost_usd
    assert body["usage"]["output_tokens"] == 100


def test_costs_are_shown_in_fixed_point():
    from billing.pricing import usd_text

    assert usd_text(Decimal(0)) == "0.00000000"
    assert usd_text(Decimal("1.2E-7")) == "0.00000012"


# --- every token kind at its own price (the shipped list prices of the three routes) ---------------
# (route, provider, reply counts, expected ledger counts, expected cost)
CACHED_AND_REASONING = [
    pytest.param(
        "gpt-4o",
        "openai",
        # 10,000 prompt tokens of which 8,000 cached; 50 visible output tokens plus 200 reasoning.
        TokenCounts(cached=8000, reasoning=200),
        {"input_tokens": 10000, "cached_input_tokens": 8000, "output_tokens": 250, "reasoning_tokens": 200},
        Decimal("0.0175"),  # 2,000 x $2.50 + 8,000 x $1.25 + 250 x $10, per million
        id="openai",
    ),
    pytest.param(
        "claude-sonnet-4-5",
        "anthropic",
        # 10,000 prompt tokens: 5,000 read from the cache, 2,000 written for 5 minutes, 1,000 for an hour.
        TokenCounts(cached=5000, cache_write=2000, cache_write_1h=1000),
        {
            "input_tokens": 10000,
            "cached_input_tokens": 5000,
            "cache_write_input_tokens": 2000,
            "cache_write_1h_input_tokens": 1000,
            "output_tokens": 50,
        },
        Decimal("0.02175"),  # 2,000 x $3 + 5,000 x $0.30 + 2,000 x $3.75 + 1,000 x $6 + 50 x $15
        id="anthropic",
    ),
    pytest.param(
        "gemini-2.5-flash",
        "gemini",
        # 10,000 prompt tokens of which 9,000 cached; 50 visible output tokens plus 400 thinking.
        TokenCounts(cached=9000, reasoning=400),
        {"input_tokens": 10000, "cached_input_tokens": 9000, "output_tokens": 450, "reasoning_tokens": 400},
        Decimal("0.001695"),  # 1,000 x $0.30 + 9,000 x $0.03 + 450 x $2.50
        id="gemini",
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize("model, provider, counts, expected, cost", CACHED_AND_REASONING)
def test_cached_and_reasoning_tokens_are_billed_at_their_own_prices(
    gateway, live_key, fake_providers, model, provider, counts, expected, cost, stream
):
    fake_providers[provider].reply("one two three", input_tokens=10000, output_tokens=50, counts=counts)

    response = post(gateway, live_key, {"model": model, "messages": MESSAGES, "stream": stream})

    assert response.status_code == 200, response.text
    [row] = rows()
    assert {field: getattr(row, field) for field in expected} == expected
    assert (row.cost_usd, row.usage_estimated) == (cost, False)
    shown = json.loads(sse_events(response)[-1][1]) if stream else response.json()
    assert Decimal(shown["cost_usd"]) == cost  # the client is shown what the ledger holds


def test_a_cut_anthropic_stream_keeps_the_prompt_counts_of_message_start(gateway, live_key, fake_providers):
    anthropic = fake_providers["anthropic"]
    anthropic.reply(
        "one two three four five six", input_tokens=10000, counts=TokenCounts(cached=5000, cache_write=2000)
    )
    anthropic.cut_stream(after_chunks=2)

    post(gateway, live_key, {"model": "claude-sonnet-4-5", "messages": MESSAGES, "stream": True})

    [row] = rows()
    assert (row.status, row.error_code, row.usage_estimated) == ("failed", "stream_interrupted", True)
    # The prompt as Anthropic counted it, not an estimate from its characters; the output is estimated.
    assert (row.input_tokens, row.cached_input_tokens, row.cache_write_input_tokens) == (10000, 5000, 2000)
    assert row.output_tokens == 2  # "one two " is 8 characters: about 2 tokens
    # 3,000 x $3 + 5,000 x $0.30 + 2,000 x $3.75 + 2 x $15, per million
    assert row.cost_usd == Decimal("0.01803")
