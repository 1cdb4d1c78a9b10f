"""MigratingRouter: big_bang, lazy and flag moves from one global object to shards, live."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

import pytest

import durable
from durable.routers import (
    FeatureRouter,
    HashRouter,
    KeyMoved,
    MigratingRouter,
    MigrationPhase,
    MoveConflict,
    Strategy,
    TemplateRouter,
    shard_index,
)
from durable.routers.migrating import flag_bucket
from tests.routers.apps import Traffic, ledger_worker

KEYS = [f"u{i}" for i in range(100)]


def routers(env: Any) -> tuple[HashRouter, TemplateRouter]:
    """The seeds' starting point (one global object) and target (one object per user)."""
    return HashRouter(env.LEDGER, shards=1, prefix="global-"), TemplateRouter(
        env.NEW, "user-{user}"
    )


async def fill(router: Any, keys: list[str]) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        await router.call(key, "write", 1_000_000 + i)
        acked[key].append(1_000_000 + i)
    return acked


async def where(env: Any, key: str) -> list[str]:
    """Which objects hold rows for ``key``: the global one and/or its user object."""
    found = []
    if key in await env.LEDGER.get_by_name("global-0").keys():
        found.append("global-0")
    if key in await env.NEW.get_by_name(f"user-{key}").keys():
        found.append(f"user-{key}")
    return found


def started(traffic: Traffic, acked: dict[str, list[int]]) -> Traffic:
    for key, ops in acked.items():
        traffic.acked[key].extend(ops)
    return traffic


async def test_big_bang_copies_everything_then_switches(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, "big_bang")
        assert router.name_for("u1") == "global-0"
        traffic = started(Traffic(router, KEYS, writers=4, readers=2), acked)
        progress = await router.migrate()
        await traffic.stop()
        assert router.phase is MigrationPhase.DONE and router.name_for("u1") == "user-u1"
        assert progress.moved == progress.found == len(KEYS) and progress.remaining == 0
        assert traffic.during > 20
        await traffic.check()
        assert await env.LEDGER.get_by_name("global-0").keys() == []
        for key in KEYS:
            assert await where(env, key) == [f"user-{key}"]
        stats = router.statistics()
        assert (stats.strategy, stats.phase, stats.percent) == (
            Strategy.BIG_BANG,
            MigrationPhase.DONE,
            100.0,
        )


async def test_lazy_moves_a_key_on_first_touch_and_the_sweep_finishes(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, Strategy.LAZY)
        assert await router.call("u7", "ops") == acked["u7"]
        assert await where(env, "u7") == ["user-u7"] and await where(env, "u8") == ["global-0"]
        assert router.statistics().first_touch_moves == 1
        assert await router.call("u7", "write", 5) == 2  # known: no second move
        assert router.statistics().first_touch_moves == 1
        traffic = started(Traffic(router, KEYS, writers=4, readers=2), acked)
        traffic.acked["u7"].append(5)
        progress = await router.migrate()
        await traffic.stop()
        await traffic.check()
        assert router.phase is MigrationPhase.DONE
        assert progress.found < len(KEYS)  # the touched keys had moved already
        assert router.statistics().first_touch_moves + progress.moved >= len(KEYS)
        for key in KEYS:
            assert await where(env, key) == [f"user-{key}"]


async def test_lazy_first_touch_of_a_new_key_leaves_a_tombstone_in_the_old_object(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        router = MigratingRouter(old, new, "lazy")
        assert await router.call("fresh", "write", 1) == 1
        with pytest.raises(durable.DurableError, match="served by NEW/user-fresh"):
            await old.get("fresh").write("fresh", 2)  # a stale direct call cannot recreate it
        with pytest.raises(KeyMoved, match="served by NEW/user-fresh"):
            await old.call("fresh", "read")  # a router that cannot reach NEW says where it went
        assert await MigratingRouter(old, new, "big_bang").call("fresh", "read") == 1


async def test_a_key_written_at_new_behind_the_routers_back_is_a_conflict(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        await old.call("k", "write", 1)
        await new.call("k", "write", 2)
        router = MigratingRouter(old, new, "lazy")
        with pytest.raises(MoveConflict, match="the destination already holds data for it"):
            await router.call("k", "read")
        assert await old.call("k", "ops") == [1]


async def test_flag_routes_a_sticky_share_of_keys_and_rolls_back(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old = HashRouter(env.LEDGER, shards=1, prefix="global-")
        new = HashRouter(env.NEW, shards=4)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, "flag", percent=30)
        chosen = {k for k in KEYS if flag_bucket(k) < 3000}
        assert 15 < len(chosen) < 45
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]
        on_new = {k for n in new.names() for k in await env.NEW.get_by_name(n).keys()}
        assert on_new == chosen
        await router.set_percent(60)
        assert all(router.wants_new(k) for k in chosen)  # sticky: a key never flips back
        traffic = started(Traffic(router, KEYS, writers=3, readers=1), acked)
        await router.migrate()  # sweeps the 60 %
        assert router.phase is MigrationPhase.READY  # not DONE below 100 %
        progress = await router.rollback()
        await traffic.stop()
        await traffic.check()
        assert progress is not None and progress.moved > len(chosen)
        assert sorted(await env.LEDGER.get_by_name("global-0").keys()) == sorted(KEYS)
        assert router.statistics().percent == 0.0


async def test_flag_rollback_to_an_open_set_returns_keys_on_their_next_call(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        router = MigratingRouter(old, new, "flag", percent=100)
        await router.call("a", "write", 1)
        assert await where(env, "a") == ["user-a"]
        assert await router.rollback() is None
        assert await router.call("a", "write", 2) == 2  # old's tombstone -> moved back
        assert await where(env, "a") == ["global-0"]


async def test_a_migration_cut_by_a_restart_resumes(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, "big_bang", concurrency=1, batch=2)
        task = asyncio.create_task(router.migrate())
        while router.statistics().mover.moves < 10:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert router.phase is MigrationPhase.READY
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        router = MigratingRouter(old, new, "big_bang")
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]  # old, or followed to new
        progress = await router.migrate()
        assert 0 < progress.moved < len(KEYS)
        for key in KEYS:
            assert await where(env, key) == [f"user-{key}"]
            assert await router.call(key, "ops") == acked[key]


async def test_a_migration_between_hash_routers_is_a_reshard_across_namespaces(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = HashRouter(env.LEDGER, shards=2), HashRouter(env.NEW, shards=3)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, "big_bang")
        await router.migrate()
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]
            assert key in await env.NEW.get_by_name(f"shard-{shard_index(key, 3)}").keys()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"strategy": "sideways"},
            "Unknown strategy 'sideways': use 'big_bang', 'lazy' or 'flag'.",
        ),
        ({"strategy": "flag", "percent": 101}, "percent must be a number from 0 to 100, not 101."),
        ({"strategy": "flag", "percent": "5"}, "percent must be a number from 0 to 100, not '5'."),
    ],
)
async def test_bad_options_are_refused(run: Any, kwargs: dict[str, Any], message: str) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
            MigratingRouter(old, new, **kwargs)


async def test_misuse_is_refused(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        with pytest.raises(durable.InvalidArgument, match="a migration routes str keys; drop key="):
            MigratingRouter(HashRouter(env.LEDGER, shards=1, key=str), new, "lazy")
        with pytest.raises(
            durable.InvalidArgument, match="set_percent\\(\\) is for the flag strategy"
        ):
            await MigratingRouter(old, new, "lazy").set_percent(5)
        with pytest.raises(durable.InvalidArgument, match="has no fixed set of objects to sweep"):
            await MigratingRouter(new, old, "big_bang").migrate()
        with pytest.raises(durable.InvalidArgument, match="bind 'LEDGER' to different namespaces"):
            MigratingRouter(
                old,
                FeatureRouter(
                    durable.namespace.Namespace("LEDGER", None, env.LEDGER.limits), ["a"]
                ),
                "lazy",
            )  # type: ignore[arg-type]


async def test_repr_and_eq(run: Any) -> None:
    async with run(ledger_worker()) as env:
        old, new = routers(env)
        router = MigratingRouter(old, new, "flag", percent=5)
        assert repr(router) == (
            "MigratingRouter(HashRouter(Namespace('LEDGER'), shards=1, prefix='global-'), "
            "TemplateRouter(Namespace('NEW'), 'user-{user}'), 'flag', percent=5.0)"
        )
        assert router == MigratingRouter(old, new, "flag", percent=5)
        assert router != MigratingRouter(old, new, "flag", percent=6)
