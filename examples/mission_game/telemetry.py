"""The game's Prometheus series (finding 12), counted in the process that runs the objects.

Series (``mission_`` prefix): ``mission_task_cycle_seconds`` (histogram: time to run one mining
cycle, the review's "task execution time"), ``mission_task_lateness_seconds`` (how late a cycle's
alarm ran), ``mission_task_failures`` (miners that failed), ``mission_broadcasts`` and
``mission_broadcast_bytes`` (frames sent to rooms and their bytes times recipients: their rate is
broadcasts/s and bytes/s), ``mission_shard_running_miners`` (load per scheduler shard).

Guarantees: counting is a few integer additions on the object's event loop, no locks, no metric
objects created on the hot path (the same rule as ``durable/metrics.py``); ``GameCollector``
reads the counters only when Prometheus scrapes.

Does not guarantee: totals across processes. Each process (the in-process server, or each Ray host
slot) counts what its own objects did; sum the series over instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from durable.metrics import Histogram


class GameStats:
    def __init__(self) -> None:
        self.cycle_seconds = Histogram()
        self.lateness_seconds = Histogram()
        self.failures = 0
        self.broadcasts = 0
        self.broadcast_bytes = 0
        self.shard_load: dict[str, int] = {}

    def cycle(self, seconds: float, late_ms: int) -> None:
        self.cycle_seconds.observe(seconds)
        self.lateness_seconds.observe(max(0, late_ms) / 1000)

    def broadcast(self, frame: str, recipients: int) -> None:
        self.broadcasts += 1
        self.broadcast_bytes += len(frame.encode()) * recipients


GAME = GameStats()


class GameCollector(Collector):
    """Reads ``stats`` (the process's ``GAME`` by default) at scrape time."""

    def __init__(self, stats: GameStats = GAME) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        stats = self.stats
        for name, text, histogram in (
            ("mission_task_cycle_seconds", "time to run one mining cycle", stats.cycle_seconds),
            ("mission_task_lateness_seconds", "lateness of cycle alarms", stats.lateness_seconds),
        ):
            family = HistogramMetricFamily(name, text)
            family.add_metric([], histogram.buckets(), histogram.total)
            yield family
        yield CounterMetricFamily("mission_task_failures", "miners that failed", stats.failures)
        yield CounterMetricFamily("mission_broadcasts", "frames sent to rooms", stats.broadcasts)
        yield CounterMetricFamily(
            "mission_broadcast_bytes", "bytes sent to rooms times recipients", stats.broadcast_bytes
        )
        load = GaugeMetricFamily(
            "mission_shard_running_miners", "running miners per scheduler shard", labels=["shard"]
        )
        for shard, running in sorted(stats.shard_load.items()):
            load.add_metric([shard], running)
        yield load
