"""WAL checkpoints of a host's partitions, on a thread of their own.

A partition database commits into its write-ahead log; a checkpoint copies the log back into the
database file and fsyncs it. SQLite's automatic checkpoint runs inside the commit that crosses
1,000 pages, on the event loop's thread: a 10–90 ms stall every few hundred small commits under
load (``benchmarks/alarms.py`` measured it). Here the partitions turn it off and one daemon thread
per host checkpoints them instead, each through a connection of its own (Python's sqlite3 releases
the GIL while SQLite copies and fsyncs, so the loop keeps running).

Guarantees:
- Durability is unchanged: a commit is durable (``synchronous=NORMAL``: against ``kill -9``) when
  it is in the log; a checkpoint only moves it, and a crash mid-checkpoint is recovered by SQLite.
- Every partition committed to since the last pass is checkpointed within ``interval`` seconds,
  with ``PASSIVE`` checkpoints, which never block the loop's reads or commits.
- The log stays bounded: a passive checkpoint cannot finish while commits keep landing, and SQLite
  rewinds the log only once one has; so a pass repeats while it copies new frames (up to
  ``CATCH_UP`` times), and a partition whose log still passes ``max_wal_frames`` is flagged for
  ``Partition`` to restart it on its own thread at its next commit (a short stall, counted).
- ``unwatch`` (partition close) waits for a checkpoint of that partition in progress, then closes
  the thread's connection, so the partition's own close can checkpoint and delete the log.

Does not guarantee: a checkpoint at a particular moment; after a crash the log is replayed by the
next open (SQLite's recovery), not by this thread.

On failure: an error of one checkpoint is logged and counted; the partition is tried again at the
next pass, and its log keeps every commit meanwhile. Settings out of range (``interval`` not > 0,
``max_wal_frames`` < 1) raise ``InvalidArgument``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from durable.errors import InvalidArgument

if TYPE_CHECKING:
    from durable.partition import Partition

log = logging.getLogger("durable.checkpoint")

CATCH_UP = 4  # passes over a partition while its log keeps growing under the checkpoint
MAX_WAL_FRAMES = 16_384  # 64 MiB of 4 KiB pages: past this, the partition's owner rewinds the log


@dataclass(frozen=True, slots=True)
class CheckpointStatistics:
    checkpoints: int
    max_log_frames: int  # the longest log a pass found (4 KiB each): stays bounded
    failures: int
    flagged: int  # logs past ``max_wal_frames`` handed back to their partitions
    max_ms: float  # the longest checkpoint (on this thread: the loop did not wait for it)


class Checkpointer:
    """One thread that checkpoints the partitions committed to since its last pass."""

    def __init__(self, interval: float = 0.2, max_wal_frames: int = MAX_WAL_FRAMES) -> None:
        if not interval > 0 or max_wal_frames < 1:
            raise InvalidArgument(
                "Checkpointer needs interval > 0 seconds and max_wal_frames >= 1, got "
                f"{interval!r} and {max_wal_frames!r}"
            )
        self.interval = interval
        self.max_wal_frames = max_wal_frames
        self._watched: dict[Partition, _Log] = {}
        self._dirty: set[Partition] = set()
        self._dirty_lock = threading.Lock()  # the loop adds while the thread takes the set
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checkpoints = self._max_frames = self._failures = self._flagged = 0
        self._max_ms = 0.0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="durable-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for partition in list(self._watched):
            self.unwatch(partition)

    def watch(self, partition: Partition) -> None:
        self._watched[partition] = _Log(partition.path)

    def unwatch(self, partition: Partition) -> None:
        """Stop checkpointing ``partition``; returns once no checkpoint of it is running."""
        with self._dirty_lock:
            self._dirty.discard(partition)
        wal = self._watched.pop(partition, None)
        if wal is not None:
            wal.close()

    def committed(self, partition: Partition) -> None:
        """The loop committed to ``partition``: checkpoint it at the next pass (waits at most
        for the thread to swap the set)."""
        with self._dirty_lock:
            self._dirty.add(partition)

    def statistics(self) -> CheckpointStatistics:
        return CheckpointStatistics(
            self._checkpoints, self._max_frames, self._failures, self._flagged, self._max_ms
        )

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_pass()

    def run_pass(self) -> None:
        """Checkpoint every partition committed to since the last pass (the thread's work; tests
        call it directly)."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for partition in dirty:
            wal = self._watched.get(partition)
            if wal is not None:
                self._checkpoint(partition, wal)

    def _checkpoint(self, partition: Partition, wal: _Log) -> None:
        started = time.perf_counter()
        try:
            frames = wal.checkpoint()
        except sqlite3.Error:
            self._failures += 1
            self.committed(partition)  # try again at the next pass
            log.warning("checkpoint of partition %d failed", partition.index, exc_info=True)
            return
        self._checkpoints += 1
        self._max_frames = max(self._max_frames, frames)
        self._max_ms = max(self._max_ms, (time.perf_counter() - started) * 1000.0)
        if frames > self.max_wal_frames:
            self._flagged += 1
            partition.rewind_wal = True


class _Log:
    """The checkpointing connection of one partition, opened on first use by the thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()  # held while checkpointing; close waits for it
        self.conn: sqlite3.Connection | None = None
        self.closed = False

    def checkpoint(self) -> int:
        """Passive checkpoints until the whole log is copied, at most ``CATCH_UP``; returns the
        log's length in frames."""
        with self.lock:
            if self.closed:
                return 0
            if self.conn is None:
                self.conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            frames = 0
            for _ in range(CATCH_UP):
                _, frames, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if copied >= frames:
                    break  # all copied: the next commit rewinds the log
            return int(frames)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.conn is not None:
                self.conn.close()
                self.conn = None
