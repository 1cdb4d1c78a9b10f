"""ShardObject: the per-key fence and the route_* move protocol, driven by hand."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import durable
from durable.routers import KeyMoved, KeyNotHere, MoveConflict, ShardObject, ShardRef, shard_index
from durable.routers.shard import rows_digest
from durable.testing import wait_all_tasks_blocked
from tests.routers.apps import STALLS, ledger_worker

SRC, DST = ("LEDGER", "src"), ("LEDGER", "dst")


async def stubs(env: Any) -> tuple[Any, Any]:
    return env.LEDGER.get_by_name("src"), env.LEDGER.get_by_name("dst")


def test_route_prefix_is_reserved_in_subclasses() -> None:
    with pytest.raises(
        TypeError, match=re.escape("Bad.route_mine: the route_ prefix is reserved.")
    ):

        class Bad(ShardObject):
            async def route_mine(self) -> None: ...


async def test_fenced_methods_need_the_routing_key_first(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        with pytest.raises(
            durable.InvalidRouteKey, match="read\\(\\) of a ShardObject takes the routing key"
        ):
            await src.read()
        with pytest.raises(durable.InvalidRouteKey, match="Ledger keys must be str, not int"):
            await src.read(5)
        assert await src.whoami() == "src"  # @shard_wide: no key


async def test_export_returns_rows_and_digest_and_freezes_the_key(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        await src.write("k", 1)
        await src.write("other", 2)
        kind, token, rows, digest = await src.route_export("k")
        assert (kind, rows) == ("rows", {"n": 1, "op:00000001": 1})
        assert digest == rows_digest(rows)
        waiting = asyncio.create_task(src.write("k", 3))
        await wait_all_tasks_blocked()
        assert not waiting.done()  # frozen: the call waits
        assert await src.read("other") == 1  # other keys are served
        await src.route_abort("k", token)
        assert await waiting == 2  # it ran here after the abort
        assert await src.ops("k") == [1, 3]


async def test_export_waits_for_calls_in_flight_and_copies_their_writes(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        STALLS["g"] = asyncio.Event()
        try:
            in_flight = asyncio.create_task(src.slow_write("k", 7, "g"))
            await wait_all_tasks_blocked()
            export = asyncio.create_task(src.route_export("k"))
            await wait_all_tasks_blocked()
            assert not export.done()
            STALLS["g"].set()
            assert await in_flight == 1
            _, _, rows, _ = await export
        finally:
            STALLS.clear()
        assert rows == {"n": 1, "op:00000007": 7}


async def test_commit_moves_the_key_out_and_waiting_calls_get_key_moved(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, dst = await stubs(env)
        await src.write("k", 1)
        _, token, rows, digest = await src.route_export("k")
        waiting = asyncio.create_task(src.write("k", 2))
        assert await dst.route_import("k", rows, SRC, digest) == digest
        assert await src.route_commit("k", token, DST) is True
        with pytest.raises(
            KeyMoved, match=re.escape("Routing key 'k' is served by LEDGER/dst, not here")
        ) as moved:
            await waiting
        assert moved.value.to == ShardRef(*DST) and moved.value.retryable
        assert await src.keys() == []
        await dst.route_activate("k")
        assert await dst.read("k") == 1


async def test_a_commit_with_a_stale_token_is_refused(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        await src.write("k", 1)
        _, token, _, _ = await src.route_export("k")
        await src.route_abort("k", token)
        assert await src.route_commit("k", token, DST) is False
        assert await src.read("k") == 1


async def test_staged_keys_wait_for_activation(run: Any) -> None:
    async with run(ledger_worker()) as env:
        _, dst = await stubs(env)
        await dst.route_import("k", {"n": 4}, SRC, rows_digest({"n": 4}))
        waiting = asyncio.create_task(dst.read("k"))
        await wait_all_tasks_blocked()
        assert not waiting.done()
        assert await dst.route_activate("k") == ("ok",)
        assert await waiting == 4


async def test_a_staged_key_whose_mover_is_gone_raises_key_not_here(run: Any) -> None:
    async with run(ledger_worker()) as env:
        _, dst = await stubs(env)
        await dst.route_import("k", {"n": 4}, SRC, rows_digest({"n": 4}))
    async with run(ledger_worker()) as env:  # a restart: the in-memory staging is gone
        _, dst = await stubs(env)
        with pytest.raises(
            KeyNotHere, match=re.escape("Routing key 'k' is being moved here from LEDGER/src")
        ) as missing:
            await dst.read("k")
        assert missing.value.source == ShardRef(*SRC)
        assert (await dst.route_status())["staged"] == 1


async def test_a_restarted_source_forgets_its_freeze_and_serves_again(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        await src.write("k", 1)
        _, token, _, _ = await src.route_export("k")
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        assert await src.route_commit("k", token, DST) is False
        assert await src.write("k", 2) == 2


async def test_discard_drops_the_copy_and_restores_the_tombstone_it_replaced(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, dst = await stubs(env)
        await src.write("k", 1)
        _, token, rows, digest = await src.route_export("k")
        await dst.route_import("k", rows, SRC, digest)
        await src.route_commit("k", token, DST)
        await dst.route_activate("k")
        # Now k moves back: src imports it (its tombstone is replaced), then the move fails.
        await src.route_import("k", {"n": 9}, DST, rows_digest({"n": 9}))
        await src.route_discard("k")
        with pytest.raises(KeyMoved) as moved:
            await src.read("k")
        assert moved.value.to == ShardRef(*DST)
        assert await dst.read("k") == 1


async def test_importing_over_data_written_at_the_destination_is_a_conflict(run: Any) -> None:
    async with run(ledger_worker()) as env:
        _, dst = await stubs(env)
        await dst.write("k", 1)
        message = (
            "Cannot move routing key 'k' to LEDGER/dst: the destination already holds data for it"
        )
        with pytest.raises(MoveConflict, match=re.escape(message)):
            await dst.route_import("k", {"n": 5}, SRC, "x")
        assert await dst.read("k") == 1


async def test_route_keys_lists_routing_keys_in_pages_skipping_the_shards_own_keys(
    run: Any,
) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        for key in ("b", "a", "\x01x", "a\x01", "zz", "é"):
            await src.write(key, 1)
        await src.route_configure({"kind": "hash", "binding": "LEDGER", "prefix": "s", "shards": 1})
        expected = ["\x01x", "a", "a\x01", "b", "zz", "é"]
        assert await src.route_keys() == expected
        assert await src.route_keys(None, 2) == expected[:2]
        assert await src.route_keys("a", 2) == ["a\x01", "b"]
        assert await src.route_keys("é") == []


async def test_a_stored_placement_redirects_keys_held_elsewhere(run: Any) -> None:
    async with run(ledger_worker()) as env:
        shard = env.LEDGER.get_by_name("shard-0")
        await shard.write("held", 1)
        placement = {"kind": "hash", "binding": "LEDGER", "prefix": "shard-", "shards": 4}
        assert await shard.route_configure(placement) is None
        away = next(k for k in (f"k{i}" for i in range(100)) if shard_index(k, 4) != 0)
        home = next(k for k in (f"k{i}" for i in range(100)) if shard_index(k, 4) == 0)
        with pytest.raises(KeyMoved) as moved:
            await shard.write(away, 1)
        assert moved.value.to == ShardRef("LEDGER", f"shard-{shard_index(away, 4)}")
        assert await shard.write(home, 1) == 1
        assert await shard.write("held", 2) == 2  # held here: served until it is moved
        assert await shard.route_configure(None) == placement
        assert await shard.write(away, 1) == 1


async def test_a_placement_this_code_cannot_evaluate_is_refused(run: Any) -> None:
    async with run(ledger_worker()) as env:
        with pytest.raises(durable.InvalidArgument, match="Unknown placement kind 'ring'"):
            await env.LEDGER.get_by_name("s").route_configure({"kind": "ring", "binding": "LEDGER"})
        with pytest.raises(durable.InvalidArgument, match="Malformed placement"):
            await env.LEDGER.get_by_name("s").route_configure({"kind": "hash", "binding": "LEDGER"})


async def test_a_freeze_whose_mover_vanished_is_released_after_hold_seconds(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("durable.routers.shard.HOLD_SECONDS", 0.01)
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        await src.write("k", 1)
        _, token, _, _ = await src.route_export("k")  # ... and the mover never comes back
        assert await src.write("k", 2) == 2  # waited for the hold to expire, then ran here
        assert await src.route_commit("k", token, DST) is False


async def test_a_call_may_reenter_its_own_key_but_not_bypass_another_objects_fence(
    run: Any,
) -> None:
    async with run(ledger_worker()) as env:
        src, dst = await stubs(env)
        await dst.write("k", 1)
        _, token, _, _ = await dst.route_export("k")
        relayed = asyncio.create_task(src.relay("k", "dst", 2))  # src's call for k -> dst's k
        await wait_all_tasks_blocked()
        assert not relayed.done()  # dst's freeze holds it, though k is "entered" in this task
        await dst.route_abort("k", token)
        assert await relayed == 2


async def test_route_keys_skips_past_keys_with_many_rows(run: Any) -> None:
    async with run(ledger_worker()) as env:
        src, _ = await stubs(env)
        for op in range(300):  # more rows than one scan page
            await src.write("a", op)
        await src.write("b", 1)
        await src.write("c", 1)
        assert await src.route_keys() == ["a", "b", "c"]
        assert await src.route_keys(None, 1) == ["a"]
        assert await src.route_keys("a", 1) == ["b"]
