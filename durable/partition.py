"""A partition: one SQLite database with the KV rows and the object table of many objects.

Layout (DESIGN §3)::

    partitions/0042/LOCK               flock'ed by the owning process (one writer)
    partitions/0042/partition.sqlite   kv, objects (a row per promoted object or pending alarm)
    partitions/0042/objects/<ns>/<id>.sqlite   promoted objects (see ``sql.py``)

Guarantees:
- One writer: ``open()`` takes an exclusive ``flock`` on ``LOCK`` or raises ``DataDirInUse``.
- ``commit(batch)`` applies every object's writes in one ``BEGIN IMMEDIATE … COMMIT``; if that
  fails it retries object by object, so one bad object cannot fail the others, and reports which
  failed. WAL with ``synchronous=NORMAL`` survives ``kill -9``; ``FULL`` survives power loss.
- With a ``Checkpointer`` (every host has one) commits never checkpoint on the caller's thread:
  the checkpointer's thread does (``checkpoint.py``); a log it flags is rewound at the next commit.
- The ``objects`` table is the only authority on where an object's data lives (``kind``):
  ``recover()`` deletes object files and rows it does not point to (half-done promotions).

Does not guarantee:
- The ``alarm`` column of a ``file`` object is a hint (the file decides); it may be stale after a
  crash between the two commits, which only makes an alarm fire once more (at-least-once).

On failure: a failed commit leaves the database as before that object's writes (rollback).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from durable.errors import DataDirInUse
from durable.faults import faults

if TYPE_CHECKING:
    from durable.checkpoint import Checkpointer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv(
  ns TEXT NOT NULL, id BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
  PRIMARY KEY(ns, id, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects(
  ns TEXT NOT NULL, id BLOB NOT NULL, kind TEXT NOT NULL, name TEXT, alarm INTEGER,
  PRIMARY KEY(ns, id)) WITHOUT ROWID;
-- Every objects row is a file or an alarm, so re-arming scans the table: an alarm index would
-- only double the pages each alarm write touches (data dirs made before 0.1 had one).
DROP INDEX IF EXISTS objects_alarm;
"""


class StorageKind(Enum):
    """Where an object's data lives. ROWS -> FILE on first sql.exec; FILE -> ROWS on delete_all."""

    ROWS = "rows"
    FILE = "file"


class ObjectRecord(NamedTuple):
    """An ``objects`` row. Only objects with a file or an alarm have one: a plain KV object is
    just its ``kv`` rows, so creating one costs a single row insert."""

    kind: StorageKind
    alarm: int | None


# Sentinel: the alarm was not touched by this batch.
KEEP = object()


@dataclass
class ObjectWrites:
    """What one object's turn changed, ready to commit. ``puts`` maps key -> value, None deletes."""

    ns: str
    id: bytes
    name: str | None
    kind: StorageKind
    puts: dict[bytes, bytes | None] = field(default_factory=dict)
    clear: bool = False
    alarm: object = KEEP
    record: bool = False  # the objects row must be written (kind or alarm changed)


class KvTable:
    """Ordered KV reads of one object: a scope of the partition's ``kv`` or a file's ``_cf_KV``."""

    def __init__(self, conn: sqlite3.Connection, table: str, scope: tuple[object, ...]) -> None:
        self.conn = conn
        self.table = table
        self.scope = scope
        self._where = " AND ".join([*["ns=?", "id=?"][: len(scope)], "1"])

    def read(self, key: bytes) -> bytes | None:
        row = self.conn.execute(
            f"SELECT value FROM {self.table} WHERE {self._where} AND key=?", (*self.scope, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def scan(
        self,
        lo: bytes | None,
        lo_open: bool,
        hi: bytes | None,
        reverse: bool,
        limit: int | None,
    ) -> list[tuple[bytes, bytes]]:
        """Rows with lo <= key (lo < key if lo_open) and key < hi, in byte order."""
        sql = f"SELECT key, value FROM {self.table} WHERE {self._where}"
        params: list[object] = list(self.scope)
        if lo is not None:
            sql += " AND key > ?" if lo_open else " AND key >= ?"
            params.append(lo)
        if hi is not None:
            sql += " AND key < ?"
            params.append(hi)
        sql += " ORDER BY key DESC" if reverse else " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [(bytes(k), bytes(v)) for k, v in self.conn.execute(sql, params)]

    def rows(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self.conn.execute(
            f"SELECT key, value FROM {self.table} WHERE {self._where}", self.scope
        )


class Partition:
    """The database of one partition, owned by this process while open."""

    def __init__(
        self,
        root: Path,
        index: int,
        synchronous: str = "normal",
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.index = index
        self.root = root / "partitions" / f"{index:04d}"
        self.path = self.root / "partition.sqlite"
        self.synchronous = synchronous
        # With a checkpointer, its thread copies the log back (``checkpoint.py``); without one
        # SQLite does, inside the commit that crosses 1,000 pages.
        self.checkpointer = checkpointer
        self.rewind_wal = False  # set by the checkpointer: the log outgrew it, rewind it here
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"partition {self.index} is closed")
        return self._conn

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(str(self.root.parent.parent)) from None
        self._lock_fd = fd
        try:
            self._conn = self._connect()
            self.recover()
        except BaseException:  # e.g. a read-only disk: release the lock, so a retry can take it
            self.close()
            raise
        if self.checkpointer is not None:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self.checkpointer.watch(self)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            # One process owns a partition (the flock). Normal locking, not exclusive: the
            # checkpointer's connection shares the WAL index (the -shm file), ~2 µs a commit.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.unwatch(self)  # first: the last connection's close empties the log
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def table(self, ns: str, oid: bytes) -> KvTable:
        return KvTable(self.conn, "kv", (ns, oid))

    def record(self, ns: str, oid: bytes) -> ObjectRecord | None:
        row = self.conn.execute(
            "SELECT kind, alarm FROM objects WHERE ns=? AND id=?", (ns, oid)
        ).fetchone()
        return None if row is None else ObjectRecord(StorageKind(row[0]), row[1])

    def size(self, ns: str, oid: bytes) -> int:
        """Bytes of an object's KV rows (keys + values), as the storage limit counts them."""
        (size,) = self.conn.execute(
            "SELECT coalesce(sum(length(key) + length(value)), 0) FROM kv WHERE ns=? AND id=?",
            (ns, oid),
        ).fetchone()
        return int(size)

    def object_path(self, ns: str, oid: bytes) -> Path:
        return self.root / "objects" / ns / f"{oid.hex()}.sqlite"

    def pending_alarms(self) -> Iterable[tuple[str, bytes, str | None, int, str]]:
        """(ns, id, name, alarm, kind) of every object with an alarm."""
        return self.conn.execute(
            "SELECT ns, id, name, alarm, kind FROM objects WHERE alarm IS NOT NULL"
        ).fetchall()

    def commit(self, batch: list[ObjectWrites]) -> set[int]:
        """Commit every object's writes at once; on error, one by one. Returns failed indices."""
        if not batch:
            return set()
        try:
            self._transaction(batch)
            return set()
        except Exception:
            failed = set()
            for i, writes in enumerate(batch):
                try:
                    self._transaction([writes])
                except Exception:
                    failed.add(i)
            return failed

    def _transaction(self, batch: list[ObjectWrites]) -> None:
        faults.hit("commit.before")
        with self._writing():
            for writes in batch:
                self._apply(writes)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed, or rolled back if the block raises."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if self.checkpointer is not None:
            self.checkpointer.committed(self)
            if self.rewind_wal:  # rare: copy and rewind the log here, a short stall of the loop
                (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.rewind_wal = bool(busy)  # the thread holds it right now: next commit

    def _apply(self, w: ObjectWrites) -> None:
        conn = self.conn
        if w.clear:
            conn.execute("DELETE FROM kv WHERE ns=? AND id=?", (w.ns, w.id))
        for key, value in w.puts.items():
            if value is None:
                conn.execute("DELETE FROM kv WHERE ns=? AND id=? AND key=?", (w.ns, w.id, key))
            else:
                conn.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,?)", (w.ns, w.id, key, value))
        # One statement for the objects row: a plain KV object without an alarm needs none.
        if w.alarm is KEEP:
            if w.record:
                conn.execute(
                    "INSERT INTO objects(ns, id, kind, name) VALUES (?,?,?,?) "
                    "ON CONFLICT(ns, id) DO UPDATE SET kind=excluded.kind",
                    (w.ns, w.id, w.kind.value, w.name),
                )
        elif w.alarm is None and w.kind is StorageKind.ROWS:
            conn.execute("DELETE FROM objects WHERE ns=? AND id=?", (w.ns, w.id))
        else:
            conn.execute(
                "INSERT INTO objects(ns, id, kind, name, alarm) VALUES (?,?,?,?,?) "
                "ON CONFLICT(ns, id) DO UPDATE SET kind=excluded.kind, alarm=excluded.alarm",
                (w.ns, w.id, w.kind.value, w.name, w.alarm),
            )

    def mark(self, ns: str, oid: bytes, kind: StorageKind, alarm: int | None = None) -> None:
        """Flip where an object lives, in one transaction: promotion's commit point."""
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO objects(ns, id, kind, alarm) VALUES (?,?,?,?) "
                "ON CONFLICT(ns, id) DO UPDATE SET kind=excluded.kind, alarm=excluded.alarm",
                (ns, oid, kind.value, alarm),
            )
            if kind is StorageKind.FILE:
                conn.execute("DELETE FROM kv WHERE ns=? AND id=?", (ns, oid))

    def recover(self) -> None:
        """Finish or undo half-done promotions and demotions: the objects table decides."""
        files = {
            (ns, bytes(oid))
            for ns, oid in self.conn.execute("SELECT ns, id FROM objects WHERE kind='file'")
        }
        objects_dir = self.root / "objects"
        if objects_dir.is_dir():
            for path in objects_dir.glob("*/*"):
                stem = path.name.split(".", 1)[0]
                try:
                    key = (path.parent.name, bytes.fromhex(stem))
                except ValueError:
                    continue
                if key not in files or path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
        if files:
            with self._writing() as conn:
                conn.executemany("DELETE FROM kv WHERE ns=? AND id=?", list(files))

    def statistics(self) -> tuple[int, int]:
        """(objects, kv rows) stored in this partition."""
        (objects,) = self.conn.execute("SELECT count(*) FROM objects").fetchone()
        (rows,) = self.conn.execute("SELECT count(*) FROM kv").fetchone()
        return objects, rows

    # -- WebSockets (issue #5): the socket registry of this partition's objects -------------------
    # Which client sockets each object accepted, with tags and attachment, and the holder (the
    # gateway process) that has the connection; plus each object's auto-response. The host keeps
    # them in memory and writes changes here once per loop turn (``sockets.SocketRegistry``).

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _socket_tables(self) -> sqlite3.Connection:
        conn = self.conn
        if not getattr(self, "_sockets_ready", False):
            conn.executescript(_SOCKETS_SCHEMA)
            self._sockets_ready = True
        return conn

    def socket_rows(self) -> list[tuple[str, bytes, str, str, str, bytes | None, int]]:
        """(ns, id, sid, holder, tags JSON, attachment, seq) of every socket, in accept order."""
        return (
            self._socket_tables()
            .execute("SELECT ns, id, sid, holder, tags, attachment, seq FROM sockets ORDER BY seq")
            .fetchall()
        )

    def socket_auto_rows(self) -> list[tuple[str, bytes, str, str]]:
        return (
            self._socket_tables()
            .execute("SELECT ns, id, request, response FROM socket_auto")
            .fetchall()
        )

    def save_sockets(
        self,
        upserts: list[tuple[object, ...]],
        deletes: list[str],
        autos: list[tuple[object, ...]],
    ) -> None:
        """Write socket rows (upserts by sid, deletes) and auto-responses in one transaction."""
        self._socket_tables()
        with self._writing() as conn:
            if upserts:
                conn.executemany(
                    "INSERT OR REPLACE INTO sockets(ns, id, sid, holder, tags, attachment, seq) "
                    "VALUES (?,?,?,?,?,?,?)",
                    upserts,
                )
            if deletes:
                conn.executemany("DELETE FROM sockets WHERE sid=?", [(s,) for s in deletes])
            for ns, oid, request, response in autos:
                if request is None:
                    conn.execute("DELETE FROM socket_auto WHERE ns=? AND id=?", (ns, oid))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO socket_auto VALUES (?,?,?,?)",
                        (ns, oid, request, response),
                    )

    def drop_sockets_except(self, holder: str) -> int:
        """Delete the rows of sockets held by any other holder (stale after a restart)."""
        conn = self._socket_tables()
        return conn.execute("DELETE FROM sockets WHERE holder != ?", (holder,)).rowcount

    def stored_totals(self) -> tuple[int, int]:
        """(objects, bytes) stored in this partition: KV rows plus object files (for /metrics;
        a scan of the kv table, so callers cache it)."""
        (objects,) = self.conn.execute("SELECT count(*) FROM objects").fetchone()
        (size,) = self.conn.execute(
            "SELECT coalesce(sum(length(key) + length(value)), 0) FROM kv"
        ).fetchone()
        files = self.root / "objects"
        if files.is_dir():
            size += sum(f.stat().st_size for f in files.glob("*/*.sqlite*") if f.is_file())
        return int(objects), int(size)


_SOCKETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sockets(
  sid TEXT PRIMARY KEY, ns TEXT NOT NULL, id BLOB NOT NULL, holder TEXT NOT NULL,
  tags TEXT NOT NULL, attachment BLOB, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sockets_holder ON sockets(holder);
CREATE TABLE IF NOT EXISTS socket_auto(
  ns TEXT NOT NULL, id BLOB NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL,
  PRIMARY KEY(ns, id)) WITHOUT ROWID;
"""
