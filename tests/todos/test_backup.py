"""The example's backups: the cron job backs up every user's object into ``env.DB`` (not only
a shared one), and one list or all come back after their data is deleted; the runtime's
``durable backup``/``restore`` brings back one user's object."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable
from durable.backup import backup, restore
from durable.testing import VirtualClock
from examples.todos import backups
from examples.todos.app import build_worker
from examples.todos.persister import Who
from examples.todos.sharding import Sharding
from tests.todos.conftest import LiveApp, TodoApp, content, settings_for

LISTS = {
    Who("alice"): content({"a": {"text": "alice's", "done": False}}),
    Who("bob"): content({"b": {"text": "bob's", "done": True}}, theme="dark"),
    Who("carol"): content({}),
}


async def backed_up_keys(env: object) -> list[str]:
    rows = await env.DB.exec("SELECT key FROM todo_backups ORDER BY key")  # type: ignore[attr-defined]
    return [row["key"] for row in rows]


@pytest.mark.parametrize("mode", [Sharding.USER, Sharding.SINGLE, Sharding.FEATURE])
async def test_the_cron_backs_up_every_users_list_and_restores_one_or_all(
    todo_app: TodoApp, clock: VirtualClock, mode: Sharding
) -> None:
    async with todo_app(sharding=mode) as (env, persister):
        for who, body in LISTS.items():
            await persister.save(who, body)
        await clock.advance(300)  # BACKUP_CRON: every 5 minutes
        assert await backed_up_keys(env) == ["alice", "bob", "carol"]
        assert (await backups.back_up(persister, clock.now())).unchanged == 3  # nothing new
        await persister.erase(Who("alice"))
        assert await persister.load(Who("alice"), None) is None
        assert await backups.restore(persister, "alice") == ["alice"]
        loaded = await persister.load(Who("alice"), None)
        assert loaded is not None and _same(loaded[1], LISTS[Who("alice")], mode)
        for who in LISTS:
            await persister.erase(who)
        assert await backups.restore(persister) == ["alice", "bob", "carol"]
        for who, body in LISTS.items():
            loaded = await persister.load(who, None)
            assert loaded is not None and _same(loaded[1], body, mode), who


def _same(loaded: bytes | None, saved: bytes, mode: Sharding) -> bool:
    """Byte-equal, except feature sharding, which rebuilds the body from its two parts."""
    import json

    if mode is Sharding.FEATURE:
        return loaded is not None and json.loads(loaded) == json.loads(saved)
    return loaded == saved


async def test_a_changed_list_gets_a_new_version_and_old_ones_are_pruned(
    todo_app: TodoApp, clock: VirtualClock
) -> None:
    async with todo_app() as (env, persister):
        for i in range(backups.KEPT + 3):
            await persister.save(Who("alice"), content({"t": {"text": f"v{i}", "done": False}}))
            run = await backups.back_up(persister, clock.now() + i)
            assert (run.lists, run.written) == (1, 1)
        rows = await env.DB.exec("SELECT count(*) AS n FROM todo_backups")
        assert rows == [{"n": backups.KEPT}]
        await persister.erase(Who("alice"))
        await backups.restore(persister, "alice")
        loaded = await persister.load(Who("alice"), None)
        assert loaded is not None and b'"v7"' in (loaded[1] or b"")


async def test_durable_backup_restores_one_users_object(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    worker = build_worker(settings)
    from examples.todos.persister import persister_for

    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        persister = persister_for(env, settings)
        for who, body in LISTS.items():
            await persister.save(who, body)
    backup(tmp_path / "data", tmp_path / "backup")
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        persister = persister_for(env, settings)
        await persister.erase(Who("alice"))
        await persister.save(Who("bob"), content({"b2": {"text": "newer", "done": False}}))
    restore(tmp_path / "backup", tmp_path / "data", object=("STORE", "user-alice"))
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        persister = persister_for(env, settings)
        alice = await persister.load(Who("alice"), None)
        bob = await persister.load(Who("bob"), None)
    assert alice is not None and alice[1] == LISTS[Who("alice")]
    assert bob is not None and b"newer" in (bob[1] or b"")  # bob's object was left alone


async def test_the_admin_routes_back_up_and_restore_a_list(live_app: LiveApp) -> None:
    async with live_app(admin_token="t") as server:
        admin = {"Authorization": "Bearer t"}
        body = LISTS[Who("bob")]
        await server.client.post("/api/bob/save", content=body)
        assert (await server.client.post("/admin/backup")).status_code == 401
        made = await server.client.post("/admin/backup", headers=admin)
        assert made.json() == {"lists": 1, "written": 1}
        assert await server.env.STORE.get_by_name("user-bob").erase("bob") is True
        assert (await server.client.get("/api/bob/load")).status_code == 404
        restored = await server.client.post("/admin/restore/bob", headers=admin)
        assert restored.json() == {"restored": ["bob"]}
        assert (await server.client.get("/api/bob/load")).content == body
        nothing = await server.client.post("/admin/restore/nobody", headers=admin)
        assert nothing.json() == {"restored": []}
