"""Checkpointer: partitions' logs are copied off the loop, rewound, bounded, and closed cleanly."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable.checkpoint import Checkpointer, _Log
from durable.errors import InvalidArgument
from durable.partition import ObjectWrites, Partition, StorageKind


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[Partition]:
    p = Partition(tmp_path, 0, checkpointer=Checkpointer(max_wal_frames=10_000))
    p.open()
    try:
        yield p
    finally:
        p.close()


def write(p: Partition, i: int) -> None:
    key = i.to_bytes(4, "big")
    assert (
        p.commit([ObjectWrites("NS", key * 8, None, StorageKind.ROWS, {b"k": b"v" * 100})]) == set()
    )


def log_frames(p: Partition) -> tuple[int, int]:
    """(frames in the log, frames of it copied), as a passive checkpoint on the loop reports."""
    _, frames, copied = p.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return frames, copied


def test_commits_never_checkpoint_on_the_loop(partition: Partition) -> None:
    assert partition.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(1200):
        write(partition, i)
    wal = Path(f"{partition.path}-wal")
    assert wal.stat().st_size > 1000 * 4096  # past SQLite's automatic 1,000 pages


def test_a_pass_copies_the_log_and_the_next_commit_rewinds_it(partition: Partition) -> None:
    checkpointer = partition.checkpointer
    assert checkpointer is not None
    for i in range(1200):
        write(partition, i)
    checkpointer.run_pass()
    stats = checkpointer.statistics()
    assert stats.checkpoints == 1 and stats.failures == 0
    assert stats.max_log_frames > 1000
    write(partition, 2000)
    assert log_frames(partition)[0] < 10  # rewound: the log starts again from its head
    checkpointer.run_pass()
    assert checkpointer.statistics().checkpoints == 2
    checkpointer.run_pass()  # nothing committed since: nothing to do
    assert checkpointer.statistics().checkpoints == 2


def test_a_log_past_the_bound_is_rewound_by_its_partition(tmp_path: Path) -> None:
    checkpointer = Checkpointer(max_wal_frames=50)
    p = Partition(tmp_path, 0, checkpointer=checkpointer)
    p.open()
    try:
        for i in range(100):
            write(p, i)
        checkpointer.run_pass()
        assert checkpointer.statistics().flagged == 1
        assert p.rewind_wal
        write(p, 1000)  # the partition copies and rewinds on its own thread
        assert not p.rewind_wal
        frames, copied = log_frames(p)
        assert frames == copied  # all of it copied back: the next commit starts the log over
    finally:
        p.close()


def test_close_empties_the_log_and_ends_the_threads_connection(partition: Partition) -> None:
    checkpointer = partition.checkpointer
    assert checkpointer is not None
    write(partition, 1)
    checkpointer.run_pass()
    partition.close()
    assert not Path(f"{partition.path}-wal").exists()  # the last connection's close removes it
    checkpointer.run_pass()  # an unwatched partition: nothing happens
    assert checkpointer.statistics().failures == 0
    reopened = sqlite3.connect(partition.path)
    assert reopened.execute("SELECT count(*) FROM kv").fetchone() == (1,)
    reopened.close()


def test_a_failed_checkpoint_is_counted_and_tried_again(
    partition: Partition, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointer = partition.checkpointer
    assert checkpointer is not None
    write(partition, 1)
    with monkeypatch.context() as patch:
        patch.setattr(_Log, "checkpoint", _disk_error)
        checkpointer.run_pass()
    assert checkpointer.statistics().failures == 1
    checkpointer.run_pass()  # still marked: tried again at the next pass
    assert checkpointer.statistics().checkpoints == 1


def _disk_error(self: _Log) -> int:
    raise sqlite3.OperationalError("disk I/O error")


def test_the_thread_checkpoints_on_its_own(tmp_path: Path) -> None:
    checkpointer = Checkpointer(interval=0.01)
    p = Partition(tmp_path, 0, checkpointer=checkpointer)
    p.open()
    checkpointer.start()
    try:
        write(p, 1)
        for _ in range(500):  # bounded: at most 5 s
            if checkpointer.statistics().checkpoints:
                break
            checkpointer._stop.wait(0.01)
        assert checkpointer.statistics().checkpoints >= 1
    finally:
        checkpointer.stop()
        p.close()
    assert checkpointer._thread is None


@pytest.mark.parametrize(("interval", "frames"), [(0, 10), (-1.0, 10), (float("nan"), 10), (1, 0)])
def test_settings_out_of_range_are_refused(interval: float, frames: int) -> None:
    with pytest.raises(InvalidArgument, match="interval > 0 seconds and max_wal_frames >= 1"):
        Checkpointer(interval, frames)
