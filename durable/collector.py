"""When the cyclic garbage collector runs in a serving process (``durable serve``, Ray slots).

CPython collects its oldest generation whenever that generation grew by a quarter, and such a
collection walks every tracked object in it. A host with 100,000 resident objects and their alarms
tracks over a million objects: each full collection stops the event loop for 0.3-0.6 s, and they
come again and again while objects are activated and evicted (``benchmarks/alarms.py`` measured
alarms firing 0.6 s late behind them). A serving process runs a ``Collector`` instead, as
latency-bound Python servers do (``gc.freeze`` after start-up, full collections on a schedule).

Guarantees:
- ``start()`` freezes what is alive (modules, classes, the re-armed alarm heap: never walked again)
  and turns off automatic collection of the oldest generation. The two young generations still
  collect on their own; they only walk objects made since, so their pauses stay short. The
  middle one every ``MIDDLE`` young collections (CPython: 10): evictions free thousands of old
  objects a second, which delays young collections (each free counts against the threshold) and
  fills the middle generation; at 10 its pauses reached 10-20 ms, at 4 they stay under 7 ms.
- Evicted activations do not need the cyclic collector: eviction breaks the only cycle in them
  (object and its ``ctx``), so reference counting frees them at once (``Activation.evicted``).
  What waits for a full collection is cycles made by user code, and reset activations.
- A full collection runs every ``interval`` seconds (default 10 minutes), on the injected clock;
  each is logged with its pause and counted in ``statistics()``.
- ``stop()`` puts back the thresholds it found and unfreezes nothing (frozen objects stay frozen).

Does not guarantee: no pause at all: a scheduled full collection stops the loop for as long as it
walks the oldest generation; ``interval`` trades that pause against how long cyclic garbage
made by user code is kept.

On failure: ``gc`` calls do not raise; an ``interval`` that is not > 0 raises ``InvalidArgument``.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

from durable.clock import Clock, SystemClock, Timer
from durable.errors import InvalidArgument

log = logging.getLogger("durable.collector")

FULL_INTERVAL = 600.0
YOUNG = 700  # CPython's default
MIDDLE = 4
NEVER = 2**31 - 1  # an oldest-generation threshold no count reaches (a C int)


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    full_collections: int
    collected: int  # unreachable objects found by the full collections
    max_pause_ms: float
    frozen: int  # objects frozen at start


class Collector:
    """Young generations automatically, the oldest one every ``interval`` seconds."""

    def __init__(self, clock: Clock | None = None, interval: float = FULL_INTERVAL) -> None:
        if not interval > 0:
            raise InvalidArgument(f"Collector interval must be > 0 seconds, got {interval!r}")
        self.clock = clock or SystemClock()
        self.interval = interval
        self._saved: tuple[int, int, int] | None = None
        self._timer: Timer | None = None
        self._full = self._collected = self._frozen = 0
        self._max_pause = 0.0

    def start(self) -> None:
        """Freeze what is alive now and take over the oldest generation. Call on the loop."""
        if self._saved is not None:
            return
        gc.freeze()
        self._frozen = gc.get_freeze_count()
        self._saved = gc.get_threshold()
        gc.set_threshold(YOUNG, MIDDLE, NEVER)
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def collect(self) -> int:
        """A full collection now; returns the unreachable objects it found."""
        started = time.perf_counter()
        found = gc.collect()
        pause = (time.perf_counter() - started) * 1000.0
        self._full += 1
        self._collected += found
        self._max_pause = max(self._max_pause, pause)
        log.info("full garbage collection: %d unreachable, %.1f ms", found, pause)
        return found

    def _schedule(self) -> None:
        self._timer = self.clock.call_at(self.clock.now() + self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self.collect()
        self._schedule()

    def statistics(self) -> CollectorStatistics:
        return CollectorStatistics(self._full, self._collected, self._max_pause, self._frozen)
