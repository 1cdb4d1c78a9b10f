"""semantics.md "Values through put/get", for the rows that have a Python counterpart.

Python decisions (CONTRACTS §4-5, DESIGN §4) where workerd differs:

* ``put(k, None)`` stores ``None`` (JavaScript rejects ``undefined``; ``None`` is ``null``).
* A non-``str`` key raises ``InvalidArgument``; workerd coerces ``123`` to ``"123"``, we do not
  coerce, so ``put(1, v)`` and ``put("1", v)`` cannot silently alias.
* Unstorable values (functions, coroutines, bare ``object()``) raise ``DataCloneError`` before
  anything is written, also when one value of a multi-key ``put`` is unstorable.
* Dataclasses come back as dicts unless registered with ``durable.register_type`` (workerd: a class
  instance comes back as a plain ``Object``).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from typing import Any

import pytest

import durable
from durable import DurableObject, Worker
from durable.errors import DataCloneError, InvalidArgument
from tests.conformance.samples import SAMPLES, assert_same


@dataclasses.dataclass
class Unregistered:
    x: int
    y: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


async def _never_awaited() -> None:
    return None


UNSTORABLE: dict[str, Callable[[], Any]] = {
    "lambda": lambda: lambda: 1,
    "coroutine": _never_awaited,
    "object()": object,
}


class Store(DurableObject):
    """Storage calls made from inside the object, so errors reach the caller over RPC."""

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self.ctx.storage.get(*args, **kwargs)

    async def put(self, *args: Any, **kwargs: Any) -> None:
        await self.ctx.storage.put(*args, **kwargs)

    async def get_items(self, keys: list[str]) -> tuple[str, list[tuple[str, Any]]]:
        found = await self.ctx.storage.get(keys)
        return type(found).__name__, list(found.items())

    async def list_all(self) -> dict[str, Any]:
        return dict(await self.ctx.storage.list())

    async def put_unstorable(self, kind: str, batch: bool) -> None:
        value = UNSTORABLE[kind]()
        try:
            if batch:
                await self.ctx.storage.put({"a": "new", "bad": value, "z": "new"})
            else:
                await self.ctx.storage.put("bad", value)
        finally:
            if kind == "coroutine":
                value.close()

    async def put_then_mutate(self) -> list[int]:
        value = [1, 2]
        await self.ctx.storage.put("k", value)
        value.append(3)
        return await self.ctx.storage.get("k")  # type: ignore[no-any-return]

    async def dataclass_types(self) -> list[str]:
        await self.ctx.storage.put(
            {"plain": Unregistered(1, "a"), "point": Point(1, 2), "colour": Colour.BLUE}
        )
        got = await self.ctx.storage.get(["plain", "point", "colour"])
        return [repr(got["plain"]), repr(got["point"]), repr(got["colour"])]


worker = Worker(objects={"STORE": Store})


@pytest.mark.parametrize("name", list(SAMPLES))
async def test_value_round_trips_with_its_type(run: Any, name: str) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("values")
        await store.put("k", SAMPLES[name])
        assert_same(SAMPLES[name], await store.get("k"))


async def test_values_read_back_from_disk_after_restart_keep_their_types(run: Any) -> None:
    async with run(worker) as env:
        await env.STORE.get_by_name("values").put(SAMPLES)
    async with run(worker) as env:
        stored = await env.STORE.get_by_name("values").get(list(SAMPLES))
    assert_same(SAMPLES, stored)


async def test_get_returns_a_copy_not_the_object_put(run: Any) -> None:
    async with run(worker) as env:
        assert await env.STORE.get_by_name("v").put_then_mutate() == [1, 2]


async def test_put_none_stores_none(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        assert await store.put("k", None) is None
        assert await store.get("k", default="absent") is None
        assert await store.list_all() == {"k": None}


async def test_get_missing_key_returns_none_or_the_default(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        assert await store.get("missing") is None
        assert await store.get("missing", default=0) == 0
        assert await store.get("missing", 7) == 7


async def test_get_many_returns_found_keys_only_in_utf8_byte_order(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        await store.put({"😀": 5, "b": 2, "｡": 4, "a": 1, "c": 3})
        kind, items = await store.get_items(["😀", "c", "missing", "｡", "a", "b"])
        assert kind == "dict"
        assert items == [("a", 1), ("b", 2), ("c", 3), ("｡", 4), ("😀", 5)]


async def test_get_many_collapses_duplicate_keys(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        await store.put("a", 1)
        assert await store.get_items(["a", "a", "a"]) == ("dict", [("a", 1)])


async def test_get_of_empty_list_returns_empty_dict(run: Any) -> None:
    async with run(worker) as env:
        assert await env.STORE.get_by_name("v").get_items([]) == ("dict", [])


async def test_empty_key_and_keys_with_nul_are_valid_and_distinct(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        await store.put({"": "empty", "nul": "plain", "nul\x00key": "with NUL", "nul\x00": "end"})
        assert await store.get("") == "empty"
        assert await store.get("nul\x00key") == "with NUL"
        assert await store.list_all() == {
            "": "empty",
            "nul": "plain",
            "nul\x00": "end",
            "nul\x00key": "with NUL",
        }


async def test_put_of_a_dict_writes_every_entry(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        assert await store.put({"x": 1, "y": [2], "z": None}) is None
        assert await store.list_all() == {"x": 1, "y": [2], "z": None}


@pytest.mark.parametrize("key", [123, 1.5, b"bytes", None, ("a",)], ids=repr)
async def test_put_with_non_str_key_raises_invalid_argument(run: Any, key: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        with pytest.raises(InvalidArgument):
            await store.put(key, "v")
        assert await store.list_all() == {}


async def test_put_of_a_dict_with_a_non_str_key_writes_nothing(run: Any) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        with pytest.raises(InvalidArgument):
            await store.put({"ok": 1, 2: "int key"})
        assert await store.list_all() == {}


@pytest.mark.parametrize("kind", list(UNSTORABLE))
async def test_unstorable_value_raises_data_clone_error_and_writes_nothing(
    run: Any, kind: str
) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        await store.put("bad", "before")
        with pytest.raises(DataCloneError, match=re.escape("could not be cloned")):
            await store.put_unstorable(kind, batch=False)
        assert await store.list_all() == {"bad": "before"}


@pytest.mark.parametrize("kind", list(UNSTORABLE))
async def test_unstorable_value_in_a_batch_put_writes_none_of_the_batch(
    run: Any, kind: str
) -> None:
    async with run(worker) as env:
        store = env.STORE.get_by_name("v")
        await store.put("a", "before")
        with pytest.raises(DataCloneError):
            await store.put_unstorable(kind, batch=True)
        assert await store.list_all() == {"a": "before"}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((123,), {}), ((None,), {}), (({"a": 1},), {})],
    ids=["no argument", "int", "None", "dict"],
)
async def test_get_with_no_key_or_wrong_type_raises_invalid_argument(
    run: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    async with run(worker) as env:
        with pytest.raises(InvalidArgument):
            await env.STORE.get_by_name("v").get(*args, **kwargs)


async def test_unregistered_dataclass_comes_back_as_dict_registered_types_rebuilt(
    run: Any,
) -> None:
    durable.register_type(Point)
    durable.register_type(Colour)
    async with run(worker) as env:
        assert await env.STORE.get_by_name("v").dataclass_types() == [
            repr({"x": 1, "y": "a"}),
            repr(Point(1, 2)),
            repr(Colour.BLUE),
        ]
