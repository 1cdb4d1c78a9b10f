"""Migration from the seed's one ``default-store`` to per-user objects, with each
``MigratingRouter`` strategy, while clients keep loading and saving: no todo lost or duplicated.

Each client owns one user (as one browser tab does) and loops load → add a todo → save; every
acknowledged save's todo must be in the final list exactly once, and each list must end in
exactly one object, ``user-{user}``."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from typing import Any

import pytest

from durable.routers import MigratingRouter, MigrationPhase
from examples.todos.persister import Persister, Who
from examples.todos.sharding import Migration, Sharding
from tests.todos.conftest import LiveApp, TodoApp, content

USERS = [f"u{i:02d}" for i in range(24)]
UNLIMITED = {"rate_burst": 1e9, "rate_per_minute": 1e9}


class Clients:
    """One task per user saving todos until stopped; records every acknowledged todo."""

    def __init__(self, persister: Persister, users: list[str]) -> None:
        self.persister = persister
        self.acked: dict[str, list[str]] = defaultdict(list)
        self.during = 0  # saves acknowledged while the router was sweeping
        self._ids = itertools.count()
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(user)) for user in users]

    def sweeping(self) -> bool:
        sweep = self.persister.router.statistics().sweep  # type: ignore[union-attr]
        return bool(sweep and sweep.running)

    async def _client(self, user: str) -> None:
        while not self._stop.is_set():
            found = await self.persister.load(Who(user), None)
            tables: dict[str, Any] = json.loads(found[1])[0] if found and found[1] else {}
            todo = f"t{next(self._ids)}"
            rows = {**tables.get("todos", {}), todo: {"text": todo, "done": False}}
            await self.persister.save(Who(user), content(rows))
            self.acked[user].append(todo)
            self.during += self.sweeping()
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def seed_default_store(todo_app: TodoApp) -> dict[str, list[str]]:
    """The starting point: the app ran with SHARDING=single; every list in default-store."""
    initial = {}
    async with todo_app(sharding=Sharding.SINGLE) as (env, persister):
        for user in USERS:
            initial[user] = [f"old-{user}"]
            await persister.save(Who(user), content({f"old-{user}": {"text": "x", "done": True}}))
        assert await env.STORE.get_by_name("default-store").users() == USERS
    return initial


async def check(env: Any, persister: Persister, expected: dict[str, list[str]]) -> None:
    assert await env.STORE.get_by_name("default-store").users() == []
    for user in USERS:
        found = await persister.load(Who(user), None)
        assert found is not None and found[1] is not None
        todos = json.loads(found[1])[0]["todos"]
        assert sorted(todos) == sorted(expected[user]), user  # each acked todo once, no other
        assert await env.STORE.get_by_name(f"user-{user}").users() == [user]


@pytest.mark.parametrize("strategy", [Migration.BIG_BANG, Migration.LAZY])
async def test_no_todo_is_lost_or_duplicated_while_migrating(
    todo_app: TodoApp, strategy: Migration
) -> None:
    initial = await seed_default_store(todo_app)
    async with todo_app(migration=strategy, **UNLIMITED) as (env, persister):
        router = persister.router
        assert isinstance(router, MigratingRouter)
        clients = Clients(persister, USERS)
        progress = await router.migrate()
        await clients.stop()
        assert router.phase is MigrationPhase.DONE and progress.remaining == 0
        assert clients.during > 0  # clients saved while the sweep ran
        expected = {u: initial[u] + clients.acked[u] for u in USERS}
        await check(env, persister, expected)


async def test_flag_rollout_in_steps_loses_nothing(todo_app: TodoApp) -> None:
    initial = await seed_default_store(todo_app)
    async with todo_app(migration=Migration.FLAG, rollout=0, **UNLIMITED) as (env, persister):
        router = persister.router
        assert isinstance(router, MigratingRouter)
        clients = Clients(persister, USERS)
        for percent in (10, 50, 100):
            await router.set_percent(percent)
            await router.migrate()
            moved = [u for u in USERS if await env.STORE.get_by_name(f"user-{u}").users()]
            assert 0 < len(moved) <= len(USERS)
        await clients.stop()
        assert router.phase is MigrationPhase.DONE
        await check(env, persister, {u: initial[u] + clients.acked[u] for u in USERS})


async def test_lazy_moves_a_user_on_first_touch_before_any_sweep(todo_app: TodoApp) -> None:
    await seed_default_store(todo_app)
    async with todo_app(migration=Migration.LAZY, **UNLIMITED) as (env, persister):
        found = await persister.load(Who("u03"), None)
        assert found is not None and b"old-u03" in (found[1] or b"")
        assert await env.STORE.get_by_name("user-u03").users() == ["u03"]
        assert "u03" not in await env.STORE.get_by_name("default-store").users()
        assert "u04" in await env.STORE.get_by_name("default-store").users()


async def test_the_admin_routes_run_and_report_a_migration(live_app: LiveApp) -> None:
    async with live_app(sharding=Sharding.SINGLE) as server:
        for user in USERS[:5]:
            await server.client.post(f"/api/{user}/save", content=content({}))
        refused = await server.client.post("/admin/migrate")
        assert refused.status_code == 409 and refused.json()["error"] == "NoMigration"
    async with live_app(migration=Migration.BIG_BANG) as server:
        started = await server.client.post("/admin/migrate")
        assert started.status_code == 202
        for _ in range(500):  # bounded: the sweep of five users finishes in milliseconds
            status = (await server.client.get("/admin/migration")).json()
            if status["phase"] == "done":
                break
            await asyncio.sleep(0.01)
        assert status["phase"] == "done" and status["moved"] == 5 and status["error"] is None
        assert (await server.client.get(f"/api/{USERS[0]}/load")).status_code == 200
        assert await server.env.STORE.get_by_name(f"user-{USERS[0]}").users() == [USERS[0]]
        bad = await server.client.post("/admin/rollout", json={"percent": 5})
        assert bad.status_code == 400 and "flag strategy" in bad.json()["message"]


async def test_bad_rollouts_are_refused_and_change_nothing(live_app: LiveApp) -> None:
    async with live_app(migration=Migration.FLAG, rollout=10) as server:
        for payload, error in (
            (b"{", "MalformedJSON"),
            (b'{"percent": 150}', "InvalidArgument"),
            (b'{"percent": "all"}', "InvalidArgument"),
            (b"[50]", "InvalidArgument"),
        ):
            refused = await server.client.post("/admin/rollout", content=payload)
            assert refused.status_code == 400 and refused.json()["error"] == error, payload
        assert (await server.client.get("/admin/migration")).json()["percent"] == 10.0
