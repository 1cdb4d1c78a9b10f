"""ctx.storage.scoped(key): one routing key's slice of an object's storage (CONTRACTS §10)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable import DurableObject, Worker


class Store(DurableObject):
    async def op(self, scope: str | None, name: str, *args: Any, **kwargs: Any) -> Any:
        target: Any = self.ctx.storage if scope is None else self.ctx.storage.scoped(scope)
        return await getattr(target, name)(*args, **kwargs)

    async def raw(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def with_alarm(self) -> None:
        await self.ctx.storage.set_alarm(10**13)

    async def alarm_at(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: Any) -> None: ...

    async def txn(self, scope: str, rollback: bool) -> dict[str, Any]:
        async def body(txn: Any) -> None:
            await txn.put("t", 1)
            assert await txn.get("t") == 1
            if rollback:
                txn.rollback()

        await self.ctx.storage.scoped(scope).transaction(body)
        return await self.ctx.storage.list()


worker = Worker(objects={"S": Store})


async def test_keys_are_stored_under_the_routing_key_and_nul(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        await s.op("alice", "put", "n", 1)
        await s.op("alice", "put", {"a": 1, "b": 2})
        assert await s.raw() == {"alice\x00a": 1, "alice\x00b": 2, "alice\x00n": 1}
        assert await s.op("alice", "get", "n") == 1
        assert await s.op("alice", "get", ["a", "b", "zz"]) == {"a": 1, "b": 2}
        assert await s.op("alice", "get", "zz", "dflt") == "dflt"


async def test_scopes_are_isolated_from_each_other_and_from_unscoped_keys(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        await s.op(None, "put", "n", "unscoped")
        await s.op("a", "put", "n", "a")
        await s.op("ab", "put", "n", "ab")
        await s.op("a\x01", "put", "n", "a1")
        assert await s.op("a", "list") == {"n": "a"}
        assert await s.op("ab", "get", "n") == "ab"
        assert await s.op("b", "get", "n") is None
        assert await s.op("a", "delete", "n") is True
        assert await s.op("a", "delete", ["n", "m"]) == 0
        assert await s.raw() == {"a\x01\x00n": "a1", "ab\x00n": "ab", "n": "unscoped"}


async def test_list_options_apply_inside_the_scope_and_the_prefix_is_stripped(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        await s.op("u", "put", {k: i for i, k in enumerate(["a", "b1", "b2", "c", "d"])})
        await s.op("t", "put", "b1", "other scope")
        await s.op("v", "put", "a", "other scope")
        assert list(await s.op("u", "list")) == ["a", "b1", "b2", "c", "d"]
        assert list(await s.op("u", "list", prefix="b")) == ["b1", "b2"]
        assert list(await s.op("u", "list", start="b2")) == ["b2", "c", "d"]
        assert list(await s.op("u", "list", start_after="b2", end="d")) == ["c"]
        assert list(await s.op("u", "list", end="b2")) == ["a", "b1"]
        assert list(await s.op("u", "list", reverse=True, limit=2)) == ["d", "c"]
        assert await s.op("u", "list", end="") == {}


async def test_delete_all_deletes_only_this_scope(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        await s.with_alarm()
        await s.op(None, "put", "own", 1)
        await s.op("a", "put", {f"k{i}": i for i in range(100)})
        await s.op("a", "put", {f"m{i}": i for i in range(100)})  # 200 keys: over one batch
        await s.op("b", "put", "k", 1)
        assert await s.op("a", "delete_all") == 200
        assert await s.raw() == {"b\x00k": 1, "own": 1}
        assert await s.alarm_at() == 10**13
        assert await s.op("a", "delete_all") == 0


async def test_a_scoped_transaction_commits_or_rolls_back_in_the_scope(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        assert await s.txn("a", rollback=True) == {}
        assert await s.txn("a", rollback=False) == {"a\x00t": 1}


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("", "A routing key must be a non-empty str without '\\x00', not ''."),
        ("a\x00b", "not 'a\\x00b'"),
        (5, "not 5"),
    ],
)
async def test_bad_routing_keys_are_refused(run: Any, scope: Any, message: str) -> None:
    async with run(worker) as env:
        with pytest.raises(durable.InvalidRouteKey, match=re.escape(message)):
            await env.S.get_by_name("x").op(scope, "get", "k")


async def test_storage_validation_still_applies(run: Any) -> None:
    async with run(worker) as env:
        s = env.S.get_by_name("x")
        with pytest.raises(durable.InvalidArgument, match=re.escape("Keys must be str, not int.")):
            await s.op("a", "put", {5: 1})
        with pytest.raises(durable.KeyTooLarge, match="Key is 2049 bytes"):
            await s.op("abc", "put", "k" * 2045, 1)  # 3 + 1 + 2045: the stored key counts
        await s.op("abc", "put", "k" * 2044, 1)
        with pytest.raises(durable.InvalidArgument, match="list\\(\\) option start must be a str"):
            await s.op("a", "list", start=3)


ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["put", "delete", "delete_all"]),
        st.sampled_from(["k", "k2", "x", "\x01", "é"]),
        st.integers(0, 9),
    ),
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
async def test_scopes_behave_as_separate_dicts(
    run: Any, script: list[tuple[str, str, str, int]]
) -> None:
    model: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    async with run(worker) as env:
        s = env.S.get_by_name("model")
        await s.op("a", "delete_all")
        await s.op("b", "delete_all")
        for scope, name, key, value in script:
            if name == "put":
                await s.op(scope, "put", key, value)
                model[scope][key] = value
            elif name == "delete":
                assert await s.op(scope, "delete", key) == (key in model[scope])
                model[scope].pop(key, None)
            else:
                assert await s.op(scope, "delete_all") == len(model[scope])
                model[scope].clear()
        for scope in ("a", "b"):
            assert await s.op(scope, "list") == dict(
                sorted(model[scope].items(), key=lambda kv: kv[0].encode())
            )
