"""Time, injected: every read of "now" and every timer in the runtime goes through a ``Clock``.

Guarantees:
- ``now()`` is wall-clock epoch seconds (alarms are wall-clock times, as in Cloudflare).
- ``call_at(when, fn)`` runs ``fn`` once, at or after ``when``, on the running event loop; if ``fn``
  returns an awaitable it is run as a task. ``Timer.cancel()`` before it runs means it never runs.

Does not guarantee:
- ``SystemClock`` follows wall-clock jumps only for timers scheduled after the jump.

``durable.testing.VirtualClock`` implements the same protocol without real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

TimerCallback = Callable[[], Awaitable[object] | None]


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_at(self, when: float, fn: TimerCallback) -> Timer: ...


class SystemClock:
    """The real clock: ``time.time()`` and ``loop.call_later``."""

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, fn: TimerCallback) -> Timer:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), _run, fn)


_background: set[asyncio.Future[Any]] = set()


def _run(fn: TimerCallback) -> None:
    result = fn()
    if result is not None:
        task = asyncio.ensure_future(result)
        _background.add(task)  # keep a reference until done, or the task may be collected
        task.add_done_callback(_background.discard)
