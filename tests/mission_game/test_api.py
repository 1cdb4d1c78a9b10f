"""Bad input on every endpoint: a specific JSON error, and storage exactly as it was.

Then the leaderboard path (seed ``events-leaderboard-scalability-plan``): batches of at most 100,
the minute cron moving events into ``env.DB``, ranks served from a cache with a TTL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples.mission_game.leaderboard import RankCache
from tests.mission_game.conftest import Game, open_game

EVENTS_101 = {"events": [{"type": "click"}] * 101}
CASES: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/api/join", b"{not json", 400, "MalformedJSON"),
    ("POST", "/api/join", [1, 2], 400, "BadInput"),
    ("POST", "/api/join", {}, 400, "BadInput"),
    ("POST", "/api/join", {"name": "bad name"}, 400, "BadInput"),
    ("POST", "/api/join", {"name": "x" * 33}, 400, "BadInput"),
    ("POST", "/api/join", {"name": 7}, 400, "BadInput"),
    ("POST", "/api/join", {"name": "cy", "mission": "../etc"}, 400, "BadInput"),
    ("GET", "/api/players/bad%20name", None, 400, "BadInput"),
    ("GET", "/api/players/nobody", None, 404, "UnknownPlayer"),
    ("POST", "/api/players/nobody/miners", {}, 404, "UnknownPlayer"),
    ("POST", "/api/players/bad%21/miners", {}, 400, "BadInput"),
    ("POST", "/api/players/ann/miners", b"[", 400, "MalformedJSON"),
    ("POST", "/api/players/ann/miners", [], 400, "BadInput"),
    ("POST", "/api/players/ann/miners/ann.x/recall", {}, 400, "BadInput"),
    ("POST", "/api/players/ann/miners/ann.99/recall", {}, 404, "UnknownMiner"),
    ("POST", "/api/players/ann/miners/bob.1/recall", {}, 404, "UnknownMiner"),
    ("POST", "/api/players/nobody/miners/nobody.1/recall", {}, 404, "UnknownPlayer"),
    ("GET", "/api/missions/bad%20mission/tasks", None, 400, "BadInput"),
    ("GET", "/api/leaderboard?limit=0", None, 400, "BadInput"),
    ("GET", "/api/leaderboard?limit=101", None, 400, "BadInput"),
    ("GET", "/api/leaderboard?limit=ten", None, 400, "BadInput"),
    ("POST", "/api/events", b"nope", 400, "MalformedJSON"),
    ("POST", "/api/events", {"events": "click"}, 400, "BadInput"),
    ("POST", "/api/events", {"events": [{"type": "a b"}]}, 400, "BadInput"),
    ("POST", "/api/events", {"events": [{"type": "ore_mined"}]}, 400, "BadInput"),
    ("POST", "/api/events", {"events": [{"type": "x", "player": ""}]}, 400, "BadInput"),
    ("POST", "/api/events", EVENTS_101, 429, "BatchTooLarge"),
]


async def send(game: Game, method: str, path: str, body: Any) -> Any:
    if isinstance(body, bytes):
        return await game.client.request(method, path, content=body)
    return await game.client.request(method, path, json=body)


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), CASES)
async def test_bad_input_gets_its_error_and_changes_nothing(
    tmp_path: Path, method: str, path: str, body: Any, status: int, error: str
) -> None:
    async with open_game(tmp_path) as game:
        await game.join("ann")
        await game.join("bob")
        assert (await game.deploy("bob")).status_code == 200
        before = game.stored()
        response = await send(game, method, path, body)
        assert (response.status_code, response.json()["error"]) == (status, error), response.text
        assert response.json()["message"]
        assert game.stored() == before


async def test_an_oversize_batch_says_when_to_retry(tmp_path: Path) -> None:
    async with open_game(tmp_path) as game:
        response = await game.client.post("/api/events", json=EVENTS_101)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {
            "error": "BatchTooLarge",
            "message": "101 events in one batch; send at most 100 per request.",
            "retry_after": 1.0,
        }


async def test_recalling_a_stopped_miner_is_a_conflict(tmp_path: Path) -> None:
    async with open_game(tmp_path) as game:
        await game.join("ann")
        task = (await game.deploy("ann")).json()["task"]
        recall = f"/api/players/ann/miners/{task['id']}/recall"
        first = await game.client.post(recall)
        assert (first.status_code, first.json()["task"]["status"]) == (200, "recalled")
        before = game.stored()
        again = await game.client.post(recall)
        assert (again.status_code, again.json()["error"]) == (409, "NotRunning")
        assert game.stored() == before


async def test_joining_twice_returns_the_same_player(tmp_path: Path) -> None:
    async with open_game(tmp_path) as game:
        first = await game.join("ann", "beta")
        assert (await game.deploy("ann")).status_code == 200
        again = await game.join("ann", "gamma")
        assert (again["mission"], again["copper"]) == ("beta", first["copper"] - 10)
        assert [t["id"] for t in again["miners"]] == ["ann.1"]


# -- leaderboard -----------------------------------------------------------------------------------
async def test_cron_aggregates_mined_ore_into_the_database_ranks(tmp_path: Path) -> None:
    async with open_game(tmp_path, MAX_CYCLES=2) as game:
        assert game.clock is not None
        for name, miners in (("ann", 1), ("bob", 3), ("cy", 2)):
            await game.join(name)
            for _ in range(miners):
                assert (await game.deploy(name)).status_code == 200
        posted = await game.client.post("/api/events", json={"events": [{"type": "open"}] * 3})
        assert posted.json() == {"accepted": 3}
        await game.advance(2.5)
        assert await game.env.DB.exec("SELECT * FROM sqlite_master WHERE name = 'ranks'") == []
        await game.advance(60 - game.clock.now() % 60)  # the minute's cron run
        ranks = (await game.client.get("/api/leaderboard?limit=2")).json()["ranks"]
        assert ranks == [{"player": "bob", "ore": 30, "rank": 1},
                         {"player": "cy", "ore": 20, "rank": 2}]  # fmt: skip
        counts = await game.env.DB.exec("SELECT type, n FROM event_counts")
        assert counts == [{"type": "open", "n": 3}]
        await game.advance(60)  # nothing new: counts are not added twice
        assert await game.env.DB.exec("SELECT n FROM event_counts") == [{"n": 3}]


async def test_ranks_are_served_from_the_cache_until_the_ttl_passes(tmp_path: Path) -> None:
    now = [1000.0]
    cache = RankCache(ttl=10.0, clock=lambda: now[0])
    async with open_game(tmp_path) as game:
        env = game.env
        await env.DB.exec("CREATE TABLE ranks (player TEXT PRIMARY KEY, ore INTEGER NOT NULL)")
        await env.DB.exec("INSERT INTO ranks VALUES ('ann', 5)")
        first = await cache.ranks(env, 10)
        await env.DB.exec("INSERT INTO ranks VALUES ('bob', 9)")
        now[0] += 9.9
        assert await cache.ranks(env, 10) == first
        now[0] += 0.1
        fresh = await cache.ranks(env, 10)
        assert [r["player"] for r in fresh["ranks"]] == ["bob", "ann"]
        assert (fresh["cached_at"], fresh["ttl_ms"]) == (1_010_000, 10_000)
