"""Acceptance 1 in headless Chromium: play the game in the page against a real server.

Debian's ``/usr/bin/chromium`` driven by the ``playwright`` package; the server is
``tests/live_server.py`` on the real clock with 300 ms cycles. Every wait is a Playwright wait for
a condition on the page, bounded by ``TIMEOUT_MS``. Finding 4 (WebSocket only, polling only
after 5 s without a socket) is checked by counting the page's requests to the polling URL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from examples.mission_game.app import build_worker
from tests.live_server import Live, live
from tests.mission_game.conftest import original_fails

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).parents[2] / "examples/mission_game/screenshots/mission.png"
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


@asynccontextmanager
async def browser_page(server: Live, fake_clock: bool = False) -> AsyncIterator[Any]:
    """A page on the game. With ``fake_clock`` the page's timers run only when the test advances
    them (Playwright's clock), so timing rules are checked without waiting on the real clock."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(TIMEOUT_MS)
            if fake_clock:
                await page.clock.install()
            await page.goto(server.http + "/")
            yield page
        finally:
            await browser.close()


@asynccontextmanager
async def game_server(tmp_path: Path, design: str = "sharded") -> AsyncIterator[Live]:
    values = {"DESIGN": design, "CYCLE_MS": 300, "MAX_CYCLES": 40}
    worker = build_worker(values, database=f"sqlite:///{tmp_path}/db.sqlite")
    async with live(worker, tmp_path / "data") as server:
        yield server


async def join(page: Any, name: str) -> None:
    await page.fill("#name", name)
    await page.click("#join-form button")
    await page.wait_for_function("document.getElementById('copper').textContent === '100'")
    await page.wait_for_function("document.getElementById('status').textContent === 'live'")


async def number(page: Any, selector: str) -> float:
    return float(await page.text_content(selector))


async def drop_sockets(server: Live, mission: str) -> int:
    """Close every socket of the mission's room from the server (1012, as a restart does)."""
    oid = server.env.ROOM.get_by_name(mission).id
    group = server.host.sockets.group(oid)
    activation = server.host.activate(oid)
    records = list(group.records.values())
    for record in records:
        group.view(activation, record).close(1012, "server restart")
    return len(records)


async def test_play_deploy_watch_progress_and_reconnect_without_reload(tmp_path: Path) -> None:
    async with game_server(tmp_path) as server, browser_page(server) as page:
        await join(page, "ann")
        await page.click("#deploy")
        await page.wait_for_function("document.getElementById('copper').textContent === '90'")
        row = page.locator("#tasks li[data-id='ann.1']")
        await row.wait_for()
        first = await row.locator(".life").evaluate("bar => bar.value")
        await page.wait_for_function(
            "v => document.querySelector(\"li[data-id='ann.1'] .life\").value > v + 0.02", arg=first
        )
        await page.wait_for_function("document.getElementById('ore').textContent >= 10")
        assert await number(page, "#ore") >= 10

        loaded_at = await page.evaluate("window.game.loadedAt")
        assert await drop_sockets(server, "alpha") == 1
        await page.wait_for_function("window.game.connection.opens === 2")
        await page.wait_for_function("document.getElementById('status').textContent === 'live'")
        ore = await number(page, "#ore")
        await page.wait_for_function(f"Number(document.getElementById('ore').textContent) > {ore}")
        assert await page.evaluate("window.game.loadedAt") == loaded_at  # no reload
        assert await page.evaluate("window.game.connection.polls") == 0
        await show_company(server, page)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)


async def show_company(server: Live, page: Any) -> None:
    """A second player and two more miners, so the screenshot shows a busier mission."""
    await server.client.post("/api/join", json={"name": "bob"})
    for name in ("bob", "bob", "ann"):
        assert (await server.client.post(f"/api/players/{name}/miners")).status_code == 200
    await page.wait_for_function("document.querySelectorAll('#tasks li').length === 4")
    await page.wait_for_function("document.getElementById('pool').textContent > 0")


@pytest.mark.parametrize("design", ["sharded", original_fails("polls every 500 ms")])
async def test_the_page_does_not_poll_while_its_socket_is_open(tmp_path: Path, design: str) -> None:
    async with game_server(tmp_path, design) as server, browser_page(server) as page:
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/tasks") else None)
        await join(page, "ann")
        await page.click("#deploy")
        await page.wait_for_function("document.getElementById('ore').textContent >= 10")
        assert polls == []


async def test_polling_starts_only_after_five_seconds_without_a_socket(tmp_path: Path) -> None:
    async with game_server(tmp_path) as server, browser_page(server, fake_clock=True) as page:
        await page.route_web_socket("**/ws/**", lambda ws: ws.close())  # sockets never stay up
        # An installed clock still follows the real one until paused: a loaded machine could
        # otherwise let real seconds pass between the socket's loss and the ``run_for`` below.
        await page.clock.pause_at(await page.evaluate("Date.now()") + 1)
        await page.fill("#name", "ann")
        await page.click("#join-form button")
        await page.wait_for_function("window.game?.connection?.downSince != null")
        await page.clock.run_for(4_900)
        assert await page.evaluate("window.game.connection.polls") == 0
        async with page.expect_response(lambda r: r.url.endswith("/tasks")) as polled:
            await page.clock.run_for(200)
        assert "tasks" in json.loads(await (await polled.value).text())
        await page.wait_for_function("document.getElementById('status').textContent === 'polling'")


async def test_progress_uses_the_server_cycle_time_corrected_for_clock_offset(
    tmp_path: Path,
) -> None:
    """Finding 6: the client clock is 5 s behind the server; frames arrive with 40 and 10 ms of
    delay. The offset is the best (largest) sample, and progress is measured on server time."""
    script = """async () => {
        const { ServerClock, cycleProgress, missionProgress } = await import("/progress.js");
        let now = 1000;
        const clock = new ServerClock(() => now);
        clock.observe(5960);  // sent at server 5960, received at client 1000: 40 ms late
        now = 2000;
        clock.observe(6990);  // 10 ms late: the better sample
        const task = { status: "running", cycles: 2, max_cycles: 4, cycle_ms: 1000,
                       last_cycle_at: 6500 };
        return [clock.offset, cycleProgress(task, clock.serverNow()),
                missionProgress(task, clock.serverNow()),
                cycleProgress({ ...task, status: "completed" }, clock.serverNow())];
    }"""
    async with game_server(tmp_path) as server, browser_page(server) as page:
        assert await page.evaluate(script) == [4990, 0.49, (2 + 0.49) / 4, 1]
