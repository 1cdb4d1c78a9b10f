"""Database (env.DB): a D1-like SQL binding from a sqlite:/// URL; batch = one transaction."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.database import Database, databases_of
from tests.routers.apps import Ledger


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///rel/a.db", "{cwd}/rel/a.db"),
        ("sqlite:////abs/a.db", "/abs/a.db"),
    ],
)
def test_urls_name_a_file_relative_to_the_current_directory(url: str, path: str) -> None:
    assert Database.from_url(url).path == path.format(cwd=os.getcwd())


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        (
            "mysql://x",
            durable.InvalidArgument,
            "Unknown database URL 'mysql://x': use sqlite:///relative.db",
        ),
        ("sqlite:/a.db", durable.InvalidArgument, "Unknown database URL"),
        (
            "sqlite://a.db",
            durable.InvalidArgument,
            "a sqlite URL has three slashes: sqlite:///path.db",
        ),
        (
            "postgresql://h/db",
            NotImplementedError,
            "PostgreSQL bindings arrive with the Ray cluster issue",
        ),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Database.from_url(url)


async def test_exec_returns_rows_as_dicts(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path}/a.db")
    assert await db.exec("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)") == []
    await db.exec("INSERT INTO t VALUES (?, ?), (?, ?)", "a", 1, "b", 2)
    assert await db.exec("SELECT k, n FROM t WHERE n > ? ORDER BY k", 0) == [
        {"k": "a", "n": 1},
        {"k": "b", "n": 2},
    ]
    stats = db.statistics()
    assert (stats.statements, stats.batches, stats.rows_read, stats.rows_written) == (3, 0, 2, 2)
    db.close()


async def test_a_batch_commits_every_statement_or_none(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path}/a.db")
    await db.exec("CREATE TABLE t (k TEXT PRIMARY KEY)")
    results = await db.batch([("INSERT INTO t VALUES (?)", ("a",)), "SELECT k FROM t"])
    assert results == [[], [{"k": "a"}]]
    with pytest.raises(durable.SqlError, match=re.escape("UNIQUE constraint failed: t.k")):
        await db.batch([("INSERT INTO t VALUES (?)", ("b",)), ("INSERT INTO t VALUES (?)", ("a",))])
    assert await db.exec("SELECT k FROM t") == [{"k": "a"}]
    assert db.statistics().batches == 1 and db.statistics().errors == 1
    with pytest.raises(durable.InvalidArgument, match="batch\\(\\) takes \\(sql, params\\) pairs"):
        await db.batch([("SELECT 1", "not a tuple")])
    db.close()


async def test_connect_exposes_database_bindings_and_closes_them(run: Any, tmp_path: Path) -> None:
    worker = durable.Worker(objects={"L": Ledger}, databases={"DB": f"sqlite:///{tmp_path}/d1.db"})
    async with run(worker) as env:
        assert isinstance(env.DB, Database) and databases_of(env) == [env.DB]
        await env.DB.exec("CREATE TABLE t (x)")
        db = env.DB
    assert db._conn is None
    async with run(worker) as env:
        assert await env.DB.exec("SELECT name FROM sqlite_master") == [{"name": "t"}]
