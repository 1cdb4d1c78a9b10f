"""HashRouter.reshard: online, every acknowledged write kept exactly once, reads never go back."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

import durable
from durable.routers import HashRouter, ReshardPhase, ShardRef, shard_index
from tests.routers.apps import Traffic, ledger_worker

KEYS = [f"user-{i}" for i in range(120)]


async def fill(router: HashRouter, keys: list[str]) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        await router.call(key, "write", 10_000_000 + i)
        acked[key].append(10_000_000 + i)
    return acked


async def holders(env: Any, count: int) -> dict[str, list[int]]:
    """Which shards hold rows for each key (should be exactly one, its wanted one)."""
    found: dict[str, list[int]] = defaultdict(list)
    for i in range(count):
        for key in await env.LEDGER.get_by_name(f"shard-{i}").keys():
            found[key].append(i)
    return found


@pytest.mark.parametrize(("before", "after"), [(4, 16), (16, 4), (3, 4)])
async def test_reshard_under_concurrent_writers_keeps_every_acknowledged_write_once(
    run: Any, before: int, after: int
) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=before)
        initial = await fill(router, KEYS)
        traffic = Traffic(router, KEYS)
        for key, ops in initial.items():
            traffic.acked[key].extend(ops)
        progress = await router.reshard(after)
        await traffic.stop()
        assert router.shards == after and router.phase is ReshardPhase.SERVING
        assert traffic.during > 50, "writes must overlap the moves"
        await traffic.check()
        wanted = {k: [shard_index(k, after)] for k in KEYS}
        assert await holders(env, max(before, after)) == wanted
        expected = sum(shard_index(k, before) != shard_index(k, after) for k in KEYS)
        assert progress.moved == progress.found >= expected and progress.remaining == 0


async def test_a_stale_router_follows_tombstones_and_placements_after_a_reshard(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=4)
        await fill(router, KEYS)
        await router.reshard(8)
        stale = HashRouter(env.LEDGER, shards=4)
        for key in KEYS:
            assert await stale.call(key, "read") == 1
        assert stale.statistics().redirects > 0
        newcomer = next(
            k for k in (f"new-{i}" for i in range(100)) if shard_index(k, 4) != shard_index(k, 8)
        )
        await stale.call(newcomer, "write", 1)  # created at its new shard, not the stale one
        assert await holders(env, 8) == {
            **{k: [shard_index(k, 8)] for k in KEYS},
            newcomer: [shard_index(newcomer, 8)],
        }


async def test_an_interrupted_reshard_serves_every_key_once_and_resumes(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=4)
        initial = await fill(router, KEYS)
        traffic = Traffic(router, KEYS, writers=3, readers=1)
        for key, ops in initial.items():
            traffic.acked[key].extend(ops)
        await interrupt_after_moves(router, 16, moves=25)
        assert router.phase is ReshardPhase.SERVING and router.shards == 4
        found = await holders(env, 16)
        assert all(len(shards) == 1 for shards in found.values())
        assert (
            sum(
                shard_index(k, 16) != shard_index(k, 4) and found[k] == [shard_index(k, 16)]
                for k in found
            )
            >= 25
        )
        await router.reshard(16)
        await traffic.stop()
        await traffic.check()
        assert await holders(env, 16) == {k: [shard_index(k, 16)] for k in found}


async def test_a_reshard_cut_by_a_restart_is_finished_by_calling_it_again(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=2)
        acked = await fill(router, KEYS)
        await interrupt_after_moves(router, 6, moves=20)
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=2)  # the code still says 2
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]
        progress = await router.reshard(6)
        assert 0 < progress.moved < sum(shard_index(k, 2) != shard_index(k, 6) for k in KEYS)
        assert await holders(env, 6) == {k: [shard_index(k, 6)] for k in KEYS}
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]


async def test_a_reshard_to_another_count_after_an_interruption_finds_every_key(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=2)
        acked = await fill(router, KEYS)
        await interrupt_after_moves(router, 16, moves=30)  # keys now on shards up to 15
        await router.reshard(3)
        assert await holders(env, 16) == {k: [shard_index(k, 3)] for k in KEYS}
        for key in KEYS:
            assert await router.call(key, "ops") == acked[key]


async def interrupt_after_moves(router: HashRouter, shards: int, moves: int) -> None:
    done = asyncio.Event()
    count = 0
    original = router.mover.move_many

    async def counting(keys: list[str], src: ShardRef, dst: ShardRef) -> dict[str, Any]:
        nonlocal count
        outcomes = await original(keys, src, dst)
        count += len(keys)
        if count >= moves:
            done.set()
        return outcomes

    router.mover.move_many = counting  # type: ignore[method-assign]
    task = asyncio.create_task(router.reshard(shards, concurrency=2, batch=4))
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    assert not task.done(), f"the reshard finished after {count} moves, before the cut"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del router.mover.move_many


async def test_progress_is_visible_while_resharding(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=1)
        await fill(router, KEYS)
        seen: list[tuple[bool, int]] = []
        original = router.mover.move_many

        async def watching(keys: list[str], src: ShardRef, dst: ShardRef) -> dict[str, Any]:
            stats = router.statistics()
            assert stats.phase is ReshardPhase.RESHARDING and stats.target_shards == 4
            assert stats.reshard is not None
            seen.append((stats.reshard.running, stats.reshard.remaining))
            return await original(keys, src, dst)

        router.mover.move_many = watching  # type: ignore[method-assign]
        progress = await router.reshard(4, concurrency=1, batch=10)
        remaining = [r for _, r in seen]
        assert all(running for running, _ in seen)
        assert remaining == sorted(remaining, reverse=True) and remaining[0] == progress.found
        assert router.statistics().reshard == progress and progress.remaining == 0


async def test_reshard_refuses_bad_counts_and_a_second_reshard(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=2)
        with pytest.raises(durable.InvalidArgument, match="shards must be a positive int"):
            await router.reshard(0)
        await fill(router, KEYS[:10])
        first = asyncio.create_task(router.reshard(4))
        await asyncio.sleep(0)
        with pytest.raises(durable.InvalidArgument, match="is already resharding to 4 shards"):
            await router.reshard(8)
        await first
        assert (await router.reshard(4)).found == 0  # the same count: nothing to move
