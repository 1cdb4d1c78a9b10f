"""Conformance: eviction of idle objects (semantics.md, "Eviction of idle objects").

`Worker(idle_timeout=10.0)` on the virtual clock. Each instance records its serial number in a
module-level list when constructed, so a test can tell "same instance" from "new instance" and can
see that no instance was built while nothing called the object.

Decisions where the contracts are silent:

* Idle time counts from the end of the object's last event (a call, an alarm, or a
  `ctx.wait_until` task finishing); an object with a call in progress or a pending `wait_until`
  task is never idle.
* An object is evicted once it has been idle for exactly `idle_timeout` seconds (the reference saw
  eviction by 10.0 s and none at 9.5 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durable import DurableObject, Worker
from durable.testing import VirtualClock

CONSTRUCTED: list[int] = []
fired_alarms: list[tuple[int, int]] = []
EVENTS: dict[str, asyncio.Event] = {}
DONE: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    CONSTRUCTED.clear()
    fired_alarms.clear()
    DONE.clear()
    EVENTS.clear()
    for name in ("background", "hold", "held"):
        EVENTS[name] = asyncio.Event()


async def settle(turns: int = 100) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


class Probe(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        CONSTRUCTED.append(len(CONSTRUCTED) + 1)
        self.serial = len(CONSTRUCTED)
        self.mem: str | None = None

    async def remember(self, value: str) -> int:
        self.mem = value
        return self.serial

    async def recall(self) -> tuple[int, str | None]:
        return self.serial, self.mem

    async def write(self, key: str, value: Any, alarm_ms: int | None = None) -> None:
        await self.ctx.storage.put(key, value)
        if alarm_ms is not None:
            await self.ctx.storage.set_alarm(alarm_ms)

    async def read(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def get_alarm(self) -> Any:
        return await self.ctx.storage.get_alarm()

    async def start_background(self) -> None:
        async def background() -> None:
            await EVENTS["background"].wait()
            DONE.append("background")

        self.ctx.wait_until(background())

    async def hold(self) -> int:
        EVENTS["held"].set()
        await EVENTS["hold"].wait()
        return self.serial

    async def alarm(self, info: Any) -> None:
        fired_alarms.append((self.serial, info.scheduled_time))


@pytest.fixture
def worker() -> Worker:
    return Worker(objects={"PROBE": Probe}, idle_timeout=10.0)


async def test_object_idle_for_9_5_seconds_keeps_its_instance(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        assert await stub.remember("kept") == 1
        await clock.advance(9.5)
        assert await stub.recall() == (1, "kept")
    assert CONSTRUCTED == [1]


async def test_object_idle_for_10_seconds_is_evicted_and_loses_memory(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.remember("lost")
        await clock.advance(10)
        assert CONSTRUCTED == [1]  # eviction does not construct anything
        assert await stub.recall() == (2, None)


async def test_a_call_restarts_the_idle_timer(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.remember("kept")
        await clock.advance(9.5)
        assert await stub.recall() == (1, "kept")
        await clock.advance(9.5)
        assert await stub.recall() == (1, "kept")
        await clock.advance(10)
        assert await stub.recall() == (2, None)


async def test_storage_and_alarm_survive_eviction(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    alarm_ms = round(clock.now() * 1000) + 30_000
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.write("k", {"v": [1, 2]}, alarm_ms)
        await clock.advance(10)
        await clock.advance(15)
        assert CONSTRUCTED == [1]
        assert fired_alarms == []
        await clock.advance(5)
        assert fired_alarms == [(2, alarm_ms)]
        assert await stub.read("k") == {"v": [1, 2]}


async def test_storage_read_after_eviction_sees_earlier_writes(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    alarm_ms = round(clock.now() * 1000) + 60_000
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.write("k", "v", alarm_ms)
        await clock.advance(10)
        assert await stub.recall() == (2, None)
        assert await stub.read("k") == "v"
        assert await stub.get_alarm() == alarm_ms


async def test_object_with_pending_wait_until_is_not_evicted(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.remember("kept")
        await stub.start_background()
        await clock.advance(30)
        assert await stub.recall() == (1, "kept")
        EVENTS["background"].set()
        await settle()
        assert DONE == ["background"]
        await clock.advance(10)
        assert await stub.recall() == (2, None)


async def test_object_in_the_middle_of_a_call_is_not_evicted(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.PROBE.get_by_name("a")
        await stub.remember("kept")
        held = asyncio.ensure_future(stub.hold())
        await asyncio.wait_for(EVENTS["held"].wait(), timeout=10)
        await clock.advance(30)
        assert await stub.recall() == (1, "kept")
        EVENTS["hold"].set()
        assert await held == 1
    assert CONSTRUCTED == [1]
