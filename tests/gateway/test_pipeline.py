"""The request pipeline is one sequence for every operation, not a chat-only one: an image
operation goes through the same planning, budget hold, moderation, fallback and metering.

Chat goes through it end to end in the endpoint tests (real HTTP to the live gateway, fake
providers). No provider client generates images yet (that is the media-jobs work), so these
tests register a small in-process image client for one provider kind: what they check is the
pipeline's behaviour (units, prices, caps, fallback, the ledger row), not a wire protocol.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from billing.models import UsageRecord, UserLimits
from core.errors import QuotaExceeded
from core.shutdown import run_shutdown_hooks
from gateway.auth import authenticate_key
from gateway.chat_formats import ChatCall
from gateway.errors import ApiError
from gateway.moderation.base import ContentBlocked
from gateway.moderation.registry import configure_hooks
from gateway.pipeline import ChatCompletion, ChatStreaming, ImageGeneration, RequestContext, open_stream, run
from gateway.pipeline.candidates import plan_candidates
from gateway.pipeline.meter import Meter
from providers import clients
from providers.breaker import breaker
from providers.clients.base import (
    ChatMessage,
    ChatRequest,
    ImageRequest,
    ImageResult,
    MediaOutput,
    ProviderClient,
    Usage,
)
from providers.models import ModelRoute, Provider, RouteFallback
from providers.routing import arouting_table

pytestmark = pytest.mark.django_db(transaction=True)
PNG = b"\x89PNG\r\n\x1a\n"


class ScriptedImageClient(ProviderClient):
    """Generates `count` tiny images, or fails the way a provider named in `failing` does."""

    failing: set[str] = set()
    calls: list[tuple[str, ImageRequest]] = []

    async def generate_image(self, request: ImageRequest, *, model: str) -> ImageResult:
        type(self).calls.append((self.provider.name, request))
        if self.provider.name in self.failing:
            raise self.error("overloaded", retryable=True, status=503, code="upstream_overloaded")
        images = [MediaOutput("image/png", PNG) for _ in range(request.count)]
        return ImageResult(images, model, Usage(images=request.count))


@pytest.fixture
def image_routes(monkeypatch):
    """Two image providers: `pixels` (primary, $0.039 an image) falling back to `canvas` ($0.05)."""
    monkeypatch.setitem(clients.CLIENTS, "replicate", ScriptedImageClient)
    clients.client_for.cache_clear()
    ScriptedImageClient.failing, ScriptedImageClient.calls = set(), []
    routes = {}
    for name, price in (("pixels", "0.039"), ("canvas", "0.05")):
        provider = Provider(name=name, kind="replicate", base_url="http://127.0.0.1:9")
        provider.api_key = "r8_unused"
        provider.save()
        routes[name] = ModelRoute.objects.create(
            name=f"{name}-image", provider=provider, modality="image", usd_per_image=Decimal(price)
        )
    RouteFallback.objects.create(route=routes["pixels"], fallback=routes["canvas"], position=0)
    yield routes
    clients.client_for.cache_clear()


@pytest.fixture(autouse=True)
async def _close_loop_resources():
    """Each async test runs on its own event loop: close what it pooled there (the aiohttp session,
    the PostgreSQL and Redis pools), as a worker does at shutdown."""
    yield
    await run_shutdown_hooks()
    await sync_to_async(connections.close_all)()  # the async ORM's thread's connection (the asserts)


@pytest.fixture
def principal(api_key):
    return authenticate_key(api_key[1])


def context(principal, request_id: str = "req-image") -> RequestContext:
    return RequestContext(principal, request_id, "/v1/images/generate")


def four_sunsets(**changes) -> ImageGeneration:
    return ImageGeneration(model="pixels-image", prompt_text="Beautiful sunset", count=4, **changes)


async def test_an_image_operation_is_billed_per_image_at_its_route_price(image_routes, principal):
    answer = await run(context(principal), four_sunsets())

    assert len(answer.result.images) == 4 and answer.usage.images == 4
    assert answer.cost_usd == Decimal("0.156")  # 4 x $0.039
    row = await UsageRecord.objects.aget()
    assert (row.modality, row.images, row.cost_usd, row.status, row.provider) == (
        "image",
        4,
        Decimal("0.156"),
        "succeeded",
        "pixels",
    )
    assert (row.input_tokens, row.output_tokens) == (0, 0)


async def test_an_image_operation_falls_back_like_chat_and_bills_the_provider_that_answered(image_routes, principal):
    ScriptedImageClient.failing = {"pixels"}

    answer = await run(context(principal), four_sunsets())

    assert answer.candidate.provider.name == "canvas" and answer.cost_usd == Decimal("0.2")
    assert [name for name, _ in ScriptedImageClient.calls] == ["pixels", "canvas"]
    row = await UsageRecord.objects.aget()
    assert (row.provider, row.cost_usd) == ("canvas", Decimal("0.2"))
    assert [a["code"] for a in row.attempts] == ["upstream_overloaded"]


async def test_every_image_provider_failing_is_one_failed_row_at_zero_cost(image_routes, principal):
    ScriptedImageClient.failing = {"pixels", "canvas"}

    with pytest.raises(ApiError) as caught:
        await run(context(principal), four_sunsets())

    assert caught.value.status == 503
    row = await UsageRecord.objects.aget()
    assert (row.status, row.cost_usd, row.images) == ("failed", 0, 0)


async def test_the_worst_case_held_for_images_is_the_count_at_the_dearest_candidate(image_routes, principal):
    table = await arouting_table()
    operation = four_sunsets()
    held = Meter(context(principal), operation, plan_candidates(operation, table)).worst_case()
    assert (held.images, held.cost_usd, held.tokens) == (4, Decimal("0.2"), 0)


async def test_an_image_cap_refuses_before_any_provider_is_called(image_routes, api_key, user):
    await UserLimits.objects.acreate(user=user, monthly_image_cap=3)
    principal = authenticate_key(api_key[1])

    with pytest.raises(QuotaExceeded):
        await run(context(principal), four_sunsets())

    assert ScriptedImageClient.calls == [] and not await UsageRecord.objects.aexists()


async def test_an_image_prompt_is_moderated_with_its_param(image_routes, principal, settings):
    settings.MODERATION_BLOCKLIST = ["sunset"]
    configure_hooks()

    with pytest.raises(ContentBlocked) as caught:
        await run(context(principal), four_sunsets())

    assert caught.value.param == "prompt" and ScriptedImageClient.calls == []
    row = await UsageRecord.objects.aget()
    assert (row.status, row.modality, row.cost_usd) == ("blocked", "image", 0)


async def test_a_chat_model_is_not_an_image_model(image_routes, fake_providers, principal):
    with pytest.raises(ApiError) as caught:
        await run(context(principal), ImageGeneration(model="gpt-4o", prompt_text="a fox"))
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "wrong_modality", "model")


async def test_a_provider_without_the_capability_is_skipped_like_a_failing_one(image_routes, principal):
    canvas = await Provider.objects.aget(name="canvas")
    canvas.kind = "anthropic"  # a chat-only client: generate_image is unsupported
    await canvas.asave()

    ScriptedImageClient.failing = {"pixels"}
    with pytest.raises(ApiError) as caught:
        await run(context(principal), four_sunsets())

    attempts = caught.value.extra["attempts"]
    assert [(a["provider"], a["code"]) for a in attempts] == [
        ("pixels", "upstream_overloaded"),
        ("canvas", "unsupported_capability"),
    ]
    for _ in range(3):  # a route set up for the wrong provider does not cool that provider down
        with pytest.raises(ApiError):
            await run(context(principal), four_sunsets())
    assert not breaker.is_open("canvas") and breaker.is_open("pixels")


def hello(max_tokens: int = 8) -> ChatCall:
    return ChatCall("gpt-4o", ChatRequest((ChatMessage("user", "hi"),), max_tokens=max_tokens))


async def test_a_stream_left_early_by_its_transport_is_still_billed_once_and_closed(fake_providers, principal):
    fake_providers["openai"].reply("one two three four five six")
    with pytest.raises(RuntimeError):
        async with open_stream(context(principal, "req-broken"), ChatStreaming(hello(50))) as stream:
            await anext(stream)
            raise RuntimeError("the renderer broke")
    async with open_stream(context(principal, "req-left"), ChatStreaming(hello(50))) as stream:
        await anext(stream)  # then the transport stops reading, without an error
    broken = await UsageRecord.objects.aget(request_id="req-broken")
    assert (broken.status, broken.error_code, broken.usage_estimated) == ("failed", "internal_error", True)
    assert broken.output_tokens > 0 and broken.cost_usd > 0  # what was produced before it broke
    left = await UsageRecord.objects.aget(request_id="req-left")
    assert (left.status, left.error_code) == ("canceled", "client_disconnected")
    assert await UsageRecord.objects.acount() == 2


async def test_run_refuses_a_stream_operation(principal):
    with pytest.raises(TypeError, match="open_stream"):
        await run(context(principal), ChatStreaming(hello()))


async def test_chat_goes_through_the_same_run(fake_providers, principal):
    answer = await run(context(principal, "req-chat"), ChatCompletion(hello()))
    row = await UsageRecord.objects.aget(request_id="req-chat")
    assert (row.modality, row.cost_usd, row.output_tokens) == ("chat", answer.cost_usd, answer.usage.output_tokens)
    assert answer.cost_usd > 0 and answer.candidate.provider.name == "openai"
