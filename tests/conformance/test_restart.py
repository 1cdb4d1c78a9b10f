"""Conformance: restart on the same data directory (semantics.md, "Restart (same persist dir)").

A restart is leaving one `connect()` and entering another on the same `data_dir` (the `run`
fixture's default). The second `connect` gets its own `VirtualClock`, started later than the first
one's time, as a real restart would see a later wall clock.

Decision where the contracts are silent: an alarm that came due while nothing was running fires at
the first `advance` after the restart (the reference only observed one due after the restart).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from durable import DurableObject, Worker
from durable.testing import VirtualClock

fired_alarms: list[tuple[str | None, int]] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    fired_alarms.clear()


class Store(DurableObject):
    async def put_many(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def list_all(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def my_id(self) -> tuple[str, str | None]:
        return str(self.ctx.id), self.ctx.id.name

    async def sql_write(self) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, data BLOB)")
        sql.exec("INSERT INTO items VALUES (1, 'one', ?), (2, 'two', NULL)", b"\x00\x01")

    async def sql_read(self) -> list[dict[str, Any]]:
        return self.ctx.storage.sql.exec("SELECT * FROM items ORDER BY id").to_list()

    async def set_alarm(self, when: int) -> None:
        await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> Any:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: Any) -> None:
        fired_alarms.append((self.ctx.id.name, info.scheduled_time))


@pytest.fixture
def worker() -> Worker:
    return Worker(objects={"STORE": Store, "OTHER": Store})


VALUES: dict[str, Any] = {
    "int": 2**70,
    "float": 3.14,
    "str": "emoji 😀",
    "empty": "",
    "none": None,
    "bytes": b"\x00\xff",
    "nested": {"a": [1, (2, 3)], "b": {"c": True}},
    "set": {1, 2, 3},
    "datetime": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    "decimal": Decimal("1.10"),
}


async def test_values_written_before_close_are_read_back_after_reopening(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        await env.STORE.get_by_name("a").put_many(VALUES)
        await env.OTHER.get_by_name("a").put_many({"other": 1})
    async with run(worker) as env:
        assert await env.STORE.get_by_name("a").list_all() == dict(sorted(VALUES.items()))
        assert await env.OTHER.get_by_name("a").list_all() == {"other": 1}
        assert await env.STORE.get_by_name("b").list_all() == {}


async def test_ids_are_identical_after_restart(run: Any, worker: Worker) -> None:
    async with run(worker) as env:
        named = str(env.STORE.id_from_name("a"))
        unique = env.STORE.new_unique_id()
        inside = await env.STORE.get_by_name("a").my_id()
        await env.STORE.get(unique).put_many({"k": "unique"})
    async with run(worker) as env:
        assert str(env.STORE.id_from_name("a")) == named
        assert await env.STORE.get_by_name("a").my_id() == inside == (named, "a")
        again = env.STORE.id_from_string(str(unique))
        assert again == unique
        assert await env.STORE.get(again).list_all() == {"k": "unique"}


async def test_sql_data_is_read_back_after_restart(run: Any, worker: Worker) -> None:
    async with run(worker) as env:
        await env.STORE.get_by_name("a").sql_write()
        await env.STORE.get_by_name("a").put_many({"kv": "too"})
    async with run(worker) as env:
        stub = env.STORE.get_by_name("a")
        assert await stub.sql_read() == [
            {"id": 1, "label": "one", "data": b"\x00\x01"},
            {"id": 2, "label": "two", "data": None},
        ]
        assert await stub.list_all() == {"kv": "too"}


async def test_alarm_due_after_restart_fires_at_its_time(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    restart_at = clock.now() + 1
    due = round(restart_at * 1000) + 1_500
    async with run(worker) as env:
        await env.STORE.get_by_name("a").set_alarm(due)
    later = VirtualClock(start=restart_at)
    async with run(worker, clock=later) as env:
        assert await env.STORE.get_by_name("a").get_alarm() == due
        await later.advance(1.25)
        assert fired_alarms == []
        await later.advance(0.25)
        assert fired_alarms == [("a", due)]


async def test_alarm_that_came_due_while_closed_fires_after_reopening(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    due = round(clock.now() * 1000) + 2_000
    async with run(worker) as env:
        await env.STORE.get_by_name("a").set_alarm(due)
    later = VirtualClock(start=clock.now() + 60)
    async with run(worker, clock=later) as env:
        await later.advance(0)
        assert fired_alarms == [("a", due)]
        assert await env.STORE.get_by_name("a").get_alarm() is None
