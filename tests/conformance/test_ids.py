"""semantics.md "IDs": how a namespace mints, parses and checks object ids.

The algorithm is fixed by CONTRACTS §2 so every node and version agrees; the vectors below were
computed from it. Rows without a Python counterpart are not tested: jurisdictions (no such API),
and ``env.KV.get(id_of_another_namespace)`` (workerd accepts it; CONTRACTS does not say what
``Namespace.get`` does with a foreign ``ObjectId``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from durable import DurableObject, ObjectId, Worker
from durable.errors import InvalidObjectId

HEX64 = re.compile(r"[0-9a-f]{64}")
MALFORMED = "Invalid Durable Object ID: must be 64 hex digits"
FOREIGN = "Durable Object ID is not valid for this namespace."


class IdProbe(DurableObject):
    async def whoami(self) -> tuple[str, str | None]:
        return str(self.ctx.id), self.ctx.id.name

    async def arm_alarm(self) -> None:
        await self.ctx.storage.set_alarm(int(self.ctx.now() * 1000) + 1000)

    async def alarm(self, info: Any) -> None:
        await self.ctx.storage.put("name_in_alarm", self.ctx.id.name)

    async def remember(self, value: str) -> None:
        await self.ctx.storage.put("value", value)

    async def recall(self, key: str = "value") -> Any:
        return await self.ctx.storage.get(key)


# Two bindings of one class are two namespaces (CONTRACTS §2).
worker = Worker(objects={"IDS": IdProbe, "OTHER": IdProbe})


@pytest.mark.parametrize(
    ("binding", "name", "expected"),
    [
        ("IDS", "a", "14d442eba96687052faf9c73c7b708c4d4612b7c7d32126f66ae6d7babfd2279"),
        ("IDS", "b", "2cf1df2dbbf81f462442ed2bf89281950d6188e77d66fb1bad856b0038bc5627"),
        ("IDS", "", "610a0ac6aabbf6fa89e9e615ca4462171ca125082696787d656a407dcc6a99b0"),
        ("IDS", "é😀", "70a7dda2669adefa42abaaa9ec27b45488675b55981977cc40e1ab9ec029ac58"),
        ("OTHER", "a", "ff3023b9884a04559477c6831e86dac0f328aeef1124204d164d6d61d75fa5ed"),
    ],
)
async def test_id_from_name_matches_contract_vectors(
    run: Any, binding: str, name: str, expected: str
) -> None:
    async with run(worker) as env:
        assert str(getattr(env, binding).id_from_name(name)) == expected


async def test_id_from_name_twice_gives_same_id_of_64_lowercase_hex(run: Any) -> None:
    async with run(worker) as env:
        first, second = env.IDS.id_from_name("a"), env.IDS.id_from_name("a")
        assert isinstance(first, ObjectId)
        assert first == second
        assert hash(first) == hash(second)
        assert HEX64.fullmatch(str(first))


async def test_different_names_give_different_ids(run: Any) -> None:
    async with run(worker) as env:
        assert env.IDS.id_from_name("a") != env.IDS.id_from_name("b")


async def test_same_name_in_another_namespace_gives_another_id(run: Any) -> None:
    async with run(worker) as env:
        assert str(env.IDS.id_from_name("a")) != str(env.OTHER.id_from_name("a"))


async def test_id_from_name_is_stable_across_restart(run: Any) -> None:
    async with run(worker) as env:
        before = str(env.IDS.id_from_name("a"))
        await env.IDS.get_by_name("a").remember("kept")
    async with run(worker) as env:
        assert str(env.IDS.id_from_name("a")) == before
        assert await env.IDS.get(env.IDS.id_from_name("a")).recall() == "kept"


async def test_name_is_set_only_for_name_derived_ids(run: Any) -> None:
    async with run(worker) as env:
        named = env.IDS.id_from_name("a")
        assert named.name == "a"
        assert env.IDS.new_unique_id().name is None
        assert env.IDS.id_from_string(str(named)).name is None


async def test_ctx_id_inside_object_is_the_named_id(run: Any) -> None:
    async with run(worker) as env:
        assert await env.IDS.get_by_name("a").whoami() == (str(env.IDS.id_from_name("a")), "a")


async def test_ctx_id_name_is_set_inside_alarm(run: Any, clock: Any) -> None:
    async with run(worker) as env:
        stub = env.IDS.get_by_name("a")
        await stub.arm_alarm()
        await clock.advance(2)
        assert await stub.recall("name_in_alarm") == "a"


async def test_new_unique_id_is_64_hex_and_new_each_call(run: Any) -> None:
    async with run(worker) as env:
        ids = [str(env.IDS.new_unique_id()) for _ in range(20)]
        assert all(HEX64.fullmatch(i) for i in ids)
        assert len(set(ids)) == 20


async def test_object_of_new_unique_id_sees_its_id_without_name(run: Any) -> None:
    async with run(worker) as env:
        object_id = env.IDS.new_unique_id()
        assert await env.IDS.get(object_id).whoami() == (str(object_id), None)


@pytest.mark.parametrize("kind", ["named", "unique"])
async def test_id_from_string_round_trips(run: Any, kind: str) -> None:
    async with run(worker) as env:
        original = env.IDS.id_from_name("a") if kind == "named" else env.IDS.new_unique_id()
        parsed = env.IDS.id_from_string(str(original))
        assert parsed == original
        assert hash(parsed) == hash(original)
        assert str(parsed) == str(original)


async def test_id_from_string_accepts_upper_case_and_normalises_to_lower(run: Any) -> None:
    async with run(worker) as env:
        original = env.IDS.id_from_name("a")
        parsed = env.IDS.id_from_string(str(original).upper())
        assert parsed == original
        assert str(parsed) == str(original)


@pytest.mark.parametrize(
    "text",
    ["garbage", "", "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63],
    ids=["garbage", "empty", "63 hex digits", "65 hex digits", "64 non-hex", "leading space"],
)
async def test_id_from_string_rejects_malformed_text(run: Any, text: str) -> None:
    async with run(worker) as env:
        with pytest.raises(InvalidObjectId, match=re.escape(MALFORMED)):
            env.IDS.id_from_string(text)


@pytest.mark.parametrize("case", ["64 zeros", "one digit changed", "id of another namespace"])
async def test_id_from_string_rejects_ids_not_minted_by_this_namespace(run: Any, case: str) -> None:
    async with run(worker) as env:
        good = str(env.IDS.id_from_name("a"))
        text = {
            "64 zeros": "0" * 64,
            "one digit changed": ("b" if good[0] != "b" else "c") + good[1:],
            "id of another namespace": str(env.OTHER.id_from_name("a")),
        }[case]
        with pytest.raises(InvalidObjectId, match=re.escape(FOREIGN)):
            env.IDS.id_from_string(text)


async def test_invalid_object_id_is_a_type_and_value_error(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(TypeError):
            env.IDS.id_from_string("garbage")
        with pytest.raises(ValueError):
            env.IDS.id_from_string("0" * 64)


async def test_get_by_name_uses_the_id_from_name(run: Any) -> None:
    async with run(worker) as env:
        stub = env.IDS.get_by_name("a")
        assert stub.id == env.IDS.id_from_name("a")
        assert stub.name == "a"
        assert await stub.whoami() == (str(env.IDS.id_from_name("a")), "a")


async def test_get_by_name_and_get_by_id_reach_the_same_object(run: Any) -> None:
    async with run(worker) as env:
        await env.IDS.get_by_name("a").remember("shared")
        assert await env.IDS.get(env.IDS.id_from_name("a")).recall() == "shared"
        parsed = env.IDS.id_from_string(str(env.IDS.id_from_name("a")))
        assert await env.IDS.get(parsed).recall() == "shared"


async def test_same_name_in_two_namespaces_is_two_objects(run: Any) -> None:
    async with run(worker) as env:
        await env.IDS.get_by_name("a").remember("in IDS")
        assert await env.OTHER.get_by_name("a").recall() is None


@pytest.mark.parametrize("name", ["", "n" * 10_000], ids=["empty", "10,000 chars"])
async def test_empty_and_long_names_are_allowed(run: Any, name: str) -> None:
    async with run(worker) as env:
        object_id = env.IDS.id_from_name(name)
        assert HEX64.fullmatch(str(object_id))
        assert object_id.name == name
        assert await env.IDS.get_by_name(name).whoami() == (str(object_id), name)
