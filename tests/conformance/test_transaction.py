"""semantics.md "transaction()": every row, with Python names.

``txn.rollback()`` is synchronous in workerd; CONTRACTS does not say whether durable's is a plain
call or a coroutine, so ``rollback()`` below accepts either.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from durable import DurableObject, Worker
from durable.errors import TransactionError

HOUR_MS = 3_600_000
Body = Callable[[Any], Awaitable[Any]]


async def rollback(txn: Any) -> None:
    result = txn.rollback()
    if inspect.isawaitable(result):
        await result


class Txn(DurableObject):
    async def put(self, *args: Any) -> None:
        await self.ctx.storage.put(*args)

    async def list_all(self) -> dict[str, Any]:
        return dict(await self.ctx.storage.list())

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: Any) -> None:
        pass

    async def _transact(self, body: Body) -> Any:
        return await self.ctx.storage.transaction(body)

    async def put_then_read_inside(self) -> tuple[Any, Any]:
        async def body(txn: Any) -> tuple[Any, Any]:
            await txn.put("k", "new")
            return await txn.get("k"), await self.ctx.storage.get("k")

        return await self._transact(body)  # type: ignore[no-any-return]

    async def rollback_then_return(self, value: Any) -> Any:
        async def body(txn: Any) -> Any:
            await txn.put("k", "rolled back")
            await txn.put("added", 1)
            await txn.delete("keep")
            await rollback(txn)
            return value

        return await self._transact(body)

    async def use_after_rollback(self, op: str) -> Any:
        async def body(txn: Any) -> Any:
            await txn.put("k", "rolled back")
            await rollback(txn)
            if op == "get":
                return await txn.get("k")
            if op == "put":
                return await txn.put("k", "after rollback")
            await rollback(txn)
            return "second rollback did not raise"

        return await self._transact(body)

    async def raise_inside(self) -> None:
        async def body(txn: Any) -> None:
            await txn.put("k", "changed")
            await txn.delete("keep")
            raise ValueError("thrown inside txn")

        await self._transact(body)

    async def delete_all_inside(self) -> None:
        async def body(txn: Any) -> None:
            await txn.delete_all()

        await self._transact(body)

    async def nested(self) -> Any:
        async def inner(txn: Any) -> str:
            await txn.put("inner", 2)
            return "inner value"

        async def outer(txn: Any) -> Any:
            await txn.put("outer", 1)
            return await self.ctx.storage.transaction(inner)

        return await self._transact(outer)

    async def alarm_and_list_inside(self) -> tuple[int, Any, list[tuple[str, Any]]]:
        at = int(self.ctx.now() * 1000) + HOUR_MS

        async def body(txn: Any) -> tuple[int, Any, list[tuple[str, Any]]]:
            await txn.put("p2", 2)
            await txn.delete("p3")
            await txn.set_alarm(at)
            return at, await txn.get_alarm(), list((await txn.list(prefix="p")).items())

        return await self._transact(body)  # type: ignore[no-any-return]

    async def delete_alarm_inside(self) -> Any:
        async def body(txn: Any) -> Any:
            await txn.delete_alarm()
            return await txn.get_alarm()

        return await self._transact(body)


worker = Worker(objects={"TXN": Txn})


async def test_txn_put_is_seen_by_txn_get_and_storage_get_and_committed(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        assert await obj.put_then_read_inside() == ("new", "new")
        assert await obj.list_all() == {"k": "new"}
    async with run(worker) as env:
        assert await env.TXN.get_by_name("t").list_all() == {"k": "new"}


async def test_rollback_then_return_gives_the_value_and_undoes_writes(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put({"k": "before", "keep": True})
        assert await obj.rollback_then_return("x") == "x"
        assert await obj.list_all() == {"k": "before", "keep": True}


@pytest.mark.parametrize("op", ["get", "put"])
async def test_txn_use_after_rollback_raises(run: Any, op: str) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put("k", "before")
        with pytest.raises(
            TransactionError, match=re.escape(f"Cannot {op}() on rolled back transaction")
        ):
            await obj.use_after_rollback(op)
        assert await obj.list_all() == {"k": "before"}


async def test_second_rollback_does_not_raise(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put("k", "before")
        assert await obj.use_after_rollback("rollback") == "second rollback did not raise"
        assert await obj.list_all() == {"k": "before"}


async def test_exception_inside_reaches_caller_unchanged_and_undoes_writes(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put({"k": "before", "keep": True})
        with pytest.raises(ValueError, match=re.escape("thrown inside txn")) as caught:
            await obj.raise_inside()
        assert type(caught.value) is ValueError
        assert str(caught.value) == "thrown inside txn"
        assert await obj.list_all() == {"k": "before", "keep": True}


async def test_txn_delete_all_raises_transaction_error(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put("k", "before")
        with pytest.raises(
            TransactionError, match=re.escape("Cannot call delete_all() within a transaction")
        ):
            await obj.delete_all_inside()
        assert await obj.list_all() == {"k": "before"}


async def test_nested_transaction_returns_the_inner_value_and_commits_both(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        assert await obj.nested() == "inner value"
        assert await obj.list_all() == {"inner": 2, "outer": 1}


async def test_txn_set_alarm_get_alarm_and_list_work_inside(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.put({"p1": 1, "p3": 3, "q": 0})
        at, seen_alarm, listed = await obj.alarm_and_list_inside()
        assert seen_alarm == at
        assert listed == [("p1", 1), ("p2", 2)]
        assert await obj.get_alarm() == at
        assert await obj.list_all() == {"p1": 1, "p2": 2, "q": 0}


async def test_txn_delete_alarm_works_inside(run: Any) -> None:
    async with run(worker) as env:
        obj = env.TXN.get_by_name("t")
        await obj.alarm_and_list_inside()
        assert await obj.delete_alarm_inside() is None
        assert await obj.get_alarm() is None
