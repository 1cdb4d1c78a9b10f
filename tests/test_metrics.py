"""Metrics of a host: alarm retries and drops, and WAL checkpoints, as /metrics exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import durable
from durable.metrics import DurableCollector, RequestStats
from durable.testing import VirtualClock
from tests.conftest import host_of


class Failing(durable.DurableObject):
    async def arm(self, at_ms: int) -> None:
        await self.ctx.storage.set_alarm(at_ms)

    async def alarm(self, info: durable.AlarmInfo) -> None:
        raise RuntimeError("always fails")


def samples(collector: DurableCollector) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


async def test_a_dropped_alarm_is_counted_with_its_retries(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    worker = durable.Worker(objects={"F": Failing})
    async with durable.connect(worker, data_dir=tmp_path, clock=clock) as env:
        host = host_of(env)
        metrics = DurableCollector(RequestStats(), {}, None, host)
        await env.F.get_by_name("f").arm(1_000_010)
        for _ in range(300):  # 7 attempts over ~160 s of virtual time
            await clock.advance(1.0)
        found: dict[str, Any] = samples(metrics)
    assert found["durable_alarms_fired_total"] == 7
    assert found["durable_alarms_retried_total"] == 6
    assert found["durable_alarms_dropped_total"] == 1
    assert found["durable_alarms_pending"] == 0


async def test_checkpoints_are_counted(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(
        durable.Worker(objects={"F": Failing}), data_dir=tmp_path, clock=clock
    ) as env:
        host = host_of(env)
        metrics = DurableCollector(RequestStats(), {}, None, host)
        await env.F.get_by_name("f").arm(2_000_000)
        host.checkpointer.run_pass()
        found = samples(metrics)
    assert found["durable_checkpoints_total"] == 1
    assert found["durable_checkpoint_failures_total"] == 0
    assert found["durable_wal_rewinds_total"] == 0
    assert found["durable_wal_max_frames"] >= 1
