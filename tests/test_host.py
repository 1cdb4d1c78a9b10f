"""Host: group commit, output gate, eviction, file budget, reset isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durable
from durable.faults import faults
from durable.testing import VirtualClock
from tests.conftest import Runner, host_of


class Cell(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.gate = asyncio.Event()

    async def add(self, by: int = 1) -> int:
        n = await self.ctx.storage.get("n", 0) + by
        await self.ctx.storage.put("n", n)
        return int(n)

    async def hold(self) -> None:
        await self.gate.wait()

    async def release(self) -> None:
        self.gate.set()

    async def promote(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")

    async def later(self) -> None:
        self.ctx.wait_until(self.gate.wait())


worker = durable.Worker(objects={"CELL": Cell})


async def test_one_commit_per_turn_covers_every_object(run: Runner) -> None:
    async with run(worker) as env:
        host = host_of(env)
        before = host.statistics().commits
        await asyncio.gather(*(env.CELL.get_by_name(f"o{i}").add() for i in range(50)))
        assert host.statistics().commits - before <= 2


async def test_output_gate_holds_reply_until_commit(run: Runner) -> None:
    async with run(worker) as env:
        host = host_of(env)
        call = asyncio.ensure_future(env.CELL.get_by_name("a").add())
        for _ in range(3):
            await asyncio.sleep(0)
            if host.commits.round is not None:
                break
        assert host.commits.round is not None and not call.done()  # written, not yet committed
        assert await call == 1
        assert host.commits.round is None


async def test_failed_commit_resets_only_that_object(run: Runner) -> None:
    async with run(worker) as env:
        good, bad = env.CELL.get_by_name("good"), env.CELL.get_by_name("bad")
        await good.add()
        await bad.add()
        calls = 0

        def fail_first_batch() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk on fire")

        faults.arm("commit.before", fail_first_batch)
        try:
            results = await asyncio.gather(good.add(), return_exceptions=True)
        finally:
            faults.disarm()
        # The batch failed once, then the object alone committed: no error, value kept.
        assert results == [2]
        faults.arm("commit.before", lambda: (_ for _ in ()).throw(OSError("still")))
        try:
            with pytest.raises(durable.ObjectReset):
                await bad.add()
        finally:
            faults.disarm()
        assert await bad.add(0) == 1  # the failed write was never acknowledged, nor kept
        assert await good.add(0) == 2


async def test_idle_object_is_evicted_but_busy_one_is_not(run: Runner, clock: VirtualClock) -> None:
    async with run(worker) as env:
        host = host_of(env)
        await env.CELL.get_by_name("idle").add()
        busy = env.CELL.get_by_name("busy")
        held = asyncio.ensure_future(busy.hold())
        await asyncio.sleep(0)
        await env.CELL.get_by_name("later").later()
        await clock.advance(30)
        active = {a.oid.name for a in host._active.values()}
        assert active == {"busy", "later"}
        await env.CELL.get_by_name("later").release()
        await busy.release()
        await held
        await clock.advance(30)
        assert host.statistics().active_objects == 0
        assert host.statistics().evictions == 3


async def test_open_files_stay_within_budget(run: Runner) -> None:
    async with run(worker) as env:
        host = host_of(env)
        host.max_open_files = 3
        for i in range(8):
            await env.CELL.get_by_name(f"f{i}").promote()
        assert host.statistics().open_files <= 3
        for i in range(8):  # closed files reopen on demand
            assert await env.CELL.get_by_name(f"f{i}").add() == 1


async def test_too_many_pending_events_overloads(run: Runner) -> None:
    limited = durable.Worker(
        objects={"CELL": Cell}, limits={"CELL": durable.Limits(max_pending_events=2)}
    )
    async with run(limited) as env:
        stub = env.CELL.get_by_name("a")
        held = [asyncio.ensure_future(stub.hold()) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(durable.Overloaded) as info:
            await stub.add()
        assert info.value.overloaded and info.value.retryable
        host = host_of(env)
        (activation,) = host._active.values()
        activation.instance.gate.set()  # type: ignore[attr-defined]
        await asyncio.gather(*held)
        assert await stub.add() == 1
