"""The todo page at ``/`` in headless Chromium: two tabs on one list stay in sync, and a tab
reconnects (with backoff) across a server restart and hands over the edits it made offline.

The page loads TinyBase from ``/vendor/`` (``make vendor``), so these tests fail, not skip,
without it. Waits are Playwright's bounded ``expect`` polls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from durable.testing import VirtualClock
from tests.todos.conftest import LiveApp, free_port, served

pytestmark = pytest.mark.slow
WEB = Path(__file__).parents[2] / "examples" / "todos" / "web"
TIMEOUT = 10_000  # ms, for each expect


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()  # TinyBase's HLCs are wall-clock times


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not (WEB / "vendor" / "tinybase" / "mergeable-store" / "index.js").is_file():
        pytest.fail("the page's TinyBase modules are missing: run `make vendor`")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_list(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url)
    await expect(page.locator("#status")).to_have_text("connected", timeout=TIMEOUT)
    return page


async def add(page: Page, text: str) -> None:
    await page.fill("#new-todo", text)
    await page.press("#new-todo", "Enter")


async def test_an_edit_in_one_tab_appears_in_the_other(browser: Browser, live_app: LiveApp) -> None:
    errors: list[str] = []
    async with live_app() as server:
        url = server.http + "/?list=shopping"
        first, second = await open_list(browser, url, errors), await open_list(browser, url, errors)
        await add(first, "buy milk")
        milk = second.locator("#todos li", has_text="buy milk")
        await expect(milk).to_have_count(1, timeout=TIMEOUT)
        await milk.locator("input[type=checkbox]").check()  # toggled in the second tab
        await expect(first.locator("#todos li.done", has_text="buy milk")).to_have_count(
            1, timeout=TIMEOUT
        )
        await first.locator("#todos li", has_text="buy milk").locator("button.delete").click()
        await expect(milk).to_have_count(0, timeout=TIMEOUT)
        await add(second, "walk the dog")
        await expect(first.locator("#todos li .text")).to_have_text(
            ["walk the dog"], timeout=TIMEOUT
        )
        rows = (await server.env.ROOM.get_by_name("shopping").tables())["todos"]
        assert [row["text"] for row in rows.values()] == ["walk the dog"]
        other = await open_list(browser, server.http + "/?list=other", errors)
        await expect(other.locator("#todos li")).to_have_count(0)  # lists are separate rooms
    assert errors == []


async def test_a_tab_reconnects_across_a_restart_and_syncs_offline_edits(
    browser: Browser, tmp_path: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    errors: list[str] = []
    async with served(data_dir, port):
        url = f"http://127.0.0.1:{port}/?list=restart"
        page = await open_list(browser, url, errors)
        await add(page, "before the restart")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "reconnecting", timeout=TIMEOUT)
    await add(page, "made while offline")
    async with served(data_dir, port):
        await expect(status).to_have_text("connected", timeout=TIMEOUT)
        fresh = await open_list(browser, url, errors)
        await expect(fresh.locator("#todos li .text")).to_have_text(
            ["before the restart", "made while offline"], timeout=TIMEOUT
        )
    failed_connects = [e for e in errors if "WebSocket connection" in e]
    assert failed_connects and len(errors) == len(failed_connects)  # only the refused retries
