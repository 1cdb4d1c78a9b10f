"""semantics.md "list() — order is UTF-8 byte order", every row, with Python option names.

``list()`` returns a ``dict`` whose iteration order is the UTF-8 byte order of the keys (= code
point order; JavaScript's UTF-16 sort would put 😀 before ｡).

Python decision: ``limit`` must be an ``int``. workerd truncates ``2.5`` and ``'2'`` to 2; we raise
``InvalidArgument`` for a float or str limit rather than guess.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from durable import DurableObject, Worker
from durable.errors import InvalidArgument

# Both lines copied from semantics.md.
KEYS = "a ab abc b b1 c user:1 user:10 user:2 A Z _ ~ é ｡ 😀".split()  # noqa: SIM905
ORDER = "A Z _ a ab abc b b1 c user:1 user:10 user:2 ~ é ｡ 😀".split()  # noqa: SIM905


def after(key: str) -> list[str]:
    """Keys of ORDER from ``key`` on (inclusive)."""
    return ORDER[ORDER.index(key) :]


class Lister(DurableObject):
    async def fill(self) -> None:
        await self.ctx.storage.put({key: i for i, key in enumerate(KEYS)})

    async def list_keys(self, **options: Any) -> list[str]:
        return list(await self.ctx.storage.list(**options))

    async def list_result(self) -> tuple[str, list[tuple[str, Any]]]:
        found = await self.ctx.storage.list()
        return type(found).__name__, list(found.items())


worker = Worker(objects={"LIST": Lister})


async def filled(env: Any) -> Any:
    lister = env.LIST.get_by_name("keys")
    await lister.fill()
    return lister


async def test_list_returns_a_dict_of_every_entry_in_utf8_byte_order(run: Any) -> None:
    async with run(worker) as env:
        lister = await filled(env)
        kind, items = await lister.list_result()
        assert kind == "dict"
        assert items == [(key, KEYS.index(key)) for key in ORDER]


async def test_utf8_order_is_code_point_order_not_utf16(run: Any) -> None:
    assert sorted(KEYS, key=lambda k: k.encode()) == ORDER
    async with run(worker) as env:
        keys = await (await filled(env)).list_keys()
        assert keys.index("｡") < keys.index("😀")


LIST_ROWS: list[tuple[dict[str, Any], list[str]]] = [
    ({"prefix": "user:"}, ["user:1", "user:10", "user:2"]),
    ({"prefix": "a"}, ["a", "ab", "abc"]),
    ({"prefix": ""}, ORDER),
    ({"start": "b"}, after("b")),
    ({"start": "aa"}, after("ab")),
    ({"end": "b"}, ["A", "Z", "_", "a", "ab", "abc"]),
    ({"start": "ab", "end": "b1"}, ["ab", "abc", "b"]),
    ({"start_after": "ab"}, after("abc")),
    ({"start_after": "ab", "end": "c"}, ["abc", "b", "b1"]),
    ({"reverse": True}, ORDER[::-1]),
    ({"limit": 3}, ["A", "Z", "_"]),
    ({"reverse": True, "limit": 3}, ["😀", "｡", "é"]),
    ({"reverse": True, "start": "ab", "end": "c"}, ["b1", "b", "abc", "ab"]),
    ({"reverse": True, "start_after": "b"}, after("b1")[::-1]),
    ({"reverse": True, "prefix": "user:", "limit": 2}, ["user:2", "user:10"]),
    ({"prefix": "a", "start": "ab"}, ["ab", "abc"]),
    ({"prefix": "b", "start": "a"}, ["b", "b1"]),
    ({"prefix": "a", "end": "ab"}, ["a"]),
    ({"prefix": "user:", "end": "user:2"}, ["user:1", "user:10"]),
    ({"prefix": "user:", "start_after": "user:1"}, ["user:10", "user:2"]),
    ({"start": "c", "end": "a"}, []),
    ({"start": "b", "end": "b"}, []),
    ({}, ORDER),
    ({"reverse": False}, ORDER),
    ({"limit": 100}, ORDER),
    ({"prefix": "nope"}, []),
]


@pytest.mark.parametrize(("options", "expected"), LIST_ROWS, ids=[repr(o) for o, _ in LIST_ROWS])
async def test_list_options_select_the_reference_keys(
    run: Any, options: dict[str, Any], expected: list[str]
) -> None:
    async with run(worker) as env:
        assert await (await filled(env)).list_keys(**options) == expected


async def test_list_of_empty_storage_is_empty_dict(run: Any) -> None:
    async with run(worker) as env:
        assert await env.LIST.get_by_name("empty").list_result() == ("dict", [])


async def test_list_with_start_and_start_after_raises(run: Any) -> None:
    async with run(worker) as env:
        lister = await filled(env)
        with pytest.raises(
            InvalidArgument,
            match=re.escape("list() cannot be called with both start and start_after values."),
        ):
            await lister.list_keys(start="a", start_after="a")


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_limit_must_be_positive(run: Any, limit: int) -> None:
    async with run(worker) as env:
        lister = await filled(env)
        with pytest.raises(InvalidArgument, match=re.escape("List limit must be positive.")):
            await lister.list_keys(limit=limit)


@pytest.mark.parametrize("limit", [2.5, "2"], ids=["float", "str"])
async def test_list_limit_must_be_an_int(run: Any, limit: Any) -> None:
    """Python decision: workerd truncates 2.5 and '2' to 2; we refuse anything but an int."""
    async with run(worker) as env:
        lister = await filled(env)
        with pytest.raises(InvalidArgument):
            await lister.list_keys(limit=limit)
