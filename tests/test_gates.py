"""Gates: the CPU guard interrupts a stuck event; the input gate releases held events in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import durable
from durable.gates import CpuGuard, InputGate
from tests.conftest import Runner


async def test_cpu_guard_interrupts_a_step_that_never_yields() -> None:
    guard = CpuGuard()
    guard.start()
    try:

        async def spin() -> None:
            end = time.perf_counter() + 5
            while time.perf_counter() < end:
                pass

        started = time.perf_counter()
        with pytest.raises(durable.CpuTimeExceeded, match="more than 50 ms"):
            await guard.metered(spin(), 50)
        assert time.perf_counter() - started < 2
        assert guard.interrupts == 1
    finally:
        guard.stop()


async def test_cpu_guard_sums_steps_across_awaits() -> None:
    guard = CpuGuard()  # no watchdog thread: only the per-step sum can trip it

    async def many_steps() -> None:
        for _ in range(100):
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    with pytest.raises(durable.CpuTimeExceeded):
        await guard.metered(many_steps(), 50)


async def test_input_gate_releases_held_events_in_arrival_order() -> None:
    gate = InputGate()
    gate.close()
    order: list[int] = []

    async def event(i: int) -> None:
        await gate.enter()
        order.append(i)

    tasks = [asyncio.ensure_future(event(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert order == []
    gate.open()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_broken_input_gate_fails_held_and_later_events() -> None:
    gate = InputGate()
    gate.close()
    held = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0)
    gate.break_(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await held
    with pytest.raises(RuntimeError, match="boom"):
        await gate.enter()


class Spinner(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.born = time.perf_counter_ns()

    async def spin(self) -> None:
        await self.ctx.storage.put("before", 1)
        end = time.perf_counter() + 5
        while time.perf_counter() < end:
            pass

    async def birth(self) -> int:
        return self.born


async def test_cpu_limit_resets_the_object_and_keeps_storage(run: Runner) -> None:
    worker = durable.Worker(objects={"S": Spinner}, limits={"S": durable.Limits(cpu_ms=50)})
    async with run(worker) as env:
        stub = env.S.get_by_name("a")
        first = await stub.birth()
        with pytest.raises(durable.CpuTimeExceeded):
            await stub.spin()
        assert await stub.birth() != first  # __init__ ran again
