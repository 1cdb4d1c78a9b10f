"""``HybridRouter``: hot state in objects, aggregates in a shared SQL database (``env.DB``).

The seeds' "DO + D1" pattern: each call runs in the key's object (fast, consistent, per key) and
the values worth querying across keys (scores, totals, last activity) are copied to a table of
the database binding, in batches, for SQL over everything (top 10, sums, search)::

    board = HybridRouter(HashRouter(env.BOARD, shards=8), env.DB,
                         table="scores", columns=("points",), record=("add",))
    await board.call("alice", "add", 5)          # runs add("alice", 5); buffers its result
    top = await board.query("SELECT key, points FROM scores ORDER BY points DESC LIMIT 10")

The result of a recorded method becomes the key's row: a mapping with exactly ``columns``, or,
with one column, a plain value; the table also has ``key`` and ``updated`` (the clock time the
result was recorded). Rows are buffered per key (a newer result replaces an older one)
and written by one ``batch`` (one transaction, an upsert per key) when ``flush_items`` keys are
buffered or ``flush_seconds`` after the first buffered row, on the router's clock.

Guarantees:
- The database is written once per flush, never per request; a key's row holds the result of
  its latest recorded call that completed before the flush.
- A failed flush keeps its rows (newer results still win) and is retried at the next flush.
- ``close()`` (or ``async with``) flushes what is buffered and stops the timer.

Does not guarantee: the table lags the objects by up to ``flush_seconds`` (eventual
consistency, as the seeds say). Rows buffered in a process that dies are not written; the
objects still hold the truth and the key's next recorded call rewrites its row.

On failure: a result that does not fit the columns raises ``InvalidArgument`` from ``call`` (the
call itself has run); database errors are counted in ``statistics().flush_errors`` and logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from durable.clock import Clock, SystemClock, Timer
from durable.database import Database, Row
from durable.errors import InvalidArgument
from durable.namespace import Stub
from durable.routers.base import KeyRouter

log = logging.getLogger("durable.routers")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCALARS = (int, float, str, bytes, type(None))


@dataclass(frozen=True, slots=True)
class HybridStatistics:
    buffered: int  # keys waiting for the next flush
    recorded: int  # results recorded (before coalescing)
    flushes: int  # batches written
    rows_written: int  # rows upserted over all flushes
    flush_errors: int
    last_flush: float | None  # clock time of the last successful flush


class HybridRouter:
    """Routes calls through ``router`` and copies recorded results to ``database``."""

    def __init__(
        self,
        router: KeyRouter,
        database: Database,
        *,
        table: str,
        columns: Sequence[str] = ("value",),
        record: Sequence[str] = (),
        flush_items: int = 100,
        flush_seconds: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        for name in (table, *columns):
            if not isinstance(name, str) or not _IDENTIFIER.match(name) or name == "key":
                raise InvalidArgument(
                    f"HybridRouter table and column names are SQL identifiers other than "
                    f"'key': {name!r}."
                )
        if not columns or len(set(columns)) != len(columns):
            raise InvalidArgument("HybridRouter needs distinct columns.")
        if flush_items < 1 or not flush_seconds > 0:
            raise InvalidArgument("flush_items and flush_seconds must be positive.")
        self.router = router
        self.database = database
        self.table = table
        self.columns = tuple(columns)
        self.record_methods = frozenset(record)
        self.flush_items = flush_items
        self.flush_seconds = flush_seconds
        self.clock = clock or getattr(router, "clock", None) or SystemClock()
        self._buffer: dict[str, tuple[Any, ...]] = {}
        self._timer: Timer | None = None
        self._created = False
        self._recorded = self._flushes = self._rows = self._errors = 0
        self._last_flush: float | None = None

    def __repr__(self) -> str:
        return f"HybridRouter({self.router!r}, {self.database!r}, table={self.table!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRouter) and (
            self.router,
            self.database.url,
            self.table,
            self.columns,
        ) == (other.router, other.database.url, other.table, other.columns)

    __hash__ = None  # type: ignore[assignment]

    # -- the object side ---------------------------------------------------------------------------
    def name_for(self, key: Any, /) -> str:
        return self.router.name_for(key)

    def get(self, key: Any, /) -> Stub:
        return self.router.get(key)

    async def call(self, key: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``router.call(...)``; a method named in ``record`` has its result buffered."""
        result = await self.router.call(key, method, *args, **kwargs)
        if method in self.record_methods:
            await self.record(self.router.routing_key(key), result)
        return result

    # -- the database side -------------------------------------------------------------------------
    async def record(self, key: str, value: Any) -> None:
        """Buffer ``value`` as ``key``'s row (replacing a buffered one); flush if it is time."""
        row = (*self._row(value), self.clock.now())
        self._recorded += 1
        self._buffer[key] = row
        if len(self._buffer) >= self.flush_items:
            await self.flush()
        elif self._timer is None:
            self._timer = self.clock.call_at(self.clock.now() + self.flush_seconds, self._due)

    def _row(self, value: Any) -> tuple[Any, ...]:
        if len(self.columns) == 1 and not isinstance(value, Mapping):
            value = {self.columns[0]: value}
        if not isinstance(value, Mapping) or set(value) != set(self.columns):
            raise InvalidArgument(
                f"{self!r}: a recorded result must be a mapping with exactly the columns "
                f"{list(self.columns)}, not {value!r}."
            )
        row = tuple(value[c] for c in self.columns)
        for item in row:
            if not isinstance(item, _SCALARS):
                raise InvalidArgument(f"{self!r}: {item!r} is not an SQL value.")
        return row

    def _due(self) -> Any:
        self._timer = None
        return self.flush()

    async def flush(self) -> int:
        """Write every buffered row in one transaction now; returns how many."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._buffer = self._buffer, {}
        if not rows:
            return 0
        try:
            await self.database.batch(self._statements(rows))
        except Exception:
            self._errors += 1
            log.exception("HybridRouter flush of %d rows to %s failed", len(rows), self.table)
            rows.update(self._buffer)  # results recorded while flushing are newer
            self._buffer = rows
            self._timer = self.clock.call_at(self.clock.now() + self.flush_seconds, self._due)
            return 0
        self._created = True
        self._flushes += 1
        self._rows += len(rows)
        self._last_flush = self.clock.now()
        return len(rows)

    def _statements(self, rows: Mapping[str, tuple[Any, ...]]) -> list[tuple[str, Sequence[Any]]]:
        names = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*self.columns, "updated"))
        upsert = (
            f"INSERT INTO {self.table} (key, {names}, updated) VALUES (?, {marks}, ?) "
            f"ON CONFLICT (key) DO UPDATE SET {updates}"
        )
        statements: list[tuple[str, Sequence[Any]]] = []
        if not self._created:
            statements.append(
                (
                    f"CREATE TABLE IF NOT EXISTS {self.table} "
                    f"(key TEXT PRIMARY KEY, {names}, updated REAL)",
                    (),
                )
            )
        statements.extend((upsert, (key, *row)) for key, row in rows.items())
        return statements

    async def query(self, sql: str, *params: Any) -> list[Row]:
        """Read the aggregates (what is flushed): ``env.DB.exec(sql, *params)``."""
        return await self.database.exec(sql, *params)

    async def close(self) -> None:
        await self.flush()

    async def __aenter__(self) -> HybridRouter:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def statistics(self) -> HybridStatistics:
        return HybridStatistics(
            len(self._buffer),
            self._recorded,
            self._flushes,
            self._rows,
            self._errors,
            self._last_flush,
        )
