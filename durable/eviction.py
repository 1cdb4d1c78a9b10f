"""Idle eviction: when each of a host's activations has gone long enough without an event.

Guarantees:
- An activation whose namespace's idle timeout passed since its last activity is handed to
  ``evict`` never more than 1 % of that timeout early (a sweep takes the objects due within
  ``EVICTION_BATCH`` of it along: at thousands of evictions a second, one timer per batch).
- One timer for the whole host, at the earliest due time over the groups (one group per distinct
  idle timeout, each in last-activity order, so each group's front is due first).
- Never an activation that is busy (an event, ``wait_until`` or ``block_concurrency_while``
  running, or uncommitted writes): it is looked at again ``BUSY_RECHECK`` later, as uncommitted
  writes and blocking work end without an event that would move it to the back.

Does not guarantee: eviction at the exact due time (the loop may be busy).

On failure: an activation reset since it was last touched is dropped from its group when the
sweep reaches it, never evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from durable.activation import ActivationState
from durable.clock import Clock, Timer

if TYPE_CHECKING:
    from durable.activation import Activation
    from durable.ids import ObjectId

BUSY_RECHECK = 1.0  # seconds before the sweep looks again at a due object that was busy
EVICTION_BATCH = 0.02  # seconds: a sweep evicts the objects due this soon after it, too


class IdleEviction:
    """The idle groups of one host and the sweep over them."""

    def __init__(self, clock: Clock, evict: Callable[[Activation], None]) -> None:
        self.clock = clock
        self._evict = evict
        # Per distinct idle timeout, activations in order of last activity (front = idle longest).
        self.groups: dict[float, OrderedDict[ObjectId, Activation]] = {}
        self._timer: Timer | None = None
        self._at: float | None = None

    def group(self, timeout: float) -> OrderedDict[ObjectId, Activation]:
        """The last-activity order of the activations idle for ``timeout``."""
        group = self.groups.get(timeout)
        if group is None:
            group = self.groups[timeout] = OrderedDict()
        return group

    def touched(self, activation: Activation) -> None:
        """``activation`` was active just now: it moves to the back of its group."""
        group = activation.idle_group
        group[activation.oid] = activation
        group.move_to_end(activation.oid)
        due = activation.last_active + activation.idle_timeout
        if self._at is None or due < self._at:
            self._arm(due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._at = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = when
        self._timer = self.clock.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._timer = self._at = None
        now = self.clock.now()
        upcoming = [
            self._sweep_group(group, timeout, now) for timeout, group in self.groups.items()
        ]
        due = [when for when in upcoming if when is not None]
        if due:
            self._arm(min(due))

    def _sweep_group(
        self, group: OrderedDict[ObjectId, Activation], timeout: float, now: float
    ) -> float | None:
        """Evict the group's objects idle for ``timeout``; return when the group is due next."""
        expired = []
        upcoming = None
        horizon = now + min(EVICTION_BATCH, timeout / 100)  # never more than 1 % early
        for activation in group.values():
            if activation.last_active + timeout > horizon:
                upcoming = activation.last_active + timeout
                break
            expired.append(activation)
        for activation in expired:
            if activation.state is not ActivationState.ACTIVE:
                del group[activation.oid]  # reset since: nothing to evict
            elif activation.idle and not activation.cache.busy:
                self._evict(activation)
            else:
                recheck = now + BUSY_RECHECK
                upcoming = recheck if upcoming is None else min(upcoming, recheck)
        return upcoming
