"""SQL database bindings (``env.DB``): a shared database given by URL, as Cloudflare's D1.

``Worker(databases={"DB": "sqlite:///analytics.db"})`` gives ``env.DB``, a ``Database``::

    await env.DB.exec("CREATE TABLE IF NOT EXISTS hits (page TEXT PRIMARY KEY, n INTEGER)")
    await env.DB.batch([("INSERT INTO hits VALUES (?, ?)", ("/", 1)), ("DELETE FROM hits", ())])
    rows = await env.DB.exec("SELECT page, n FROM hits WHERE n > ?", 0)   # [{"page": ..., ...}]

URLs: ``sqlite:///relative/path.db`` (relative to the current directory when the binding is
built, as SQLAlchemy reads it), ``sqlite:////absolute/path.db``, ``sqlite://`` or
``sqlite:///:memory:`` (private to the process). ``postgresql://`` is DESIGN §5's choice for several
nodes and arrives with the Ray issue; it raises ``NotImplementedError`` for now.

Guarantees:
- ``exec`` runs one statement in its own transaction (autocommit, as D1's ``run``/``all``);
  ``batch`` runs every statement in one ``BEGIN IMMEDIATE … COMMIT``: all of them or none
  (D1's ``batch``). Rows come back as dicts in column order.
- WAL mode, ``synchronous=NORMAL`` (survives a killed process, as the object databases).
- The connection opens on first use and ``close()`` releases it; ``connect`` closes its bindings.

Does not guarantee: statements run on the caller's event loop (SQLite on local disk takes
microseconds to milliseconds; batch work rather than calling per request, as ``HybridRouter``
does). It is not an object's storage: no input or output gates, no per-object limits.

On failure: SQLite's error is raised as ``SqlError`` with SQLite's message; a failed ``batch``
has changed nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable.errors import InvalidArgument, SqlError

Row = dict[str, Any]
Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True, slots=True)
class DatabaseStatistics:
    """Counters since the binding was built."""

    url: str
    statements: int  # every statement run, batched or not
    batches: int  # committed ``batch`` calls
    rows_read: int
    rows_written: int
    errors: int


class Database:
    """A SQL database binding (``env.DB``). Build it with ``Database.from_url``."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._statements = self._batches = self._read = self._written = self._errors = 0

    @classmethod
    def from_url(cls, url: str) -> Database:
        """``Database.from_url("sqlite:///a.db")`` → a binding on ``./a.db`` (resolved now)."""
        if not isinstance(url, str):
            raise InvalidArgument(f"A database URL must be a str, not {type(url).__name__}.")
        scheme, sep, rest = url.partition("://")
        if scheme.startswith("postgres"):
            raise NotImplementedError(
                f"{url!r}: PostgreSQL bindings arrive with the Ray cluster issue; use sqlite:///"
            )
        if scheme != "sqlite" or not sep:
            raise InvalidArgument(
                f"Unknown database URL {url!r}: use sqlite:///relative.db, "
                "sqlite:////absolute.db or sqlite:// (in memory)."
            )
        if rest in ("", "/", "/:memory:"):
            return cls(url, ":memory:")
        if not rest.startswith("/"):
            raise InvalidArgument(f"{url!r}: a sqlite URL has three slashes: sqlite:///path.db")
        return cls(url, str(Path(rest[1:]).resolve()))

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @property
    def path(self) -> str:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
        return self._conn

    async def exec(self, sql: str, *params: Any) -> list[Row]:
        """Run one statement (its own transaction) and return its rows."""
        conn = self._connection()
        try:
            return self._run(conn, sql, params)
        except sqlite3.Error as error:
            self._errors += 1
            raise SqlError(str(error)) from error

    async def batch(self, statements: Iterable[Statement]) -> list[list[Row]]:
        """Run ``[(sql, params), ...]`` in one transaction; each statement's rows, in order."""
        todo = [_statement(s) for s in statements]
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [self._run(conn, sql, params) for sql, params in todo]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            self._errors += 1
            raise SqlError(str(error)) from error
        self._batches += 1
        return results

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
        cursor = conn.execute(sql, tuple(params))
        self._statements += 1
        names = [d[0] for d in cursor.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        self._read += len(rows)
        self._written += max(cursor.rowcount, 0) if not names else 0
        return rows

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def statistics(self) -> DatabaseStatistics:
        return DatabaseStatistics(
            self.url, self._statements, self._batches, self._read, self._written, self._errors
        )


def _statement(item: object) -> Statement:
    if isinstance(item, str):
        return item, ()
    if (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], Sequence)
        and not isinstance(item[1], str | bytes)
    ):
        return item[0], item[1]
    raise InvalidArgument(f"batch() takes (sql, params) pairs or SQL strings, not {item!r}.")


def databases_of(env: object) -> list[Database]:
    """Every ``Database`` binding of an ``env`` (for ``connect`` to close on exit)."""
    return [value for value in vars(env).values() if isinstance(value, Database)]
