"""Routers on real Ray: a reshard and a migration under concurrent writers, through the channel.

The cluster serves ``tests.ray.apps:routers`` (the router suite's Ledger shards) on two host
slots; the test drives it with ``connect(worker, address="auto")``. After each move every write
acknowledged before, during or after it is stored exactly once, at exactly one object, and no
read went backwards (``Traffic.check``).
"""

from __future__ import annotations

from typing import Any

import pytest

import durable
from durable.routers import HashRouter, MigratingRouter, MigrationPhase, ReshardPhase, shard_index
from tests.routers.apps import Traffic, ledger_worker
from tests.routers.test_migrating import fill, routers, started, where

pytestmark = pytest.mark.ray
KEYS = [f"u{i}" for i in range(60)]
ROUTERS_APP = "tests.ray.apps:routers"


async def test_reshard_on_ray_keeps_every_acknowledged_write_once(start_cluster: Any) -> None:
    start_cluster(target=ROUTERS_APP, slots=2, partitions=4)
    async with durable.connect(ledger_worker(), address="auto") as env:
        router = HashRouter(env.LEDGER, shards=2)
        traffic = started(Traffic(router, KEYS, writers=4, readers=2), await fill(router, KEYS))
        progress = await router.reshard(6)
        await traffic.stop()
        assert router.shards == 6 and router.phase is ReshardPhase.SERVING
        assert traffic.during > 10, "writes must overlap the moves"
        await traffic.check()
        expected = sum(shard_index(k, 2) != shard_index(k, 6) for k in KEYS)
        assert progress.moved == progress.found >= expected and progress.remaining == 0


async def test_big_bang_migration_on_ray_keeps_every_acknowledged_write_once(
    start_cluster: Any,
) -> None:
    start_cluster(target=ROUTERS_APP, slots=2, partitions=4)
    async with durable.connect(ledger_worker(), address="auto") as env:
        old, new = routers(env)
        acked = await fill(old, KEYS)
        router = MigratingRouter(old, new, "big_bang")
        traffic = started(Traffic(router, KEYS, writers=4, readers=2), acked)
        await router.migrate()
        await traffic.stop()
        assert router.phase is MigrationPhase.DONE
        await traffic.check()
        for key in KEYS[:10]:
            assert await where(env, key) == [f"user-{key}"]
