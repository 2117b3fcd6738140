"""The playground in a real browser: headless Chromium (Debian's chromium package, the system
browser; .ci/run installs it) driven by Playwright, against the live gateway with the fake
providers. The browser signs in through the page's form, so the WebSocket is authenticated the way a
person's would be: by the session cookie, from an allowed Origin.

Screenshots are test artifacts: var/test-artifacts/playground*.png (var/ is git-ignored).

Playwright's async API, in async tests: its sync API runs an event loop in the test's thread for as
long as the browser is open, and Django refuses ORM calls from a thread with a running loop. Here
the ORM goes through sync_to_async, and uvicorn serves the gateway from its own thread.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import Page, async_playwright, expect

from billing.models import UsageRecord
from tests.helpers import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Offline and quiet: no sandbox (CI runs as root in a container), no GPU, nothing fetched by the browser itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "var" / "test-artifacts"
PASSWORD = "playground pass phrase 7"
ANSWER = "Pulse streams this answer to the playground one word at a time, then its tokens and cost."


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=path, full_page=True)
    return path


@pytest.fixture
def carol(gateway, django_user_model):
    """A user who is not staff, with a password to sign in with."""
    return django_user_model.objects.create_user("carol", password=PASSWORD)


@pytest.fixture
async def page(gateway: str, carol) -> AsyncIterator[Page]:
    """A fresh browser, signed in as carol on the playground through its login form."""
    if not Path(CHROMIUM).exists():
        pytest.fail("no chromium: apt-get install -y chromium (.ci/run does)", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(base_url=gateway, viewport={"width": 1280, "height": 860})
        context.set_default_timeout(10_000)
        page = await context.new_page()
        await page.goto("/playground/")
        await expect(page).to_have_url(re.compile(r"/playground/login/\?next=/playground/$"))
        await screenshot(page, "playground-login.png")
        await page.get_by_label("Username").fill("carol")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{gateway}/playground/")
        await page.wait_for_load_state("domcontentloaded")  # its script has run (defer): the buttons work
        yield page
        await browser.close()


@sync_to_async
def ledger_row(model: str) -> UsageRecord:
    return UsageRecord.objects.get(user__username="carol", model=model)


async def ledger_row_written(model: str) -> UsageRecord:
    """The row, once the gateway has written it (a canceled stream's row comes after the page moved on)."""
    for _ in range(100):
        try:
            return await ledger_row(model)
        except UsageRecord.DoesNotExist:
            await asyncio.sleep(0.05)
    return await ledger_row(model)


async def test_streams_an_answer_with_its_cost_then_makes_images(page: Page, fake_providers, job_worker):
    fake_providers["openai"].reply(text=ANSWER)
    fake_providers["openai"].stall_stream(after_chunks=3, seconds=1.0)
    answer = page.locator(".turn.assistant").last
    usage = answer.locator(".usage")

    await page.locator("#chat-model").select_option("gpt-4o-mini")
    await page.get_by_placeholder("Ask something").fill("Tell me how the playground works.")
    await page.get_by_role("button", name="Send").click()

    # Mid-stream: the first words are on the page while the provider pauses, and Stop is offered.
    await expect(answer.locator(".text")).to_have_text("Pulse streams this")
    await expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    await expect(usage).to_have_count(0)

    await expect(usage).to_contain_text("gpt-4o-mini via openai")
    assert await answer.locator(".text").inner_text() == ANSWER
    words = len(ANSWER.split())
    await expect(usage.locator(".tokens")).to_have_text(re.compile(rf"^\d+ in \+ {words} out = \d+ tokens$"))
    record = await ledger_row("gpt-4o-mini")
    assert record.status == UsageRecord.Status.SUCCEEDED and record.api_key_id is None
    assert Decimal((await usage.locator(".cost").inner_text()).removeprefix("$")) == record.cost_usd
    await expect(page.get_by_role("button", name="Stop")).to_be_disabled()

    await page.locator("#image-model").select_option("nano-banana")
    await page.locator("#image-count").select_option("2")
    await page.get_by_placeholder("Describe the image").fill("A lighthouse at dusk, watercolour")
    await page.get_by_role("button", name="Generate").click()
    images = page.locator(".job .outputs img")
    await expect(images).to_have_count(2, timeout=20_000)
    await expect(page.locator(".job .status")).to_contain_text("done · 2 images · $0.078 ·")
    for image in await images.all():
        assert await image.evaluate("img => img.complete && img.naturalWidth > 0"), "an output URL did not load"

    path = await screenshot(page, "playground.png")
    assert path.stat().st_size > 0


async def test_stop_cancels_the_stream_and_the_partial_answer_stays_in_the_conversation(page: Page, fake_providers):
    openai = fake_providers["openai"]
    openai.reply(text=ANSWER)
    openai.stall_stream(after_chunks=2, seconds=5.0)
    answer = page.locator(".turn.assistant").last

    await page.locator("#chat-model").select_option("gpt-4o-mini")
    await page.get_by_placeholder("Ask something").fill("Start, then stop.")
    await page.get_by_role("button", name="Send").click()
    await expect(answer.locator(".text")).to_have_text("Pulse streams")
    await page.get_by_role("button", name="Stop").click()

    # The stream ends with chat.done (finish_reason "canceled"): what was produced, as billed.
    usage = answer.locator(".usage")
    await expect(usage).to_contain_text("Stopped:")
    record = await ledger_row_written("gpt-4o-mini")
    assert record.status == UsageRecord.Status.CANCELED and record.output_tokens > 0
    await expect(usage.locator(".tokens")).to_have_text(
        re.compile(rf"^{record.input_tokens} in \+ {record.output_tokens} out")
    )
    assert Decimal((await usage.locator(".cost").inner_text()).removeprefix("$")) == record.cost_usd
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # The next prompt carries the conversation, the stopped answer included (Enter sends).
    openai.reply(text="Carrying on.")
    await page.get_by_placeholder("Ask something").fill("And now?")
    await page.get_by_placeholder("Ask something").press("Enter")
    await expect(page.locator(".turn.assistant").last.locator(".usage")).to_be_visible()
    sent = [(m["role"], m["content"]) for m in openai.last_request.json["messages"]]
    assert sent == [("user", "Start, then stop."), ("assistant", "Pulse streams"), ("user", "And now?")]


async def test_an_error_frame_shows_its_message_and_the_failed_prompt_leaves_the_conversation(
    page: Page, fake_providers
):
    openai = fake_providers["openai"]
    openai.fail(503)

    await page.locator("#chat-model").select_option("gpt-4o-mini")
    await page.get_by_placeholder("Ask something").fill("Are you there?")
    await page.get_by_role("button", name="Send").click()

    error = page.locator(".turn.assistant").last.get_by_role("alert")
    await expect(error).to_have_text(
        "Every provider failed: openai/gpt-4o-mini (upstream_overloaded). (providers_unavailable)"
    )
    await screenshot(page, "playground-error.png")

    await page.get_by_placeholder("Ask something").fill("Now?")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".turn.assistant").last.locator(".usage")).to_be_visible()
    assert openai.last_request.json["messages"] == [{"role": "user", "content": "Now?"}]
