"""The SQL API of an object (``ctx.storage.sql``) and the promoted object's own database file.

An object's first ``sql.exec`` promotes it from rows of its partition to a file of its own
(``objects/<ns>/<id>.sqlite``), as workerd gives each SQLite-backed object; its KV data lives in
that file's ``_cf_KV`` table and its alarm in ``_cf_METADATA``, so KV, SQL and alarm writes of the
object commit in one transaction.

Guarantees:
- ``exec`` is synchronous and eager: statements run at once, inside the object's open write
  transaction, and the cursor holds every row. Its writes commit with the object's next flush,
  together with its KV writes; the reply waits for that commit (output gate).
- The ``_cf_`` prefix is reserved; ``BEGIN``/``SAVEPOINT``, ``ATTACH``, writing ``PRAGMA``s and
  ``sqlite_version()`` are refused with workerd's messages (an authorizer, so SQLite itself decides
  what a statement touches, not a regex).
- Limits: bound parameters, columns, statement length and row size are SQLite's own limits set from
  ``Limits``; storage size is ``max_page_count``, so a statement that would overflow fails whole.

Does not guarantee:
- ``rows_read`` counts rows returned or changed (Python's sqlite3 does not expose rows scanned);
  ``rows_written`` counts rows changed, so DDL counts 0/0 where workerd says 1/2. Error messages
  lack workerd's "at offset N" (Python 3.11's sqlite3 does not expose the offset).
- SQL writes are not undone by ``storage.transaction()``'s rollback; use ``transaction_sync``.

On failure: a failed statement changes nothing (SQLite statement atomicity); ``SqlError`` carries
SQLite's message and code name.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from durable.errors import SqlError, StorageLimitExceeded
from durable.faults import faults
from durable.limits import Limits
from durable.partition import KvTable

T = TypeVar("T")

_FILE_SCHEMA = """
CREATE TABLE IF NOT EXISTS _cf_KV(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _cf_METADATA(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
_FORMAT = 1  # PRAGMA user_version of a complete object file
_TXN_MESSAGE = (
    "To execute a transaction, please use the state.storage.transaction() or "
    "state.storage.transaction_sync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT "
    "statements. The JavaScript API is safer because it will automatically roll back on "
    "exceptions, and because it interacts correctly with Durable Objects' automatic atomic write "
    "coalescing."
)
# Read-only pragmas; data_version is what FTS5 runs while building its tables.
_READ_PRAGMAS = {
    "table_list",
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "data_version",
}
_DENIED_FUNCTIONS = {"sqlite_version", "sqlite_source_id", "sqlite_compileoption_used"}


class ObjectFile:
    """A promoted object's own database: ``_cf_KV``, ``_cf_METADATA`` and the user's tables."""

    def __init__(self, path: Path, limits: Limits, synchronous: str = "normal") -> None:
        self.path = path
        self.internal = True  # the runtime's own statements bypass the authorizer
        self.transaction_error: str | None = None
        self.limit = limits.max_storage_bytes
        self.max_statement = limits.max_sql_statement_bytes
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # one owner: 2 fds, no -shm
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != _FORMAT:
            conn.execute("PRAGMA journal_mode=WAL")  # files made by create() are WAL already
            conn.executescript(_FILE_SCHEMA)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        # Storage limit plus room for the KV/metadata pages the runtime itself checks by size.
        conn.execute(f"PRAGMA max_page_count={limits.max_storage_bytes // page_size + 64}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limits.max_sql_params)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, limits.max_sql_columns)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, limits.max_sql_statement_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_sql_row_bytes)
        conn.set_authorizer(self._authorize)
        self.conn = conn
        self.kv = KvTable(conn, "_cf_KV", ())
        self.internal = False

    @classmethod
    def create(cls, path: Path, rows: Iterator[tuple[bytes, bytes]], alarm: int | None) -> None:
        """Write a new file crash-safely: ``<path>.tmp``, fsync, rename, fsync the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            # A fresh file: skip WAL and fsync while filling it; the fsync below makes it durable.
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(_FILE_SCHEMA)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO _cf_KV VALUES (?, ?)", rows)
            if alarm is not None:
                conn.execute("INSERT INTO _cf_METADATA VALUES ('alarm', ?)", (alarm,))
            conn.execute(f"PRAGMA user_version={_FORMAT}")
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=WAL")  # recorded in the header: opens skip it
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    @staticmethod
    def remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        self.conn.close()

    def begin(self) -> None:
        if not self.conn.in_transaction:
            self._internal("BEGIN IMMEDIATE")

    def commit(self, puts: dict[bytes, bytes | None], alarm: object, keep: object) -> None:
        """Commit the open transaction with the object's KV writes and alarm, all or nothing."""
        faults.hit("commit.before")
        self.begin()
        try:
            self.internal = True
            deletes = [(k,) for k, v in puts.items() if v is None]
            if deletes:
                self.conn.executemany("DELETE FROM _cf_KV WHERE key=?", deletes)
            writes = [(k, v) for k, v in puts.items() if v is not None]
            if writes:
                self.conn.executemany("INSERT OR REPLACE INTO _cf_KV VALUES (?, ?)", writes)
            if alarm is not keep:
                self.conn.execute(
                    "INSERT OR REPLACE INTO _cf_METADATA VALUES ('alarm', ?)", (alarm,)
                )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        finally:
            self.internal = False

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self._internal("ROLLBACK")

    def read(self, key: bytes) -> bytes | None:
        self.internal = True
        try:
            return self.kv.read(key)
        finally:
            self.internal = False

    def scan(
        self, lo: bytes | None, lo_open: bool, hi: bytes | None, reverse: bool, limit: int | None
    ) -> list[tuple[bytes, bytes]]:
        self.internal = True
        try:
            return self.kv.scan(lo, lo_open, hi, reverse, limit)
        finally:
            self.internal = False

    def kv_size(self) -> int:
        self.internal = True
        try:
            (size,) = self.conn.execute(
                "SELECT coalesce(sum(length(key) + length(value)), 0) FROM _cf_KV"
            ).fetchone()
        finally:
            self.internal = False
        return int(size)

    def alarm(self) -> int | None:
        self.internal = True
        try:
            row = self.conn.execute("SELECT value FROM _cf_METADATA WHERE key='alarm'").fetchone()
        finally:
            self.internal = False
        return None if row is None else row[0]

    def size(self) -> int:
        (pages,) = self._internal("PRAGMA page_count").fetchone()
        (page_size,) = self._internal("PRAGMA page_size").fetchone()
        return int(pages * page_size)

    def savepoint(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside a SAVEPOINT: SQL writes are undone if it raises."""
        self.begin()
        name = f"sp{id(fn)}"
        self._internal(f"SAVEPOINT {name}")
        try:
            result = fn()
        except BaseException:
            self._internal(f"ROLLBACK TO {name}")
            self._internal(f"RELEASE {name}")
            raise
        self._internal(f"RELEASE {name}")
        return result

    def _internal(self, sql: str) -> sqlite3.Cursor:
        self.internal = True
        try:
            return self.conn.execute(sql)
        finally:
            self.internal = False

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if self.internal:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            self.transaction_error = _TXN_MESSAGE
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            return sqlite3.SQLITE_OK if arg1 in _READ_PRAGMAS and arg2 is None else _DENY
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return _DENY if arg2 in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        for name in (arg1, arg2):
            if name and name.lower().startswith(("_cf_", "sqlite_stat")):
                if action == sqlite3.SQLITE_READ and name == arg1 and not _is_schema(name):
                    return sqlite3.SQLITE_DENY
                if action != sqlite3.SQLITE_READ:
                    return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


_DENY = sqlite3.SQLITE_DENY


def _is_schema(name: str) -> bool:
    return name.lower() in ("sqlite_master", "sqlite_schema")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Cursor:
    """The result of ``sql.exec``: rows already fetched, as workerd's cursor after ``toArray``."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], written: int) -> None:
        self.column_names = columns
        self._rows = rows
        self._pos = 0
        self.rows_read = max(len(rows), written)  # a changed row was read first
        self.rows_written = written

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._pos >= len(self._rows):
            raise StopIteration
        row = self._rows[self._pos]
        self._pos += 1
        return dict(zip(self.column_names, row, strict=True))

    def to_list(self) -> list[dict[str, Any]]:
        return list(self)

    def raw(self) -> Iterator[tuple[Any, ...]]:
        rows, self._pos = self._rows[self._pos :], len(self._rows)
        return iter(rows)

    def one(self) -> dict[str, Any]:
        rest = self.to_list()
        if len(rest) != 1:
            kind = "no results" if not rest else "multiple results"
            raise SqlError(f"Expected exactly one result from SQL query, but got {kind}.")
        return rest[0]


class SqlStorage:
    """``ctx.storage.sql``: ``exec(query, *params)`` against the object's own database."""

    def __init__(self, open_file: Callable[[], ObjectFile], mark_dirty: Callable[[], None]) -> None:
        self._open_file = open_file
        self._mark_dirty = mark_dirty

    @property
    def database_size(self) -> int:
        return self._open_file().size()

    def exec(self, query: str, *params: Any) -> Cursor:
        if not isinstance(query, str):
            raise SqlError("sql.exec() takes the query as a str.")
        file = self._open_file()
        if len(query.encode()) > file.max_statement:
            raise SqlError("statement too long: SQLITE_TOOBIG")
        statements = _split(query)
        file.begin()
        self._mark_dirty()
        before = file.conn.total_changes
        cursor: sqlite3.Cursor | None = None
        for i, statement in enumerate(statements):
            last = i == len(statements) - 1
            cursor = _run(file, statement, params if last else (), multi=not last)
        rows = cursor.fetchall() if cursor is not None else []
        columns = [d[0] for d in cursor.description or ()] if cursor is not None else []
        return Cursor(columns, rows, file.conn.total_changes - before)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        return self._open_file().savepoint(fn)


def _run(file: ObjectFile, statement: str, params: tuple[Any, ...], multi: bool) -> sqlite3.Cursor:
    file.transaction_error = None
    try:
        return file.conn.execute(statement, params)
    except sqlite3.ProgrammingError as e:
        if "bindings" in str(e) and multi:
            raise SqlError(
                "When executing multiple SQL statements in a single call, only the last "
                "statement can have parameters."
            ) from None
        if "bindings" in str(e):
            raise SqlError("Wrong number of parameter bindings for SQL query.") from None
        raise SqlError(str(e)) from None
    except sqlite3.Error as e:
        if file.transaction_error:
            raise SqlError(file.transaction_error) from None
        raise _sql_error(e, file) from None
    except OverflowError as e:
        raise SqlError(f"{e}: SQLITE_MISMATCH") from None


def _sql_error(e: sqlite3.Error, file: ObjectFile) -> Exception:
    name = getattr(e, "sqlite_errorname", "SQLITE_ERROR")
    primary = "_".join(name.split("_")[:2])
    if primary == "SQLITE_FULL":
        return StorageLimitExceeded(file.size(), file.limit)
    extended = f" (extended: {name})" if name != primary else ""
    return SqlError(f"{e}: {primary}{extended}")


def _split(query: str) -> list[str]:
    """Split a script into complete statements (quotes and comments respected by SQLite)."""
    statements, start = [], 0
    for i, ch in enumerate(query):
        if ch == ";" and sqlite3.complete_statement(query[start : i + 1]):
            statements.append(query[start : i + 1])
            start = i + 1
    tail = query[start:]
    if tail.strip() and not _only_comments(tail):
        statements.append(tail)
    return [s for s in statements if s.strip().strip(";").strip()] or [query]


def _only_comments(text: str) -> bool:
    lines = [line.strip() for line in text.strip().splitlines()]
    return all(not line or line.startswith("--") for line in lines)
