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


class Tally(durable.DurableObject):
    async def add(self, key: str) -> int:
        n = await self.ctx.storage.get(key, 0) + 1
        await self.ctx.storage.put(key, n)
        return n


async def test_a_cancelled_caller_does_not_disturb_the_others_in_its_commit_round(
    run: Runner,
) -> None:
    """Callers of one round share its outcome; cancelling one (before the commit) fails only
    that one, with CancelledError, and its write still commits with the round."""
    async with run(durable.Worker(objects={"TALLY": Tally})) as env:
        calls = [asyncio.ensure_future(env.TALLY.get_by_name(f"t{i}").add("n")) for i in range(3)]
        await asyncio.sleep(0)  # every call ran and waits for the round's commit
        calls[1].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0] == 1 and results[2] == 1
        assert isinstance(results[1], asyncio.CancelledError)
        assert await env.TALLY.get_by_name("t1").add("n") == 2  # the cancelled write committed
