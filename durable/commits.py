"""Group commit: every object's writes of one event-loop turn in one transaction per database.

Guarantees:
- ``mark_dirty(cache)`` on an object's first write of a turn schedules one ``flush`` with
  ``call_soon``; the flush commits every dirty object, one ``BEGIN IMMEDIATE … COMMIT`` per
  partition database (then each promoted object's own file), and only then finishes the turn's
  ``CommitRound``: replies wait on it (the output gate, ``gates.wait_durable``).
- Deferred commit: writes made while an object runs only alarm events (no caller waits on an
  alarm) may wait up to ``DEFERRED_COMMIT`` (50 ms) and then commit in batches, one partition per
  loop turn; the alarm's clearing is in the same commit, so a crash before it runs the alarm
  again (at-least-once). ``expedite(cache)`` commits them this turn: a reply, an outgoing call,
  a WebSocket send or another event's end calls it before anything can observe them. An alarm
  set sooner than that is never deferred.
- ``flush_one(cache)`` commits one object's buffered writes now, alone (promotion copies an
  object's rows and must see them), without committing anyone else's.

Does not guarantee: an order between the commits of different objects of one turn (they share a
transaction per database, or fail and are retried alone).

On failure: a partition isolates the failing object (``Partition.commit`` retries one by one);
only the objects whose writes failed are reported to ``failed(cache, error)`` (the host resets
them); their waiters get ``ObjectReset``, or ``StorageFull`` when the disk under the data
directory has less than ``FULL_FLOOR`` bytes free (logged once when the episode starts and once
when commits succeed again). Nothing a failed commit held is reported as durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durable.clock import Clock, Timer
from durable.errors import DurableError, ObjectReset, StorageFull
from durable.gates import CommitRound
from durable.logs import Episode

if TYPE_CHECKING:
    from durable.cache import ObjectCache
    from durable.partition import Partition

log = logging.getLogger("durable.host")
DEFERRED_COMMIT = 0.05  # seconds that writes only alarms could see may wait for a batch commit
FULL_FLOOR = 256 * 1024  # bytes free below which a failed commit is blamed on a full disk


class GroupCommit:
    """The commit rounds of one host's objects."""

    def __init__(
        self,
        clock: Clock,
        data_dir: Path,
        defers: Callable[[ObjectCache], bool],
        failed: Callable[[ObjectCache, DurableError], None],
        committed_alarm: Callable[[ObjectCache], None],
    ) -> None:
        self.clock = clock
        self.data_dir = data_dir
        self._defers = defers  # may these writes wait? (only alarm events running)
        self._failed = failed
        self._committed_alarm = committed_alarm
        self.round: CommitRound | None = None  # the round this turn's writes join
        self.commits = 0
        self._dirty: dict[ObjectCache, None] = {}
        self._deferred: dict[ObjectCache, None] = {}  # writes no one can observe yet
        self._deferred_timer: Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.disk_full = Episode(
            log,
            "commits fail: the disk holding %s is full; writes get StorageFull (507) until "
            "space is freed",
            "commits succeed again; %d commits failed while the disk was full",
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        """Commit everything, deferred writes too, and cancel the deferral timer."""
        self.flush()
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None

    def mark_dirty(self, cache: ObjectCache) -> CommitRound | None:
        """Register ``cache``'s new writes; returns the round that will commit them, or None if
        they are deferred (the cache keeps its previous round)."""
        if cache not in self._dirty and self._defers(cache):
            if cache not in self._deferred:
                self._deferred[cache] = None
                if self._deferred_timer is None:
                    at = self.clock.now() + DEFERRED_COMMIT
                    self._deferred_timer = self.clock.call_at(at, self._commit_deferred)
            return None
        return self._now(cache)

    def _now(self, cache: ObjectCache) -> CommitRound:
        self._deferred.pop(cache, None)
        round_ = self.round
        if round_ is None:
            assert self._loop is not None
            round_ = self.round = CommitRound()
            self._loop.call_soon(self._flush_turn)
        self._dirty[cache] = None
        return round_

    def expedite(self, cache: ObjectCache) -> None:
        """Something may observe ``cache``'s deferred writes: commit them this turn."""
        if cache in self._deferred:
            cache.round = self._now(cache)

    def forget(self, cache: ObjectCache) -> None:
        """The object was reset: its buffered writes are discarded, never committed."""
        self._dirty.pop(cache, None)
        self._deferred.pop(cache, None)

    def _commit_deferred(self, partitions: list[Partition] | None = None) -> None:
        """One partition's deferred writes per loop turn (a pass over those deferred when it
        began), so a batch never holds the loop for all partitions at once."""
        self._deferred_timer = None
        if partitions is None:
            partitions = list({cache.partition: None for cache in self._deferred})
        if partitions:
            partition = partitions.pop()
            for cache in [c for c in self._deferred if c.partition is partition]:
                self.expedite(cache)
        if partitions:
            step = partial(self._commit_deferred, partitions)
            self._deferred_timer = self.clock.call_at(self.clock.now(), step)
        elif self._deferred:  # deferred during the pass: the next pass
            at = self.clock.now() + DEFERRED_COMMIT
            self._deferred_timer = self.clock.call_at(at, self._commit_deferred)

    def _flush_turn(self) -> None:
        self.flush(deferred=False)

    def flush(self, deferred: bool = True) -> None:
        """Commit every dirty object now (with ``deferred``, the deferred ones too): one
        transaction per partition database."""
        if deferred:
            for cache in list(self._deferred):
                self.expedite(cache)
        round_, self.round = self.round, None
        dirty, self._dirty = self._dirty, {}
        if round_ is None:
            return
        failed = self._commit(dirty)
        self.commits += 1
        round_.finish(failed)

    def flush_one(self, cache: ObjectCache) -> None:
        """Commit ``cache``'s buffered writes now, in a transaction of their own. Its waiters
        still wake with the turn's round; a failure resets the object at once."""
        if cache not in self._dirty and cache not in self._deferred:
            return
        self.forget(cache)
        for failed in self._commit({cache: None}):
            if failed.round is not None:
                failed.round.failed.add(failed)  # its waiters learn it when the round ends

    def _commit(self, dirty: dict[ObjectCache, None]) -> set[ObjectCache]:
        failed: set[ObjectCache] = set()
        batches: dict[Partition, list[tuple[ObjectCache, Any]]] = {}
        for cache in dirty:
            try:
                writes = cache.prepare_commit()
                if writes is not None:
                    batches.setdefault(cache.partition, []).append((cache, writes))
            except Exception:
                log.exception("preparing the commit of %s failed", cache.oid)
                failed.add(cache)
        for partition, items in batches.items():
            bad = partition.commit([writes for _, writes in items])
            failed.update(items[i][0] for i in bad)
            if not bad:
                self.disk_full.ended()
        for cache in dirty:
            if cache.commits_file and cache not in failed:
                try:
                    cache.commit_file()
                except Exception:
                    log.exception("commit of %s's object file failed", cache.oid)
                    failed.add(cache)
        for cache in dirty:
            if cache in failed:
                self._failed(cache, self._failure(cache.partition.root))
            else:
                alarm_changed = cache.alarm_dirty
                cache.finish_commit()
                if alarm_changed:
                    self._committed_alarm(cache)
        return failed

    def _failure(self, where: Path) -> DurableError:
        """What a failed commit tells its object's callers: ``StorageFull`` if the disk is."""
        try:
            stat = os.statvfs(where)
        except OSError:
            return ObjectReset("a storage write failed to commit")
        if stat.f_bavail * stat.f_frsize >= FULL_FLOOR:
            return ObjectReset("a storage write failed to commit")
        self.disk_full.struck(self.data_dir)
        return StorageFull(str(self.data_dir))
