"""Test kit: a virtual clock, a wait-until-idle helper and fault injection.

``VirtualClock`` guarantees: time moves only in ``advance()``; timers due within the advanced span
run in time order (ties in scheduling order), ``now()`` reads each timer's own time while it runs,
and every awaitable a timer returns (alarm handlers, evictions) is awaited before the next timer
runs. ``time.time()`` is not patched: objects read the injected clock through ``ctx.now()``.

Fault injection: ``faults.arm("promote.after_copy", action)`` makes the runtime call ``action``
when it reaches that named point; the crash tests use ``os._exit``/SIGKILL there, unit tests raise.
Points: ``commit.before`` (partition or file commit), ``promote.after_copy``,
``promote.after_flip``, ``demote.after_mark``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field

from durable.clock import TimerCallback
from durable.faults import faults, kill_self

__all__ = ["VirtualClock", "faults", "kill_self", "wait_all_tasks_blocked"]


@dataclass(order=True)
class _VirtualTimer:
    when: float
    seq: int
    fn: TimerCallback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that only moves when a test calls ``advance``."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._heap: list[_VirtualTimer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, fn: TimerCallback) -> _VirtualTimer:
        timer = _VirtualTimer(when, next(self._seq), fn)
        heapq.heappush(self._heap, timer)
        return timer

    async def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that comes due, in order, and awaiting it."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        target = self._now + seconds
        await wait_all_tasks_blocked()
        while self._heap and self._heap[0].when <= target:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            result = timer.fn()
            if result is not None:
                await result
            await wait_all_tasks_blocked()
        self._now = target

    def pending(self) -> int:
        return sum(not t.cancelled for t in self._heap)


async def wait_all_tasks_blocked(rounds: int = 3) -> None:
    """Yield until no task is ready to run for ``rounds`` consecutive loop iterations."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    quiet = 0
    for _ in range(10_000):
        await asyncio.sleep(0)
        # asyncio's loop exposes its ready queue; on other loops fall back to a fixed count.
        quiet = quiet + 1 if ready is None or not ready else 0
        if quiet >= rounds:
            return
