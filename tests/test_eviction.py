"""Host eviction: per-namespace idle timeouts and the LRU memory budget (``max_active_objects``).

The conformance suite (``tests/conformance/test_eviction.py``) checks the reference's 10 s rows;
these check the configuration beyond them, on the virtual clock.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import durable
from durable.testing import VirtualClock
from tests.conftest import Runner, host_of

BUILT: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    BUILT.clear()


class Cell(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        BUILT.append(f"{ctx.id.namespace}:{ctx.id.name}")
        self.gate = asyncio.Event()

    async def ping(self) -> str:
        return str(self.ctx.id.name)

    async def put(self, value: Any) -> None:
        await self.ctx.storage.put("v", value)

    async def get(self) -> Any:
        return await self.ctx.storage.get("v")

    async def hold(self) -> None:
        await self.gate.wait()

    async def release(self) -> None:
        self.gate.set()

    async def later(self) -> None:
        self.ctx.wait_until(self.gate.wait())

    async def explode(self) -> None:
        self.ctx.abort("bye")


def active(env: Any) -> list[str]:
    """Live objects as ``NS:name``, least recently used first."""
    return [f"{oid.namespace}:{oid.name}" for oid in host_of(env)._active]


# -- per-namespace idle timeouts -------------------------------------------------------------------
def timed_worker() -> durable.Worker:
    return durable.Worker(
        objects={"FAST": Cell, "SLOW": Cell, "PLAIN": Cell},
        idle_timeout=10.0,
        idle_timeouts={"FAST": 2.0, "SLOW": 60.0},
    )


async def test_each_namespace_is_evicted_after_its_own_idle_timeout(
    run: Runner, clock: VirtualClock
) -> None:
    async with run(timed_worker()) as env:
        for ns in ("SLOW", "PLAIN", "FAST"):
            await getattr(env, ns).get_by_name("a").ping()
        await clock.advance(1.9)
        assert active(env) == ["SLOW:a", "PLAIN:a", "FAST:a"]
        await clock.advance(0.1)
        assert active(env) == ["SLOW:a", "PLAIN:a"]
        await clock.advance(8)
        assert active(env) == ["SLOW:a"]
        await clock.advance(49.9)
        assert active(env) == ["SLOW:a"]
        await clock.advance(0.1)
        assert active(env) == []


async def test_short_timeout_object_arriving_later_is_not_held_by_a_long_timer(
    run: Runner, clock: VirtualClock
) -> None:
    async with run(timed_worker()) as env:
        await env.SLOW.get_by_name("s").ping()  # the sweep timer is now 60 s out
        await clock.advance(1)
        await env.FAST.get_by_name("f").ping()
        await clock.advance(2)
        assert active(env) == ["SLOW:s"]
        assert await env.FAST.get_by_name("f").ping() == "f"
        assert BUILT == ["SLOW:s", "FAST:f", "FAST:f"]


async def test_objects_of_one_namespace_leave_in_order_of_last_activity(
    run: Runner, clock: VirtualClock
) -> None:
    async with run(timed_worker()) as env:
        a, b = env.FAST.get_by_name("a"), env.FAST.get_by_name("b")
        await a.ping()
        await clock.advance(1)
        await b.ping()
        await clock.advance(0.5)
        await a.ping()  # a is now the more recent
        await clock.advance(1.5)
        assert active(env) == ["FAST:a"]
        await clock.advance(0.5)
        assert active(env) == []


async def test_a_reset_object_leaves_no_entry_behind(run: Runner, clock: VirtualClock) -> None:
    async with run(timed_worker()) as env:
        with pytest.raises(durable.ObjectReset, match="bye"):
            await env.FAST.get_by_name("x").explode()
        await clock.advance(5)
        host = host_of(env)
        assert all(not group for group in host.idle.groups.values())
        assert host.statistics().evictions == 0  # it was reset, not evicted


# -- memory budget: LRU ----------------------------------------------------------------------------
def capped(limit: int) -> durable.Worker:
    return durable.Worker(objects={"CELL": Cell}, max_active_objects=limit)


async def test_past_the_budget_the_least_recently_used_object_goes(run: Runner) -> None:
    async with run(capped(3)) as env:
        for name in "abc":
            await env.CELL.get_by_name(name).ping()
        await env.CELL.get_by_name("a").ping()  # order of use: b, c, a
        await env.CELL.get_by_name("d").ping()
        assert active(env) == ["CELL:c", "CELL:a", "CELL:d"]
        await env.CELL.get_by_name("e").ping()
        assert active(env) == ["CELL:a", "CELL:d", "CELL:e"]
        assert host_of(env).statistics().evictions == 2
        await env.CELL.get_by_name("b").ping()  # evicted objects come back with a new instance
        assert BUILT == ["CELL:a", "CELL:b", "CELL:c", "CELL:d", "CELL:e", "CELL:b"]


async def test_budget_eviction_keeps_storage(run: Runner) -> None:
    async with run(capped(1)) as env:
        await env.CELL.get_by_name("a").put({"kept": [1, 2]})
        await env.CELL.get_by_name("b").put("other")
        assert active(env) == ["CELL:b"]
        assert await env.CELL.get_by_name("a").get() == {"kept": [1, 2]}
        assert await env.CELL.get_by_name("b").get() == "other"


async def test_budget_never_evicts_busy_objects(run: Runner) -> None:
    async with run(capped(2)) as env:
        holding = env.CELL.get_by_name("holding")
        held = asyncio.ensure_future(holding.hold())
        await asyncio.sleep(0)
        await env.CELL.get_by_name("background").later()
        await env.CELL.get_by_name("idle").ping()
        assert active(env) == ["CELL:holding", "CELL:background", "CELL:idle"]
        await env.CELL.get_by_name("new").ping()  # over budget: only "idle" may go
        assert active(env) == ["CELL:holding", "CELL:background", "CELL:new"]
        await env.CELL.get_by_name("background").release()
        await holding.release()
        await held
        assert len(active(env)) == 2  # back within budget once they are idle
        assert BUILT.count("CELL:holding") == BUILT.count("CELL:background") == 1


async def test_the_object_being_called_is_never_the_one_evicted(run: Runner) -> None:
    async with run(capped(1)) as env:
        holding = env.CELL.get_by_name("holding")
        held = asyncio.ensure_future(holding.hold())
        await asyncio.sleep(0)
        assert await env.CELL.get_by_name("new").ping() == "new"  # 2 > 1, yet served
        await holding.release()
        await held
        assert len(active(env)) == 1
        assert BUILT == ["CELL:holding", "CELL:new"]


async def test_no_budget_means_no_cap(run: Runner) -> None:
    async with run(capped(1)) as env:
        host = host_of(env)
        host.max_active_objects = None
        for i in range(20):
            await env.CELL.get_by_name(f"o{i}").ping()
        assert host.statistics().active_objects == 20


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeouts": {"NOPE": 1.0}}, "idle_timeouts names unknown bindings: ['NOPE']."),
        ({"idle_timeouts": {"CELL": 0}}, "idle_timeouts['CELL'] must be a positive number."),
        ({"max_active_objects": 0}, "max_active_objects must be a positive int or None."),
        ({"max_active_objects": 2.5}, "max_active_objects must be a positive int or None."),
        ({"max_active_objects": True}, "max_active_objects must be a positive int or None."),
    ],
)  # fmt: skip
def test_bad_eviction_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
        durable.Worker(objects={"CELL": Cell}, **kwargs)


def test_defaults_are_10_seconds_and_100_000_objects() -> None:
    worker = durable.Worker(objects={"A": Cell, "B": Cell}, idle_timeouts={"B": 3})
    assert (worker.idle_timeout_for("A"), worker.idle_timeout_for("B")) == (10.0, 3.0)
    assert worker.max_active_objects == 100_000
