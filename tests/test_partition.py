"""Partition: flock fencing, recovery of half-done promotions, isolated commit failures."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable
from durable.partition import ObjectWrites, Partition, StorageKind


def test_second_owner_is_refused(tmp_path: Path) -> None:
    first = Partition(tmp_path, 3)
    first.open()
    try:
        with pytest.raises(durable.DataDirInUse, match="address="):
            Partition(tmp_path, 3).open()
    finally:
        first.close()
    again = Partition(tmp_path, 3)
    again.open()  # released on close
    again.close()


def test_recovery_deletes_files_the_objects_table_does_not_point_to(tmp_path: Path) -> None:
    p = Partition(tmp_path, 0)
    p.open()
    kept = p.object_path("NS", b"\x01" * 32)
    orphan = p.object_path("NS", b"\x02" * 32)
    tmp = kept.with_name(kept.name + ".tmp")
    p.mark("NS", b"\x01" * 32, StorageKind.FILE)
    for path in (kept, orphan, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    p.close()
    p.open()
    try:
        assert kept.exists() and not orphan.exists() and not tmp.exists()
    finally:
        p.close()


def test_one_bad_object_does_not_fail_the_batch(tmp_path: Path) -> None:
    p = Partition(tmp_path, 0)
    p.open()
    try:
        good = ObjectWrites("NS", b"g" * 32, None, StorageKind.ROWS, {b"k": b"v"}, record=True)
        unbindable: object = object()  # sqlite3 cannot bind it: this object's rows fail
        bad = ObjectWrites("NS", b"b" * 32, unbindable, StorageKind.ROWS, {b"k": b"v"}, record=True)  # type: ignore[arg-type]
        assert p.commit([good, bad]) == {1}
        assert p.table("NS", b"g" * 32).read(b"k") == b"v"
        assert p.record("NS", b"b" * 32) is None
    finally:
        p.close()
