"""ObjectCache: list() over a large object agrees with a plain dict, buffered or committed."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable.cache import SMALL_OBJECT_KEYS

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
