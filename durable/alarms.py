"""The alarm scheduler of one host: a timer heap over every pending alarm of its partitions.

Guarantees:
- One alarm per object; ``schedule(oid, when)`` replaces the previous one (None removes it).
- Alarms fire in time order, each once it is due, through one clock timer for the earliest
  entry (a heap, not a timer per alarm: 100,000 pending alarms cost a heap entry each).
- At-least-once: if ``alarm()`` raises, it runs again after 2 s, 4 s, ... 64 s (×2 each time,
  plus up to 25 % jitter), 6 retries in all; then the alarm is dropped, logged and counted.
  ``info.scheduled_time`` stays the original time throughout.
- A restarted host re-arms every pending alarm from its partitions' objects rows without opening
  any object; alarms that came due while it was down fire at once.

Does not guarantee: a retry in progress survives a restart only as a fresh first attempt
(the stored alarm time is kept, the retry count is not).

On failure: an error in the scheduler's own bookkeeping is logged and the alarm retried.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum

from durable.clock import Clock, Timer
from durable.ids import ObjectId
from durable.partition import StorageKind

log = logging.getLogger("durable.alarms")

MAX_RETRIES = 6
FIRST_BACKOFF = 2.0
JITTER = 0.25


class AlarmOutcome(Enum):
    """What one invocation of ``alarm()`` came to."""

    DONE = "done"  # returned, or the object set a new alarm; -> nothing (or the new alarm)
    FAILED = "failed"  # raised; -> a retry, or dropped after MAX_RETRIES
    NO_RETRY = "no_retry"  # raised after ctx.abort(retry_alarm=False); -> dropped


@dataclass(frozen=True, slots=True)
class AlarmStatistics:
    pending: int
    fired: int
    retried: int
    dropped: int
    lateness_ms_max: float


Fire = Callable[[ObjectId, int, int, StorageKind | None], Awaitable[AlarmOutcome]]
Drop = Callable[[ObjectId], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    due: float  # epoch ms
    seq: int
    retry: int
    scheduled: int  # the time the object set: stays the same across retries
    # Where the object's data lives, as committed with this alarm: its objects row is then known
    # exactly (kind, scheduled), so firing it needs no lookup. None (a retry): look it up.
    kind: StorageKind | None


class AlarmScheduler:
    """Pending alarms of one host, in a heap keyed by due time (epoch ms)."""

    def __init__(
        self, clock: Clock, fire: Fire, drop: Drop, rng: random.Random | None = None
    ) -> None:
        self._clock = clock
        self._fire = fire
        self._drop = drop
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, ObjectId]] = []
        self._due: dict[ObjectId, _Entry] = {}
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._running: set[asyncio.Future[list[None]]] = set()
        self._fired = self._retried = self._dropped = 0
        self._late_max = 0.0

    def schedule(self, oid: ObjectId, when_ms: int | None, kind: StorageKind | None = None) -> None:
        """Set (or with None, remove) the object's alarm, as committed for an object of ``kind``."""
        if when_ms is None:
            self._due.pop(oid, None)
        else:
            self._push(oid, _Entry(float(when_ms), next(self._seq), 0, when_ms, kind))

    def retag(self, oid: ObjectId, kind: StorageKind) -> None:
        """The object's data moved (promotion): a pending alarm now fires an object of ``kind``."""
        entry = self._due.get(oid)
        if entry is not None:
            self._due[oid] = replace(entry, kind=kind)  # same seq: its heap item stays current

    def _push(self, oid: ObjectId, entry: _Entry) -> None:
        self._due[oid] = entry
        heapq.heappush(self._heap, (entry.due, entry.seq, oid))
        self._arm()

    def _arm(self) -> None:
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)  # stale: replaced or removed since it was pushed
        if not self._heap:
            return
        when = self._heap[0][0] / 1000.0
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_at(when, self._on_timer)

    def _current(self, item: tuple[float, int, ObjectId]) -> bool:
        entry = self._due.get(item[2])
        return entry is not None and entry.seq == item[1]

    def _on_timer(self) -> Awaitable[list[None]] | None:
        self._timer = self._timer_at = None
        # 1 µs of slack: ms -> s -> ms in floats may land a hair below the due time.
        now_ms = self._clock.now() * 1000.0 + 1e-3
        batch = []
        while self._heap and self._heap[0][0] <= now_ms:
            item = heapq.heappop(self._heap)
            if not self._current(item):
                continue
            entry = self._due.pop(item[2])
            self._late_max = max(self._late_max, now_ms - entry.due)
            batch.append(self._run(item[2], entry))
        self._arm()
        if not batch:
            return None
        fut = asyncio.gather(*batch)
        self._running.add(fut)
        fut.add_done_callback(self._running.discard)
        return fut

    async def _run(self, oid: ObjectId, entry: _Entry) -> None:
        self._fired += 1
        try:
            outcome = await self._fire(oid, entry.scheduled, entry.retry, entry.kind)
        except Exception:
            log.exception("alarm of %s: the runtime failed to deliver it", oid)
            outcome = AlarmOutcome.FAILED
        if outcome is AlarmOutcome.DONE or oid in self._due:
            return  # done, or the object set a new alarm meanwhile
        if outcome is AlarmOutcome.FAILED and entry.retry < MAX_RETRIES:
            self._retried += 1
            delay = FIRST_BACKOFF * 2**entry.retry * (1 + self._rng.uniform(0, JITTER))
            due = self._clock.now() * 1000.0 + delay * 1000.0
            # The handler may have moved the object's data: the retry looks its kind up.
            self._push(oid, _Entry(due, next(self._seq), entry.retry + 1, entry.scheduled, None))
            return
        self._dropped += 1
        log.warning("alarm of %s dropped after %d attempts", oid, entry.retry + 1)
        await self._drop(oid)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        running = list(self._running)
        for fut in running:
            fut.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def statistics(self) -> AlarmStatistics:
        return AlarmStatistics(
            len(self._due), self._fired, self._retried, self._dropped, self._late_max
        )
