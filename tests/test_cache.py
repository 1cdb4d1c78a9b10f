"""ObjectCache: list() over a large object agrees with a plain dict, buffered or committed."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable.cache import SMALL_OBJECT_KEYS
from tests.conftest import host_of

KEYS = [f"k{i:03d}" for i in range(SMALL_OBJECT_KEYS * 3)]


class Big(durable.DurableObject):
    async def write_then_list(
        self, puts: list[str], deletes: list[str], options: dict[str, Any]
    ) -> list[str]:
        for key in puts:  # no await in between: everything stays in the buffer
            await self.ctx.storage.put(key, key)
        for key in deletes:
            await self.ctx.storage.delete(key)
        return list(await self.ctx.storage.list(**options))

    async def list_keys(self, options: dict[str, Any]) -> list[str]:
        return list(await self.ctx.storage.list(**options))


options_st = st.fixed_dictionaries(
    {},
    optional={
        "prefix": st.sampled_from(["k0", "k1", "k05", ""]),
        "start": st.sampled_from(KEYS),
        "end": st.sampled_from(KEYS),
        "reverse": st.booleans(),
        "limit": st.integers(1, 50),
    },
)


def expected(model: set[str], options: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in model if k.startswith(options.get("prefix", "")))
    keys = [k for k in keys if k >= options.get("start", "") and k < options.get("end", "\uffff")]
    if options.get("reverse"):
        keys.reverse()
    return keys[: options.get("limit", len(keys))]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=st.lists(st.sampled_from(KEYS), min_size=SMALL_OBJECT_KEYS + 1, unique=True),
    puts=st.lists(st.sampled_from(KEYS), max_size=20),
    deletes=st.lists(st.sampled_from(KEYS), max_size=20),
    options=options_st,
)
async def test_list_of_a_large_object_matches_a_dict(
    tmp_path_factory: Any,
    first: list[str],
    puts: list[str],
    deletes: list[str],
    options: dict[str, Any],
) -> None:
    worker = durable.Worker(objects={"BIG": Big})
    async with durable.connect(worker, data_dir=tmp_path_factory.mktemp("d")) as env:
        stub = env.BIG.get_by_name("big")
        model = set(first)
        assert await stub.write_then_list(first, [], {}) == sorted(model)
        model |= set(puts)
        model -= set(deletes)
        assert await stub.write_then_list(puts, deletes, options) == expected(model, options)
        assert await stub.list_keys(options) == expected(model, options)  # after the commit


class Reader(durable.DurableObject):
    async def fill(self, count: int) -> None:
        await self.ctx.storage.put({f"k{i:03d}": i for i in range(count)})

    async def read(self, keys: list[str]) -> list[Any]:
        return [await self.ctx.storage.get(key) for key in keys]

    async def write_then_read(self, key: str) -> Any:
        await self.ctx.storage.put(key, "buffered")
        return await self.ctx.storage.get(key), await self.ctx.storage.get("k000")


async def _queries_of_first_reads(run: Any, count: int, keys: list[str]) -> tuple[list[Any], int]:
    """Values of ``keys`` read by a fresh activation of an object with ``count`` keys, and the
    SQL statements those reads ran."""
    worker = durable.Worker(objects={"R": Reader})
    async with run(worker) as env:
        stub = env.R.get_by_name("r")
        await stub.fill(count)
        host = host_of(env)
        host.evict(next(iter(host._active.values())))
        statements: list[str] = []
        for partition in host.partitions.values():
            partition.conn.set_trace_callback(statements.append)
        found = await stub.read(keys)
        return found, len([s for s in statements if s.startswith("SELECT")])


async def test_the_first_read_of_a_small_object_loads_it_whole(run: Any) -> None:
    found, queries = await _queries_of_first_reads(run, 3, ["k000", "k002", "nope", "k001"])
    assert found == [0, 2, None, 1]
    assert queries == 2  # its objects row (activation), then one query loads it whole


async def test_a_big_object_is_read_key_by_key(run: Any) -> None:
    keys = ["k000", "k100", "nope"]
    found, queries = await _queries_of_first_reads(run, SMALL_OBJECT_KEYS + 40, keys)
    assert found == [0, 100, None]
    assert queries == 2 + len(keys)  # objects row, the bounded probe, then one per key


async def test_loading_never_overwrites_a_buffered_write(run: Any) -> None:
    async with run(durable.Worker(objects={"R": Reader})) as env:
        stub = env.R.get_by_name("r")
        await stub.fill(2)
        host = host_of(env)
        host.evict(next(iter(host._active.values())))
        assert await stub.write_then_read("k001") == ("buffered", 0)
