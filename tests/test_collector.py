"""Collector: young generations only while serving, full collections on the clock, and evicted
activations freed by reference counting alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import durable
from durable.collector import MIDDLE, NEVER, YOUNG, Collector
from durable.testing import VirtualClock
from tests.conftest import Runner, host_of


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector(clock: VirtualClock) -> Iterator[Collector]:
    saved = gc.get_threshold()
    c = Collector(clock, interval=60.0)
    try:
        yield c
    finally:
        c.stop()
        gc.unfreeze()  # hand the test process back to CPython's schedule
        assert gc.get_threshold() == saved


def test_start_freezes_and_takes_over_the_oldest_generation(collector: Collector) -> None:
    collector.start()
    assert gc.get_threshold() == (YOUNG, MIDDLE, NEVER)
    assert collector.statistics().frozen == gc.get_freeze_count() > 0


async def test_old_cycles_wait_for_the_scheduled_full_collection(
    collector: Collector, clock: VirtualClock
) -> None:
    collector.start()
    holder = [Cycle()]
    gc.collect(1)  # survives the young generations: it is old now
    probe = weakref.ref(holder[0])
    holder.clear()  # garbage, but only a full collection can find it
    for _ in range(3):
        gc.collect(1)
    assert probe() is not None
    await clock.advance(60.0)
    assert probe() is None
    stats = collector.statistics()
    assert stats.full_collections == 1 and stats.collected >= 1
    await clock.advance(60.0)
    assert collector.statistics().full_collections == 2  # every interval


async def test_stop_cancels_the_schedule(collector: Collector, clock: VirtualClock) -> None:
    collector.start()
    collector.stop()
    await clock.advance(120.0)
    assert collector.statistics().full_collections == 0


class Cell(durable.DurableObject):
    async def touch(self) -> int:
        await self.ctx.storage.put("k", 1)
        return 1


async def test_evicted_activations_are_freed_without_the_cyclic_collector(run: Runner) -> None:
    gc.disable()
    try:
        async with run(durable.Worker(objects={"CELL": Cell})) as env:
            await env.CELL.get_by_name("a").touch()
            host = host_of(env)
            (activation,) = host._active.values()
            refs: list[weakref.ref[Any]] = [
                weakref.ref(x) for x in (activation.instance, activation.cache, activation)
            ]
            host.evict(activation)
            del activation
            assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_an_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(durable.errors.InvalidArgument, match="interval must be > 0"):
        Collector(interval=interval)
