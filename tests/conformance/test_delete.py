"""semantics.md "delete, deleteAll, batches": delete's results and what delete_all() removes.

``delete_all()`` removes every KV entry, the pending alarm and, on an object that used
``sql.exec``, every SQL table. After it, ``sqlite_master`` may still list the runtime's own
``_cf_`` tables (the KV API's ``_cf_KV``) if the SQL API is used again; it lists no user table.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from durable import DurableObject, Worker
from durable.errors import SqlError

HOUR_MS = 3_600_000


class Deleter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.instance = secrets.token_hex(8)

    async def instance_id(self) -> str:
        return self.instance

    async def put(self, *args: Any) -> None:
        await self.ctx.storage.put(*args)

    async def delete(self, keys: Any) -> Any:
        return await self.ctx.storage.delete(keys)

    async def delete_all(self) -> Any:
        return await self.ctx.storage.delete_all()

    async def list_all(self) -> dict[str, Any]:
        return dict(await self.ctx.storage.list())

    async def arm_alarm_in_an_hour(self) -> int:
        at = int(self.ctx.now() * 1000) + HOUR_MS
        await self.ctx.storage.set_alarm(at)
        return at

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: Any) -> None:
        await self.ctx.storage.put("alarm_fired", True)

    def make_table(self) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        sql.exec("INSERT INTO t (v) VALUES (?), (?)", "x", "y")
        sql.exec("CREATE INDEX t_v ON t (v)")
        sql.exec("CREATE TABLE u (k TEXT)")

    def user_tables(self) -> list[str]:
        rows = self.ctx.storage.sql.exec(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name"
        )
        return [row["name"] for row in rows]

    def count_t(self) -> int:
        return self.ctx.storage.sql.exec("SELECT count(*) AS n FROM t").one()["n"]  # type: ignore[no-any-return]


worker = Worker(objects={"DEL": Deleter})


async def test_delete_returns_whether_the_key_existed(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.put("a", 1)
        assert await obj.delete("a") is True
        assert await obj.delete("a") is False
        assert await obj.list_all() == {}


async def test_delete_many_returns_the_count_of_existing_keys(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.put({"b": 1, "c": 2, "keep": 3})
        assert await obj.delete(["b", "c", "missing"]) == 2
        assert await obj.list_all() == {"keep": 3}


async def test_delete_many_counts_duplicate_keys_once(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.put("d", 1)
        assert await obj.delete(["d", "d"]) == 1


async def test_delete_of_empty_list_returns_zero(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.put("a", 1)
        assert await obj.delete([]) == 0
        assert await obj.list_all() == {"a": 1}


async def test_delete_all_returns_none_and_removes_every_key(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.put({"a": 1, "b": 2, "c": 3})
        assert await obj.delete_all() is None
        assert await obj.list_all() == {}


async def test_delete_all_removes_the_pending_alarm(run: Any, clock: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        at = await obj.arm_alarm_in_an_hour()
        assert await obj.get_alarm() == at
        await obj.delete_all()
        assert await obj.get_alarm() is None
        await clock.advance(2 * HOUR_MS / 1000)
        assert await obj.list_all() == {}


async def test_delete_all_drops_every_sql_table(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.make_table()
        await obj.put("kv", 1)
        assert await obj.user_tables() == ["t", "u"]
        await obj.delete_all()
        assert await obj.user_tables() == []
        with pytest.raises(SqlError, match=re.escape("no such table: t")):
            await obj.count_t()
        assert await obj.list_all() == {}


async def test_object_can_be_used_again_after_delete_all(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.make_table()
        await obj.put("old", 1)
        await obj.delete_all()
        await obj.put("new", 2)
        await obj.make_table()
        assert await obj.list_all() == {"new": 2}
        assert await obj.count_t() == 2


async def test_delete_all_after_eviction_removes_data_alarm_and_tables(
    run: Any, clock: Any
) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.make_table()
        await obj.put({"a": 1, "b": 2})
        await obj.arm_alarm_in_an_hour()
        first = await obj.instance_id()
        await clock.advance(11)  # idle_timeout is 10 s: the instance is evicted
        assert await obj.instance_id() != first
        await obj.delete_all()
        assert await obj.list_all() == {}
        assert await obj.get_alarm() is None
        assert await obj.user_tables() == []


async def test_delete_all_after_restart_removes_data_alarm_and_tables(run: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.make_table()
        await obj.put({"a": 1, "b": 2})
        await obj.arm_alarm_in_an_hour()
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        assert await obj.list_all() == {"a": 1, "b": 2}
        await obj.delete_all()
        assert await obj.list_all() == {}
        assert await obj.get_alarm() is None
        assert await obj.user_tables() == []


async def test_delete_all_is_durable_across_eviction_and_restart(run: Any, clock: Any) -> None:
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        await obj.make_table()
        await obj.put({"a": 1, "b": 2})
        await obj.arm_alarm_in_an_hour()
        await obj.delete_all()
        await clock.advance(11)
        assert await obj.list_all() == {}
        assert await obj.get_alarm() is None
    async with run(worker) as env:
        obj = env.DEL.get_by_name("d")
        assert await obj.list_all() == {}
        assert await obj.get_alarm() is None
        await clock.advance(2 * HOUR_MS / 1000)  # the deleted alarm must not fire
        assert await obj.list_all() == {}
        assert await obj.user_tables() == []
