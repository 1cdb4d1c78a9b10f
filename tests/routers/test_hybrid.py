"""HybridRouter: hot state in objects, aggregates in env.DB written in batches, never per call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.database import Database
from durable.routers import HashRouter, HybridRouter
from durable.testing import VirtualClock
from tests.routers.apps import Board


def worker(tmp_path: Path) -> durable.Worker:
    return durable.Worker(objects={"BOARD": Board}, databases={"DB": f"sqlite:///{tmp_path}/d1.db"})


def board(env: Any, clock: VirtualClock, **kw: Any) -> HybridRouter:
    kw = {
        "table": "scores",
        "columns": ("points",),
        "record": ("add",),
        "flush_items": 10,
        "flush_seconds": 2.0,
        **kw,
    }
    return HybridRouter(HashRouter(env.BOARD, shards=4, clock=clock), env.DB, **kw)


async def test_results_are_written_in_batches_of_flush_items(
    run: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    async with run(worker(tmp_path)) as env:
        router = board(env, clock)
        for i in range(25):
            assert await router.call(f"p{i}", "add", i) == i
        assert env.DB.statistics().batches == 2  # not 25
        assert router.statistics().buffered == 5
        rows = await router.query("SELECT key, points FROM scores ORDER BY points DESC LIMIT 3")
        assert rows == [
            {"key": "p19", "points": 19},
            {"key": "p18", "points": 18},
            {"key": "p17", "points": 17},
        ]


async def test_a_partial_buffer_is_flushed_after_flush_seconds_on_the_clock(
    run: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    async with run(worker(tmp_path)) as env:
        router = board(env, clock)
        await router.call("a", "add", 1)
        await clock.advance(1.9)
        assert env.DB.statistics().batches == 0
        await clock.advance(0.1)
        assert env.DB.statistics().batches == 1
        assert await router.query("SELECT key, points, updated FROM scores") == [
            {"key": "a", "points": 1, "updated": clock.now() - 2.0}
        ]


async def test_updates_of_one_key_coalesce_and_the_latest_wins(
    run: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    async with run(worker(tmp_path)) as env:
        router = board(env, clock)
        for _ in range(500):
            await router.call("hot", "add", 1)
        assert router.statistics().recorded == 500 and router.statistics().buffered == 1
        await router.close()
        assert await router.query("SELECT points FROM scores WHERE key = ?", "hot") == [
            {"points": 500}
        ]
        stats = router.statistics()
        assert (stats.flushes, stats.rows_written, env.DB.statistics().batches) == (1, 1, 1)


async def test_unrecorded_methods_do_not_touch_the_database(
    run: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    async with run(worker(tmp_path)) as env:
        async with board(env, clock) as router:
            await router.call("a", "add", 3)
            assert await router.call("a", "profile") == {"points": 3, "player": "a"}
            assert router.statistics().recorded == 1
            assert router.name_for("a") == router.router.name_for("a")
        assert env.DB.statistics().batches == 1


class FlakyDatabase(Database):
    failures = 1

    async def batch(self, statements: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise durable.SqlError("database is locked")
        return await super().batch(statements)


async def test_a_failed_flush_keeps_its_rows_for_the_next(
    run: Any, clock: VirtualClock, tmp_path: Path, caplog: Any
) -> None:
    async with run(worker(tmp_path)) as env:
        db = FlakyDatabase.from_url(f"sqlite:///{tmp_path}/flaky.db")
        router = HybridRouter(
            HashRouter(env.BOARD, shards=2),
            db,
            table="t",
            record=("add",),
            flush_items=3,
            clock=clock,
        )
        for key in ("a", "b", "c"):
            await router.call(key, "add", 1)
        assert router.statistics().flush_errors == 1 and router.statistics().buffered == 3
        await router.call("a", "add", 1)  # newer than the failed row
        await clock.advance(1.0)
        assert await router.query("SELECT key, value FROM t ORDER BY key") == [
            {"key": "a", "value": 2}, {"key": "b", "value": 1}, {"key": "c", "value": 1},
        ]  # fmt: skip
        assert "flush of 3 rows to t failed" in caplog.text
        db.close()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"table": "bad name"}, "SQL identifiers other than 'key': 'bad name'"),
        ({"columns": ("key",)}, "SQL identifiers other than 'key': 'key'"),
        ({"columns": ("a", "a")}, "needs distinct columns"),
        ({"flush_items": 0}, "flush_items and flush_seconds must be positive"),
    ],
)
async def test_bad_configuration_is_refused(
    run: Any, clock: VirtualClock, tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    async with run(worker(tmp_path)) as env:
        with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
            board(env, clock, **kw)


async def test_a_result_that_does_not_fit_the_columns_is_refused(
    run: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    async with run(worker(tmp_path)) as env:
        router = board(env, clock, columns=("points", "player"), record=("add", "profile"))
        await router.call("a", "profile")
        with pytest.raises(
            durable.InvalidArgument,
            match=re.escape("exactly the columns ['points', 'player'], not 1"),
        ):
            await router.call("a", "add", 1)
        await router.close()
        assert await router.query("SELECT * FROM scores") == [
            {"key": "a", "points": 0, "player": "a", "updated": clock.now()}
        ]
