"""``durable backup`` and ``durable restore``: copies of a data dir, taken while it serves.

``backup(data_dir, dest)`` writes ``dest`` in the data dir's own layout (so a backup is itself a
data dir)::

    dest/manifest.json                       format, time, source, meta.json, sha256 of each file
    dest/meta.json                           the data dir's meta.json (partition count)
    dest/partitions/0007/partition.sqlite    every partition database
    dest/partitions/0007/objects/<ns>/<id>.sqlite   every promoted object file it points to

``restore(dest, data_dir)`` puts everything back; ``partition=7`` one partition;
``object=("STORE", "user-alice")`` one object's rows or file, leaving its neighbours alone.

Guarantees:
- Consistent per partition: each partition is copied with SQLite's online backup API in one step
  (one read transaction, so the copy is the partition as of one commit), then the object files
  that *that copy* marks as promoted, each in one step too. An object's data is in exactly one of
  the two (the ``objects`` table decides), so every object is copied as of one of its commits.
- Safe while a server is serving: the source is opened read-only (``mode=ro``), the partition
  ``LOCK`` is never taken, so commits go on; WAL readers do not block the writer.
- Checked: the manifest holds each copied file's sha256 and size; ``restore`` verifies the files
  it uses before it changes anything, and raises ``BackupCorrupt`` on a mismatch.
- ``restore`` refuses a data dir a running server holds (``DataDirInUse``: it takes the partition
  ``flock``s, as a server does) and replaces files atomically (``os.replace``) after removing the
  partition's stale ``-wal``/``-shm`` (an old log replayed onto a restored file would corrupt it).

Does not guarantee: partitions are copied one after another, so two objects in different
partitions may be copied as of different moments (as with any per-shard backup). WebSocket rows
come back too; the next ``durable dev``/``serve`` drops them as stale. Alarms come back as they
were stored (an alarm due meanwhile fires at start).

On failure: a failed ``backup`` leaves ``dest`` incomplete but without a manifest (``restore``
refuses it); a failed ``restore`` of a partition leaves that partition as it was (the new file
is renamed into place only once complete).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable.errors import BackupCorrupt, DataDirInUse, InvalidArgument
from durable.ids import ObjectId, id_from_name

MANIFEST = "manifest.json"
FORMAT = 1
Progress = Callable[[int, int, str], None]  # (done, total, what): called after each partition


@dataclass(frozen=True, slots=True)
class BackupSummary:
    dest: Path
    partitions: int
    object_files: int
    bytes: int
    seconds: float


def _partition_dir(root: Path, index: int) -> Path:
    return root / "partitions" / f"{index:04d}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_meta(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "meta.json"
    if not path.is_file():
        raise InvalidArgument(f"{data_dir} is not a durable data dir (no meta.json).")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


# -- backup ---------------------------------------------------------------------------------------
def _copy_database(source: Path, target: Path) -> dict[str, Any]:
    """Copy one SQLite database with the online backup API, as of one read transaction."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    with closing(src), closing(sqlite3.connect(target)) as dst:
        src.backup(dst, pages=-1)  # -1: every page in one step, one snapshot of the source
        dst.execute("PRAGMA journal_mode=DELETE")  # a backup is one self-contained file
    return {"path": str(target), "sha256": sha256_of(target), "bytes": target.stat().st_size}


def _promoted(database: Path) -> list[tuple[str, bytes]]:
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT ns, id FROM objects WHERE kind='file'").fetchall()
    return [(str(ns), bytes(oid)) for ns, oid in rows]


def copy_partition(data_dir: Path, dest: Path, index: int) -> dict[str, Any]:
    """Copy partition ``index`` of ``data_dir`` into ``dest`` (same layout) as described above;
    its manifest entry (absolute paths). ``durable.moves`` copies a partition it moves so."""
    source, target = _partition_dir(data_dir, index), _partition_dir(dest, index)
    entry = _copy_database(source / "partition.sqlite", target / "partition.sqlite")
    files = []
    for ns, oid in _promoted(target / "partition.sqlite"):
        relative = Path("objects") / ns / f"{oid.hex()}.sqlite"
        if (source / relative).is_file():
            files.append(
                {"ns": ns, "id": oid.hex(), **_copy_database(source / relative, target / relative)}
            )
    return {"index": index, **entry, "objects": files}


def backup(data_dir: Path, dest: Path, progress: Progress | None = None) -> BackupSummary:
    """Copy every partition and promoted object file of ``data_dir`` to ``dest`` (see module
    docstring); ``dest`` must not exist or be empty."""
    start = time.monotonic()
    data_dir, dest = Path(data_dir).resolve(), Path(dest).resolve()
    meta = _read_meta(data_dir)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidArgument(f"{dest} is not empty; back up into a new directory.")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_dir / "meta.json", dest / "meta.json")
    count = int(meta["partitions"])
    present = [
        i for i in range(count) if (_partition_dir(data_dir, i) / "partition.sqlite").is_file()
    ]
    partitions = []
    for done, index in enumerate(present, 1):
        partitions.append(copy_partition(data_dir, dest, index))
        if progress is not None:
            progress(done, len(present), f"partition {index}")
    for entry in partitions:  # paths relative to dest: a backup can be moved
        entry["path"] = str(Path(entry["path"]).relative_to(dest))
        for item in entry["objects"]:
            item["path"] = str(Path(item["path"]).relative_to(dest))
    manifest = {
        "format": FORMAT,
        "created": time.time(),
        "source": str(data_dir),
        "meta": meta,
        "partitions": partitions,
    }
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(dest / MANIFEST)  # written last: a backup with a manifest is complete
    files = sum(len(p["objects"]) for p in partitions)
    size = sum(p["bytes"] + sum(o["bytes"] for o in p["objects"]) for p in partitions)
    return BackupSummary(dest, len(partitions), files, size, time.monotonic() - start)


# -- restore --------------------------------------------------------------------------------------
def read_manifest(dest: Path) -> dict[str, Any]:
    path = Path(dest) / MANIFEST
    if not path.is_file():
        raise BackupCorrupt(Path(dest), "it has no manifest.json (incomplete or not a backup)")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupCorrupt(Path(dest), f"unknown backup format {manifest.get('format')!r}")
    return manifest


def _verify(dest: Path, entry: dict[str, Any]) -> None:
    path = dest / entry["path"]
    if not path.is_file() or sha256_of(path) != entry["sha256"]:
        raise BackupCorrupt(dest, f"{entry['path']} is missing or does not match its checksum")


@contextmanager
def _locked(data_dir: Path, indexes: list[int]) -> Iterator[None]:
    """Hold the partitions' ``flock``s (as a server does) or raise ``DataDirInUse``."""
    held: list[int] = []
    try:
        for index in indexes:
            root = _partition_dir(data_dir, index)
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataDirInUse(str(data_dir)) from None
        yield
    finally:
        for fd in held:
            os.close(fd)


def _place(source: Path, target: Path) -> None:
    """Copy ``source`` next to ``target`` and rename it into place, dropping target's log."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".restore")
    shutil.copyfile(source, tmp)
    for suffix in ("-wal", "-shm"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)


def _restore_partition(dest: Path, data_dir: Path, entry: dict[str, Any]) -> None:
    root = _partition_dir(data_dir, entry["index"])
    objects = root / "objects"
    if objects.is_dir():
        shutil.rmtree(objects)  # files the backup does not have belong to later promotions
    for item in entry["objects"]:
        _place(dest / item["path"], data_dir / item["path"])
    _place(dest / entry["path"], root / "partition.sqlite")


def _restore_object(dest: Path, data_dir: Path, entry: dict[str, Any], ns: str, oid: bytes) -> None:
    """Replace one object's rows (or file) in a partition with the backup's, in one commit."""
    root = _partition_dir(data_dir, entry["index"])
    item = next((o for o in entry["objects"] if (o["ns"], o["id"]) == (ns, oid.hex())), None)
    file = root / "objects" / ns / f"{oid.hex()}.sqlite"
    if item is not None:
        _place(dest / item["path"], file)
    with (
        closing(sqlite3.connect(root / "partition.sqlite", isolation_level=None)) as conn,
        closing(sqlite3.connect(dest / entry["path"])) as saved,
    ):
        rows = saved.execute("SELECT key, value FROM kv WHERE ns=? AND id=?", (ns, oid)).fetchall()
        record = saved.execute(
            "SELECT kind, name, alarm FROM objects WHERE ns=? AND id=?", (ns, oid)
        ).fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM kv WHERE ns=? AND id=?", (ns, oid))
        conn.execute("DELETE FROM objects WHERE ns=? AND id=?", (ns, oid))
        conn.executemany("INSERT INTO kv VALUES (?,?,?,?)", [(ns, oid, k, v) for k, v in rows])
        if record is not None:
            conn.execute(
                "INSERT INTO objects(ns, id, kind, name, alarm) VALUES (?,?,?,?,?)",
                (ns, oid, *record),
            )
        conn.execute("COMMIT")
    if item is None:
        for suffix in ("", "-wal", "-shm"):  # the object was promoted after the backup
            file.with_name(file.name + suffix).unlink(missing_ok=True)


def _chosen(
    manifest: dict[str, Any], data_dir: Path, partition: int | None, oid: ObjectId | None
) -> list[dict[str, Any]]:
    """The manifest entries a restore touches, after checking the request against both dirs."""
    count = int(manifest["meta"]["partitions"])
    if (data_dir / "meta.json").is_file() and int(_read_meta(data_dir)["partitions"]) != count:
        raise InvalidArgument(
            f"{data_dir} has a different partition count than the backup "
            f"({count}); restore into an empty directory."
        )
    if oid is not None:
        partition = oid.partition(count)
        if not (_partition_dir(data_dir, partition) / "partition.sqlite").is_file():
            raise InvalidArgument(
                f"{data_dir} has no partition {partition} to restore an object "
                "into; restore the partition (--partition) instead."
            )
    if partition is not None and not 0 <= partition < count:
        raise InvalidArgument(f"Partition {partition} does not exist (0 to {count - 1}).")
    entries = {int(p["index"]): p for p in manifest["partitions"]}
    chosen = [entries[i] for i in sorted(entries) if partition in (None, i)]
    if partition is not None and not chosen:
        raise InvalidArgument(f"The backup holds nothing of partition {partition}.")
    return chosen


def restore(
    dest: Path,
    data_dir: Path,
    partition: int | None = None,
    object: tuple[str, str] | None = None,  # the CLI's --object
    progress: Progress | None = None,
) -> list[int]:
    """Restore all partitions, one, or one object (by namespace and name) from the backup at
    ``dest`` into ``data_dir``; returns the partitions touched. See the module docstring."""
    dest, data_dir = Path(dest).resolve(), Path(data_dir).resolve()
    if partition is not None and object is not None:
        raise InvalidArgument("Restore one partition or one object, not both.")
    oid = id_from_name(*object) if object is not None else None
    chosen = _chosen(read_manifest(dest), data_dir, partition, oid)
    for entry in chosen:
        for item in (entry, *entry["objects"]):
            _verify(dest, item)
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir, [e["index"] for e in chosen]):
        if not (data_dir / "meta.json").is_file():
            shutil.copyfile(dest / "meta.json", data_dir / "meta.json")
        for done, entry in enumerate(chosen, 1):
            if oid is not None:
                _restore_object(dest, data_dir, entry, oid.namespace, oid.raw)
            else:
                _restore_partition(dest, data_dir, entry)
            if progress is not None:
                progress(done, len(chosen), f"partition {entry['index']}")
    return [e["index"] for e in chosen]
