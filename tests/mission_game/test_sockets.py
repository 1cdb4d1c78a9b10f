"""Finding 2 over real WebSockets: a snapshot on connect, then coalesced deltas of changed tasks.

A real uvicorn server (``tests/live_server.py``) on the real clock with 200 ms cycles; the client
reads frames until every miner completed (bounded by a deadline) and checks what it received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from examples.mission_game.app import build_worker
from examples.mission_game.telemetry import GAME
from tests.live_server import live
from tests.mission_game.conftest import original_fails

MINERS = 8
DEADLINE = 15.0


async def frames_until_done(ws: Any, miners: int) -> list[dict[str, Any]]:
    """Every frame until the client's view shows ``miners`` completed tasks."""
    frames: list[dict[str, Any]] = []
    view: dict[str, dict[str, Any]] = {}
    stop = time.monotonic() + DEADLINE
    while sum(t["status"] == "completed" for t in view.values()) < miners:
        remaining = stop - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(view)} tasks seen, {frames[-1:]}")
        frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        frames.append(frame)
        if frame["type"] == "snapshot":
            view = {t["id"]: t for t in frame["tasks"]}
        for task in frame.get("tasks", []):
            view[task["id"]] = task
    return frames


@pytest.mark.slow
@pytest.mark.parametrize("design", ["sharded", original_fails("full state twice per cycle")])
async def test_snapshot_on_connect_then_at_most_ten_deltas_a_second_of_changed_tasks(
    tmp_path: Path, design: str
) -> None:
    worker = build_worker({"DESIGN": design, "CYCLE_MS": 200, "MAX_CYCLES": 3},
                          database=f"sqlite:///{tmp_path}/db.sqlite")  # fmt: skip
    async with live(worker, tmp_path / "data") as server:
        for name in ("ann", "bob"):
            assert (await server.client.post("/api/join", json={"name": name})).status_code == 200
        broadcasts = GAME.broadcasts
        async with ws_connect(server.ws + "/ws/alpha?player=ann") as ws:
            for i in range(MINERS):
                response = await server.client.post(f"/api/players/{('ann', 'bob')[i % 2]}/miners")
                assert response.status_code == 200
            frames = await frames_until_done(ws, MINERS)
            assert await ping(ws) == "pong"
    assert frames[0]["type"] == "snapshot"
    deltas = frames[1:]
    assert deltas and all(f["type"] == "delta" for f in deltas)
    gaps = [b["server_time"] - a["server_time"] for a, b in itertools.pairwise(deltas)]
    assert min(gaps, default=100) >= 100  # at most 10 broadcasts per second
    assert_only_changes(frames)
    assert GAME.broadcasts - broadcasts == len(deltas)  # the metric counts every delta
    ann = [p for f in deltas for p in f.get("players", []) if p["player"] == "ann"]
    assert ann[-1]["ore"] == 4 * 3 * 5 and ann[-1]["copper"] == 100 - 4 * 10


def assert_only_changes(frames: list[dict[str, Any]]) -> None:
    """No delta repeats a task exactly as the client already has it."""
    known: dict[str, dict[str, Any]] = {t["id"]: t for t in frames[0]["tasks"]}
    for frame in frames[1:]:
        for task in frame["tasks"]:
            assert known.get(task["id"]) != task, f"unchanged task resent: {task['id']}"
            known[task["id"]] = task


async def ping(ws: Any) -> str:
    """The gateway's auto-response (the room is not woken for it)."""
    await ws.send("ping")
    while True:
        message = await asyncio.wait_for(ws.recv(), DEADLINE)
        if message == "pong":
            return str(message)


async def test_a_bad_mission_name_refuses_the_upgrade(tmp_path: Path) -> None:
    worker = build_worker({}, database=f"sqlite:///{tmp_path}/db.sqlite")
    async with live(worker, tmp_path / "data") as server:
        with pytest.raises(Exception, match="400"):
            async with ws_connect(server.ws + "/ws/bad%20name"):
                pass
