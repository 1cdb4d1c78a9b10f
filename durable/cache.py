"""One object's storage in memory: read cache and write buffer (workerd's ActorCache), and
transaction layers on top of it.

Guarantees:
- Reads never suspend: a key is served from the cache or read synchronously from SQLite (the
  partition's rows or the object's file) and cached, so get-then-put from concurrent events
  cannot interleave (input gate, DESIGN §2).
- Writes go to the buffer and are visible to the next read at once; the host commits every dirty
  buffer once per event-loop turn. ``round`` is the commit that will hold the buffered writes;
  waiting on it is the output gate.
- ``delete_all`` is buffered like any write: the commit deletes the old rows (or demotes the
  file: the partition marks the object ``rows`` first, the file is unlinked after).
- A transaction layer buffers its own writes and merges them into its parent in one step, or
  drops them (rollback, exception).

Does not guarantee: a cache entry is never evicted while the object is active; memory is bounded
by evicting the object itself.

On failure: if a commit fails the host resets the object and this cache is discarded; nothing it
buffered is reported as durable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from durable.errors import StorageLimitExceeded
from durable.partition import KEEP, ObjectRecord, ObjectWrites, StorageKind

if TYPE_CHECKING:
    from durable.clock import Clock
    from durable.commits import GroupCommit
    from durable.gates import CommitRound
    from durable.ids import ObjectId
    from durable.partition import Partition
    from durable.sql import ObjectFile

MISSING: object = object()
SMALL_OBJECT_KEYS = 64
SMALL_OBJECT_BYTES = 128 * 1024  # an object this small (and with so few keys) is loaded whole


@dataclass(frozen=True, slots=True)
class KeyRange:
    """A list() range over keys in code point (= UTF-8 byte) order; ``hi`` is exclusive."""

    lo: str | None = None
    lo_open: bool = False
    hi: str | None = None
    reverse: bool = False
    limit: int | None = None

    def __contains__(self, key: str) -> bool:
        if self.lo is not None and (key <= self.lo if self.lo_open else key < self.lo):
            return False
        return self.hi is None or key < self.hi


class Backend(Protocol):
    def read(self, key: bytes) -> bytes | None: ...

    def scan(
        self, lo: bytes | None, lo_open: bool, hi: bytes | None, reverse: bool, limit: int | None
    ) -> list[tuple[bytes, bytes]]: ...


class Host(Protocol):
    """What a cache needs from its host."""

    clock: Clock
    commits: GroupCommit

    def open_file(self, cache: ObjectCache) -> ObjectFile: ...


def overlay(
    rows: list[tuple[str, bytes]], changes: Mapping[str, bytes | None], r: KeyRange
) -> list[tuple[str, bytes]]:
    """Apply buffered changes (None deletes) to rows read from below, then order and limit.

    >>> overlay([("a", b"1"), ("c", b"3")], {"b": b"2", "c": None}, KeyRange())
    [('a', b'1'), ('b', b'2')]
    """
    merged = dict(rows)
    for key, value in changes.items():
        if key in r:
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    keys = sorted(merged, reverse=r.reverse)
    if r.limit is not None:
        keys = keys[: r.limit]
    return [(k, merged[k]) for k in keys]


def _widened(r: KeyRange, changes: Mapping[str, bytes | None]) -> int | None:
    """The limit to read below so that ``overlay`` still finds ``r.limit`` survivors."""
    if r.limit is None:
        return None
    return r.limit + sum(1 for k in changes if k in r)


class ObjectCache:
    """The storage state of one active object."""

    def __init__(
        self,
        host: Host,
        partition: Partition,
        oid: ObjectId,
        record: ObjectRecord | None,
        max_bytes: int,
    ) -> None:
        self.host = host
        self.partition = partition
        self.oid = oid
        self.ns = oid.namespace
        self.values: dict[str, bytes | None] = {}
        self.dirty: dict[str, bytes | None] = {}
        self.cleared = False
        self.kind = record.kind if record else StorageKind.ROWS
        # Whether ``values`` holds every stored key (nothing stored yet: a new object), so a miss
        # skips SQLite. Found out on the first read or write: an event that only fires an alarm
        # or reads nothing costs no query for it.
        self._complete: bool | None = False if self.kind is StorageKind.FILE else None
        self.alarm: int | None = record.alarm if record else None
        self.alarm_dirty = False
        self.alarm_sets = 0  # counts set_alarm calls: was it set again while alarm() ran?
        self.firing: int | None = None  # scheduled time of the alarm whose handler runs now
        self._size: int | None = None  # read on the first write
        self.max_bytes = max_bytes
        self.file: ObjectFile | None = None
        self.round: CommitRound | None = None
        self._rows = partition.table(self.ns, oid.raw)

    # -- reads -------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        if self._complete is None:
            self._complete = self._load_small()
        return self._complete

    def _load_small(self) -> bool:
        """First read of a rows object: one query loads it whole if it is small (most are), and
        then ``values`` answers every later read; a bigger one is read key by key."""
        rows = self._rows.scan(None, False, None, False, SMALL_OBJECT_KEYS + 1)
        if len(rows) > SMALL_OBJECT_KEYS or sum(len(v) for _, v in rows) > SMALL_OBJECT_BYTES:
            return False
        for key, value in rows:
            self.values.setdefault(key.decode(), value)  # a value read or written since is newer
        return True

    @property
    def backend(self) -> Backend:
        if self.kind is StorageKind.FILE:
            return self.host.open_file(self)
        return self._rows

    def read(self, key: str) -> bytes | None:
        value = self.values.get(key, MISSING)
        if value is MISSING:
            # ``complete`` may load the whole object the first time: look in ``values`` again.
            value = self.values.get(key) if self.complete else self.backend.read(key.encode())
            self.values[key] = value
        return value  # type: ignore[return-value]

    def scan(self, r: KeyRange) -> list[tuple[str, bytes]]:
        # A complete cache can answer alone, but sorting it costs O(n log n) per list(): past a
        # few keys the database's index (plus the buffer) is cheaper, unless a delete_all is
        # pending (then the committed rows are stale).
        if self.complete and (self.cleared or len(self.values) <= SMALL_OBJECT_KEYS):
            rows = [(k, v) for k, v in self.values.items() if v is not None and k in r]
            return overlay(rows, {}, r)
        below = self.backend.scan(
            r.lo.encode() if r.lo is not None else None,
            r.lo_open,
            r.hi.encode() if r.hi is not None else None,
            r.reverse,
            _widened(r, self.dirty),
        )
        return overlay([(k.decode(), v) for k, v in below], self.dirty, r)

    def get_alarm(self) -> int | None:
        return None if self.alarm is not None and self.alarm == self.firing else self.alarm

    # -- writes ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes of the object's KV data (buffered writes included)."""
        if self._size is None:
            if self.kind is StorageKind.FILE:
                self._size = self.host.open_file(self).kv_size()
            elif self.complete:  # no write yet, so ``values`` holds exactly what is stored
                self._size = sum(_entry_size(k, v) for k, v in self.values.items())
            else:
                self._size = self.partition.size(self.ns, self.oid.raw)
        return self._size

    def write(self, entries: Mapping[str, bytes | None]) -> None:
        """Buffer puts (bytes) and deletes (None) atomically; check the storage limit first."""
        before = size = self.size
        for key, value in entries.items():
            old = self.read(key)
            size += _entry_size(key, value) - _entry_size(key, old)
        if size > self.max_bytes and size > before:
            raise StorageLimitExceeded(size, self.max_bytes)
        self._size = size
        self.values.update(entries)
        self.dirty.update(entries)
        self._touch()

    def set_alarm(self, when: int | None) -> None:
        self.alarm = when
        self.alarm_dirty = True
        self.alarm_sets += 1
        self._touch()

    def clear(self) -> None:
        self.values.clear()
        self.dirty.clear()
        self.cleared = self._complete = True
        self._size = 0
        self.set_alarm(None)

    def touch_sql(self) -> None:
        """An SQL statement ran in the file's open transaction: commit it with the next flush."""
        self._touch()

    def _touch(self) -> None:
        round_ = self.host.commits.mark_dirty(self)
        if round_ is not None:  # None: deferred, committed later (``GroupCommit.mark_dirty``)
            self.round = round_

    # -- commit (called by the host, in this order) ------------------------------------------
    @property
    def commits_file(self) -> bool:
        """Its writes commit in its own file (promoted, and no demotion pending)."""
        return self.kind is StorageKind.FILE and not self.cleared

    def prepare_commit(self) -> ObjectWrites | None:
        """What the partition must commit for this object, if anything.

        A promoted object's partition part is only its alarm hint; it commits before the file
        (``commit_file``), so a crash in between leaves a hint for an alarm the file does not
        have, which the host skips when it fires, never an alarm without a hint.
        """
        alarm = self.alarm if self.alarm_dirty else KEEP
        if self.commits_file:
            if alarm is KEEP:
                return None
            return ObjectWrites(
                self.ns, self.oid.raw, self.oid.name, self.kind, {}, False, alarm, True
            )
        puts = {k.encode(): v for k, v in self.dirty.items()}
        demote = self.cleared and self.kind is StorageKind.FILE
        record = demote or alarm is not KEEP
        return ObjectWrites(
            self.ns,
            self.oid.raw,
            self.oid.name,
            StorageKind.ROWS,
            puts,
            self.cleared,
            alarm,
            record,
        )

    def commit_file(self) -> None:
        """Commit a promoted object's KV writes, alarm and SQL in its file, all or nothing."""
        puts = {k.encode(): v for k, v in self.dirty.items()}
        alarm = self.alarm if self.alarm_dirty else KEEP
        self.host.open_file(self).commit(puts, alarm, KEEP)

    def finish_commit(self) -> None:
        """The commit succeeded: the buffer is durable."""
        if self.cleared and self.kind is StorageKind.FILE:
            self._drop_file()
        self.dirty.clear()
        self.cleared = False
        self.alarm_dirty = False

    def _drop_file(self) -> None:
        from durable.sql import ObjectFile

        if self.file is not None:
            self.file.close()
            self.file = None
        ObjectFile.remove(self.partition.object_path(self.ns, self.oid.raw))
        self.kind = StorageKind.ROWS

    @property
    def busy(self) -> bool:
        """Writes are buffered or a file transaction is open: not safe to drop."""
        return bool(self.dirty or self.cleared or self.alarm_dirty) or (
            self.file is not None and self.file.conn.in_transaction
        )


def _entry_size(key: str, value: bytes | None) -> int:
    return 0 if value is None else len(key.encode()) + len(value)


class TxnLayer:
    """A transaction's private buffer over a parent (the object's cache or an outer layer)."""

    def __init__(self, parent: ObjectCache | TxnLayer) -> None:
        self.parent = parent
        self.changes: dict[str, bytes | None] = {}
        self.alarm: object = MISSING

    def read(self, key: str) -> bytes | None:
        if key in self.changes:
            return self.changes[key]
        return self.parent.read(key)

    def scan(self, r: KeyRange) -> list[tuple[str, bytes]]:
        wide = KeyRange(r.lo, r.lo_open, r.hi, r.reverse, _widened(r, self.changes))
        return overlay(self.parent.scan(wide), self.changes, r)

    def write(self, entries: Mapping[str, bytes | None]) -> None:
        self.changes.update(entries)

    def get_alarm(self) -> int | None:
        return self.parent.get_alarm() if self.alarm is MISSING else self.alarm  # type: ignore[return-value]

    def set_alarm(self, when: int | None) -> None:
        self.alarm = when

    def merge(self) -> None:
        """Apply every change to the parent in one step (its storage-limit check included)."""
        if self.changes:
            self.parent.write(self.changes)
        if self.alarm is not MISSING:
            self.parent.set_alarm(self.alarm)  # type: ignore[arg-type]
