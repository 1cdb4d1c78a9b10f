"""Mover: copy, verify, delete one key; follow tombstones; undo on failure; finish leftovers."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from durable.routers import FeatureRouter, KeyMoved, MoveConflict, MoveOutcome, Mover, ShardRef
from durable.testing import wait_all_tasks_blocked
from tests.routers.apps import STALLS, Ledger, ledger_worker

A, B, C = ShardRef("LEDGER", "a"), ShardRef("LEDGER", "b"), ShardRef("NEW", "c")


def mover(env: Any) -> Mover:
    return Mover({"LEDGER": env.LEDGER, "NEW": env.NEW})


async def test_a_move_copies_every_row_and_leaves_a_tombstone(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        for op in range(5):
            await m.stub(A).write("k", op)
        await m.stub(A).write("other", 9)
        assert await m.move("k", A, C) is MoveOutcome.MOVED
        assert await m.stub(C).ops("k") == [0, 1, 2, 3, 4]
        assert await m.stub(A).keys() == ["other"]
        with pytest.raises(KeyMoved) as moved:
            await m.stub(A).read("k")
        assert moved.value.to == C
        stats = m.statistics()
        assert (stats.moves, stats.rows, stats.failures, stats.in_progress) == (1, 6, 0, 0)


async def test_moving_again_or_from_a_stale_source_follows_tombstones(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        await m.stub(A).write("k", 1)
        await m.move("k", A, B)
        assert await m.move("k", A, B) is MoveOutcome.ALREADY
        assert await m.move("k", A, C) is MoveOutcome.MOVED  # A -> (tombstone) B -> C
        assert await m.stub(C).ops("k") == [1]
        assert await m.move("k", A, A) is MoveOutcome.MOVED  # and back home
        assert await m.stub(A).ops("k") == [1]


async def test_an_absent_key_moves_as_a_tombstone(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        assert await m.move("nobody", A, B) is MoveOutcome.MOVED
        with pytest.raises(KeyMoved):
            await m.stub(A).write("nobody", 1)
        assert await m.stub(B).write("nobody", 1) == 1


async def test_a_conflict_at_the_destination_leaves_the_source_serving(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        await m.stub(A).write("k", 1)
        await m.stub(B).write("k", 2)
        with pytest.raises(
            MoveConflict, match=re.escape("the destination already holds data for it")
        ):
            await m.move("k", A, B)
        assert await m.stub(A).write("k", 3) == 2  # unfrozen, still the holder
        assert await m.stub(B).ops("k") == [2]
        assert m.statistics().failures == 1


async def test_a_digest_mismatch_discards_the_copy(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Ledger.route_import

    async def corrupt(
        self: Ledger, key: str, rows: dict[str, Any], source: Any, digest: str
    ) -> str:
        await original(self, key, {**rows, "n": 999}, source, digest)
        return "not the digest"

    monkeypatch.setattr(Ledger, "route_import", corrupt)
    async with run(ledger_worker()) as env:
        m = mover(env)
        await m.stub(A).write("k", 1)
        with pytest.raises(MoveConflict, match="does not match the source's digest"):
            await m.move("k", A, B)
        assert await m.stub(A).read("k") == 1
        assert await m.stub(B).route_status() == {
            "frozen": 0,
            "staging": 0,
            "inflight": 0,
            "moved": 0,
            "staged": 0,
        }
        assert await m.stub(B).keys() == []


async def test_a_refused_commit_is_retried_from_the_start(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Ledger.route_commit
    refusals = [True]

    async def forgetful(self: Ledger, key: str, token: int, dest: Any) -> bool:
        if refusals:
            refusals.pop()
            await self.route_abort(key, token)  # as a source restarted mid-move would
            return False
        return await original(self, key, token, dest)

    monkeypatch.setattr(Ledger, "route_commit", forgetful)
    async with run(ledger_worker()) as env:
        m = mover(env)
        await m.stub(A).write("k", 1)
        assert await m.move("k", A, B) is MoveOutcome.MOVED
        assert await m.stub(B).ops("k") == [1]
        assert m.statistics().retries == 1


async def test_a_move_outlives_its_cancelled_caller(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        STALLS["g"] = asyncio.Event()
        try:
            in_flight = asyncio.create_task(m.stub(A).slow_write("k", 1, "g"))
            await wait_all_tasks_blocked()
            caller = asyncio.create_task(m.move("k", A, B))
            await wait_all_tasks_blocked()
            caller.cancel()
            STALLS["g"].set()
            assert await in_flight == 1
            with pytest.raises(asyncio.CancelledError):
                await caller
            await wait_all_tasks_blocked()
        finally:
            STALLS.clear()
        assert await m.stub(B).ops("k") == [1]
        assert m.statistics().in_progress == 0


async def test_a_routed_call_finishes_a_move_its_mover_abandoned(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        await m.stub(A).write("k", 1)
        _, token, rows, digest = await m.stub(A).route_export("k")
        await m.stub(B).route_import("k", rows, A.wire(), digest)
        await m.stub(A).route_commit("k", token, B.wire())
    async with run(ledger_worker()) as env:  # the mover died before route_activate
        router = FeatureRouter(env.LEDGER, ["a", "b"])
        with pytest.raises(KeyMoved):
            await router.get("a").read("k")
        assert await router.call("b", "write", 2) == 1  # another key of b is unaffected
        assert await router.get("b").route_status() == {
            "frozen": 0,
            "staging": 0,
            "inflight": 0,
            "moved": 0,
            "staged": 1,
        }
        ledger = FeatureRouter(env.LEDGER, {"k": "a"})  # routes k to its old home, a
        assert (
            await ledger.call("k", "write", 3) == 2
        )  # a -> tombstone -> b: KeyNotHere -> activated
        assert await env.LEDGER.get_by_name("b").ops("k") == [1, 3]


async def test_move_many_moves_a_batch_in_one_round(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        keys = [f"k{i}" for i in range(10)]
        for i, key in enumerate(keys):
            await m.stub(A).write(key, i)
        outcomes = await m.move_many(keys, A, C)
        assert outcomes == dict.fromkeys(keys, MoveOutcome.MOVED)
        assert await m.stub(C).keys() == sorted(keys) and await m.stub(A).keys() == []
        for i, key in enumerate(keys):
            assert await m.stub(C).ops(key) == [i]
        assert m.statistics().moves == 10


async def test_move_many_fails_only_the_conflicting_key_and_follows_moved_ones(run: Any) -> None:
    async with run(ledger_worker()) as env:
        m = mover(env)
        for key in ("a", "b", "c", "d"):
            await m.stub(A).write(key, 1)
        await m.stub(B).write("b", 2)  # b was written at the destination directly
        await m.move("c", A, C)  # c moved on elsewhere already: A has a tombstone for it
        outcomes = await m.move_many(["a", "b", "c", "d"], A, B)
        assert outcomes["a"] is outcomes["d"] is MoveOutcome.MOVED
        assert outcomes["c"] is MoveOutcome.MOVED  # followed A -> C, moved C -> B
        assert isinstance(outcomes["b"], MoveConflict)
        assert await m.stub(A).keys() == ["b"] and await m.stub(A).read("b") == 1
        assert await m.stub(B).ops("b") == [2]
        assert sorted(await m.stub(B).keys()) == ["a", "b", "c", "d"]


async def test_move_many_redoes_a_refused_commit_alone(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Ledger.route_commit
    refused = {"k3"}

    async def forgetful(self: Ledger, key: str, token: int, dest: Any) -> bool:
        if key in refused:
            refused.discard(key)
            await self.route_abort(key, token)
            return False
        return await original(self, key, token, dest)

    monkeypatch.setattr(Ledger, "route_commit", forgetful)
    async with run(ledger_worker()) as env:
        m = mover(env)
        keys = [f"k{i}" for i in range(5)]
        for key in keys:
            await m.stub(A).write(key, 1)
        assert await m.move_many(keys, A, B) == dict.fromkeys(keys, MoveOutcome.MOVED)
        assert m.statistics().retries == 1
        assert sorted(await m.stub(B).keys()) == keys
