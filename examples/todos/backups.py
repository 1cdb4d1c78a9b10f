"""Backups of every user's list into ``env.DB`` (the seed's "periodic backups to R2/D1").

The cron job (``app.py``, ``BACKUP_CRON``, every 5 minutes by default) pages through the
``Directory`` and exports each list from the object that holds it (per-user objects included:
the audit seed's bug was a cron that backed up only the shared object). A list whose ETag equals
its newest backup is skipped, so a run costs one export per list plus writes for changed ones.
``restore(persister, key)`` puts one list (or, with ``key=None``, every list) back from its
newest backup.

Why ``env.DB`` and not files: the backups then live outside the objects' partitions (a lost data
dir does not take them along when the database URL points elsewhere), and one SQL query lists
them. ``durable backup`` (``durable/backup.py``) is the other layer: a consistent copy of the
whole data dir.

Guarantees:
- Each backed-up version is a row ``(key, etag, taken, content)`` written in one batch per page;
  the newest ``KEPT`` versions of each list are kept.
- A restore writes the stored bytes back through the persister (no rate limit), so the list's
  ETag after a restore equals the backed-up one.

Does not guarantee: a backup is as fresh as its last run (up to the cron interval); a list saved
during a run is backed up as it was when exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from examples.todos.content import etag_of
from examples.todos.persister import DIRECTORY, Persister, Who

KEPT = 5
PAGE = 200
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS todo_backups (key TEXT NOT NULL, etag TEXT NOT NULL, "
    "taken REAL NOT NULL, content BLOB NOT NULL, PRIMARY KEY (key, etag))"
)
PRUNE = (
    "DELETE FROM todo_backups WHERE key = ? AND etag NOT IN (SELECT etag FROM todo_backups "
    "WHERE key = ? ORDER BY taken DESC LIMIT ?)"
)


@dataclass(frozen=True, slots=True)
class BackupRun:
    lists: int  # lists in the directory
    written: int  # new versions stored
    unchanged: int  # lists whose newest backup was current


async def back_up(persister: Persister, now: float) -> BackupRun:
    """Back up every list in the directory (see module docstring)."""
    db = persister.env.DB
    await db.exec(SCHEMA)
    directory = persister.env.USERS.get_by_name(DIRECTORY)
    lists = written = 0
    after = ""
    while page := await directory.users(after, PAGE):
        after = page[-1]
        lists += len(page)
        newest = await _newest_etags(db, page)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for key in page:
            raw = await persister.export(Who.of_key(key))
            if raw is None or newest.get(key) == etag_of(raw):
                continue
            statements.append(
                (
                    "INSERT OR REPLACE INTO todo_backups VALUES (?, ?, ?, ?)",
                    (key, etag_of(raw), now, raw),
                )
            )
            statements.append((PRUNE, (key, key, KEPT)))
        if statements:
            await db.batch(statements)
            written += len(statements) // 2
    return BackupRun(lists, written, lists - written)


async def _newest_etags(db: Any, keys: list[str]) -> dict[str, str]:
    marks = ", ".join("?" for _ in keys)
    rows = await db.exec(
        f"SELECT key, etag, max(taken) AS taken FROM todo_backups WHERE key IN ({marks}) "
        "GROUP BY key",
        *keys,
    )
    return {row["key"]: row["etag"] for row in rows}


async def restore(persister: Persister, key: str | None = None) -> list[str]:
    """Restore ``key``'s newest backup, or every list's; returns the keys restored."""
    db = persister.env.DB
    await db.exec(SCHEMA)
    where, params = ("WHERE key = ?", (key,)) if key is not None else ("", ())
    rows = await db.exec(
        f"SELECT key, content, max(taken) AS taken FROM todo_backups {where} GROUP BY key "
        "ORDER BY key",
        *params,
    )
    for row in rows:
        await persister.save(Who.of_key(row["key"]), bytes(row["content"]), limited=False)
    return [row["key"] for row in rows]
