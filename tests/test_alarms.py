"""Alarm scheduler: heap order, replacement, retry schedule, restart re-arm, real-time precision."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path
from typing import Any

import durable
from durable.alarms import MAX_RETRIES, AlarmOutcome, AlarmScheduler
from durable.ids import ObjectId, id_from_name
from durable.testing import VirtualClock
from tests.conftest import host_of


def _scheduler(
    clock: VirtualClock, outcome: AlarmOutcome = AlarmOutcome.DONE
) -> tuple[AlarmScheduler, list[tuple[str, float, int]], list[str]]:
    fired: list[tuple[str, float, int]] = []
    dropped: list[str] = []

    async def fire(oid: ObjectId, scheduled: int, retry: int) -> AlarmOutcome:
        fired.append((str(oid.name), clock.now(), retry))
        return outcome

    async def drop(oid: ObjectId) -> None:
        dropped.append(str(oid.name))

    return AlarmScheduler(clock, fire, drop, random.Random(7)), fired, dropped


async def test_alarms_fire_in_time_order_and_replacement_wins() -> None:
    clock = VirtualClock(start=1000.0)
    scheduler, fired, _ = _scheduler(clock)
    for name, at in (("c", 1003.0), ("a", 1001.0), ("b", 1002.0)):
        scheduler.schedule(id_from_name("NS", name), int(at * 1000))
    scheduler.schedule(id_from_name("NS", "c"), 1_000_500)  # replaces c's 1003 s alarm
    scheduler.schedule(id_from_name("NS", "b"), None)  # removes b
    await clock.advance(10)
    assert fired == [("c", 1000.5, 0), ("a", 1001.0, 0)]
    assert scheduler.statistics().pending == 0


async def test_failing_alarm_retries_six_times_with_doubling_backoff_then_drops() -> None:
    clock = VirtualClock(start=1000.0)
    scheduler, fired, dropped = _scheduler(clock, AlarmOutcome.FAILED)
    scheduler.schedule(id_from_name("NS", "x"), 1_000_000)
    await clock.advance(300)
    assert [retry for _, _, retry in fired] == list(range(MAX_RETRIES + 1))
    times = [at for _, at, _ in fired]
    for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
        assert 2**n <= after - before <= 2**n * 1.25
    assert dropped == ["x"]
    assert scheduler.statistics().dropped == 1


async def test_no_retry_outcome_drops_at_once() -> None:
    clock = VirtualClock(start=1000.0)
    scheduler, fired, dropped = _scheduler(clock, AlarmOutcome.NO_RETRY)
    scheduler.schedule(id_from_name("NS", "x"), 1_000_000)
    await clock.advance(300)
    assert len(fired) == 1 and dropped == ["x"]


LATENESS: list[float] = []


class Punctual(durable.DurableObject):
    async def arm(self, delay_ms: int) -> int:
        when = int(time.time() * 1000) + delay_ms
        await self.ctx.storage.set_alarm(when)
        return when

    async def alarm(self, info: durable.AlarmInfo) -> None:
        LATENESS.append(time.time() * 1000 - info.scheduled_time)


async def test_alarm_fires_within_20_ms_on_the_real_clock(tmp_path: Path) -> None:
    worker = durable.Worker(objects={"P": Punctual})
    LATENESS.clear()
    async with durable.connect(worker, data_dir=tmp_path) as env:
        await env.P.get_by_name("a").arm(100)
        for _ in range(200):  # bounded wait on the real clock: at most 2 s
            if LATENESS:
                break
            await asyncio.sleep(0.01)
    assert len(LATENESS) == 1
    assert 0 <= LATENESS[0] <= 20


class Sleeper(durable.DurableObject):
    async def arm(self, at_ms: int) -> None:
        await self.ctx.storage.set_alarm(at_ms)

    async def alarm(self, info: durable.AlarmInfo) -> None:
        await self.ctx.storage.put("fired_at", self.ctx.now())


async def test_restart_rearms_from_the_index_without_opening_objects(tmp_path: Path) -> None:
    worker = durable.Worker(objects={"S": Sleeper})
    clock = VirtualClock(start=1000.0)
    async with durable.connect(worker, data_dir=tmp_path, clock=clock) as env:
        for i in range(20):
            await env.S.get_by_name(f"s{i}").arm(1_005_000 + i)
    later = VirtualClock(start=2000.0)  # every alarm came due while it was down
    async with durable.connect(worker, data_dir=tmp_path, clock=later) as env:
        host = host_of(env)
        assert host.statistics().pending_alarms == 20
        assert host.statistics().active_objects == 0  # re-armed without activating anyone
        await later.advance(0)
        fired: list[Any] = [await env.S.get_by_name(f"s{i}").get_fired() for i in range(20)]
    assert fired == [2000.0] * 20


async def _get_fired(self: Sleeper) -> Any:
    return await self.ctx.storage.get("fired_at")


Sleeper.get_fired = _get_fired  # type: ignore[attr-defined]


class Again(durable.DurableObject):
    """Its first ``alarm()`` sets the alarm to the very time it was scheduled for."""

    async def arm(self, at_ms: int) -> None:
        await self.ctx.storage.set_alarm(at_ms)

    async def alarm(self, info: durable.AlarmInfo) -> None:
        fired = await self.ctx.storage.get("fired", 0)
        await self.ctx.storage.put("fired", fired + 1)
        if not fired:
            await self.ctx.storage.set_alarm(info.scheduled_time)

    async def fired(self) -> Any:
        return await self.ctx.storage.get("fired"), await self.ctx.storage.get_alarm()


async def test_an_alarm_set_again_inside_alarm_to_the_same_time_fires_again(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(start=1000.0)
    worker = durable.Worker(objects={"A": Again})
    async with durable.connect(worker, data_dir=tmp_path, clock=clock) as env:
        stub = env.A.get_by_name("a")
        await stub.arm(1_000_050)
        await clock.advance(0.05)
        await clock.advance(0)
        assert await stub.fired() == (2, None)


async def test_a_fired_alarm_is_cleared_in_the_commit_of_its_handlers_writes(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(
        durable.Worker(objects={"S": Sleeper}), data_dir=tmp_path, clock=clock
    ) as env:
        host = host_of(env)
        await env.S.get_by_name("s").arm(1_000_050)
        partition = next(p for p in host.partitions.values() if p.statistics()[0])
        commits = host.statistics().commits
        await clock.advance(0.05)
        assert host.statistics().commits == commits + 1  # the put and the cleared alarm
        assert host.statistics().pending_alarms == 0
        assert partition.statistics() == (0, 1)  # no objects row left, one kv row
