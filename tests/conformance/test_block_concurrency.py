"""Conformance: `ctx.block_concurrency_while` (semantics.md, "blockConcurrencyWhile").

Ordering is driven by `asyncio.Event`s in module-level dicts, never by sleeps. To show that a call
did *not* run, the test yields to the loop a bounded number of times (`settle`) and checks the
trace.

Decisions where the contracts are silent:

* A callback that raises resets the object even if the object catches the exception itself (as in
  workerd): the caller gets the callback's exception class and message with `.remote` and
  `.durable_object_reset` set to True.
* The 30 s timeout runs on the injected clock (STYLE: time only from the clock object), so
  `clock.advance(30)` resets an object whose callback never finishes; the waiting caller gets
  `ObjectReset`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import durable.errors as errors
from durable import DurableObject, Worker
from durable.testing import VirtualClock

TRACE: list[str] = []
EVENTS: dict[str, asyncio.Event] = {}
CONSTRUCTED: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    TRACE.clear()
    CONSTRUCTED.clear()
    EVENTS.clear()
    for name in ("init_started", "init_release", "a_started", "a_release", "stuck"):
        EVENTS[name] = asyncio.Event()


async def settle(turns: int = 100) -> None:
    """Let every runnable task make progress (bounded yields, no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def wait_for_event(name: str) -> None:
    await asyncio.wait_for(EVENTS[name].wait(), timeout=10)


class InitBlocked(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        TRACE.append("ctor-start")
        super().__init__(ctx, env)
        self.ready = False
        ctx.block_concurrency_while(self._setup)
        TRACE.append("ctor-end")

    async def _setup(self) -> None:
        TRACE.append("bcw-start")
        EVENTS["init_started"].set()
        await EVENTS["init_release"].wait()
        await self.ctx.storage.get("anything")
        self.ready = True
        TRACE.append("bcw-end")

    async def is_ready(self) -> bool:
        TRACE.append("call")
        return self.ready


class Blocker(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        CONSTRUCTED.append("ctor")
        self.serial = len(CONSTRUCTED)
        self.field = "set in __init__"

    async def hold(self) -> Any:
        async def callback() -> str:
            TRACE.append("A-bcw-start")
            EVENTS["a_started"].set()
            await EVENTS["a_release"].wait()
            TRACE.append("A-bcw-end")
            return "from callback"

        result = await self.ctx.block_concurrency_while(callback)
        TRACE.append("A-after")
        return result

    async def quick(self, label: str) -> str:
        TRACE.append(label)
        return label

    async def boom(self) -> str:
        async def callback() -> None:
            self.field = "changed before the failure"
            raise ValueError("bcw boom")

        await self.ctx.block_concurrency_while(callback)
        return "not reached"

    async def boom_caught(self) -> str:
        async def callback() -> None:
            raise ValueError("bcw boom")

        try:
            await self.ctx.block_concurrency_while(callback)
        except ValueError:
            return "swallowed"
        return "not reached"

    async def stuck(self) -> None:
        async def callback() -> None:
            await EVENTS["stuck"].wait()

        await self.ctx.block_concurrency_while(callback)

    async def state(self) -> tuple[int, str]:
        return self.serial, self.field


@pytest.fixture
def worker() -> Worker:
    return Worker(objects={"INIT": InitBlocked, "BLOCK": Blocker})


async def test_constructor_bcw_holds_first_calls_until_it_finishes(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.INIT.get_by_name("a")
        calls = [asyncio.ensure_future(stub.is_ready()) for _ in range(5)]
        await wait_for_event("init_started")
        await settle()
        assert "call" not in TRACE
        assert not any(task.done() for task in calls)
        EVENTS["init_release"].set()
        assert await asyncio.gather(*calls) == [True] * 5
    assert TRACE == ["ctor-start", "ctor-end", "bcw-start", "bcw-end"] + ["call"] * 5


async def test_method_bcw_holds_later_calls_and_returns_the_callback_value(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.BLOCK.get_by_name("a")
        a = asyncio.ensure_future(stub.hold())
        await wait_for_event("a_started")
        b = asyncio.ensure_future(stub.quick("B"))
        await settle()
        c = asyncio.ensure_future(stub.quick("C"))
        await settle()
        assert TRACE == ["A-bcw-start"]
        EVENTS["a_release"].set()
        assert await a == "from callback"
        assert await b == "B"
        assert await c == "C"
    assert TRACE == ["A-bcw-start", "A-bcw-end", "A-after", "B", "C"]


async def test_failing_bcw_callback_reaches_the_caller_and_resets_the_object(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.BLOCK.get_by_name("a")
        assert await stub.state() == (1, "set in __init__")
        with pytest.raises(ValueError, match=r"^bcw boom$") as info:
            await stub.boom()
        assert info.value.remote is True  # type: ignore[attr-defined]
        assert info.value.durable_object_reset is True  # type: ignore[attr-defined]
        assert await stub.state() == (2, "set in __init__")
    assert CONSTRUCTED == ["ctor", "ctor"]


async def test_failing_bcw_callback_resets_the_object_even_if_the_object_catches_it(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.BLOCK.get_by_name("a")
        with pytest.raises(ValueError, match=r"^bcw boom$") as info:
            await stub.boom_caught()
        assert info.value.remote is True  # type: ignore[attr-defined]
        assert info.value.durable_object_reset is True  # type: ignore[attr-defined]
        assert await stub.state() == (2, "set in __init__")


async def test_bcw_that_never_finishes_resets_the_object_after_30_seconds(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.BLOCK.get_by_name("a")
        pending = asyncio.ensure_future(stub.stuck())
        await settle()
        await clock.advance(29)
        await settle()
        assert not pending.done()
        await clock.advance(1.5)
        with pytest.raises(errors.ObjectReset) as info:
            await asyncio.wait_for(pending, timeout=2)
        assert info.value.durable_object_reset is True
        assert await stub.state() == (2, "set in __init__")
        EVENTS["stuck"].set()  # let the abandoned callback end
