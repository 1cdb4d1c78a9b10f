"""Production limits (CONTRACTS §8, DESIGN §2 ``limits.py``) with workerd's error semantics.

workerd-local enforces none of the production KV limits (semantics.md "Size limits"); durable
enforces them on purpose: keys ≤ 2,048 UTF-8 bytes, values ≤ 128 KiB serialized, ≤ 128 keys per
batch call. Every breach raises before anything is written, so each test checks that ``list()`` is
unchanged afterwards.

Decisions where the contracts are silent:

* Only writes check the key size. ``get``/``delete``/``list`` with an over-long key behave as for
  any absent key (``None``, ``False``, the ordinary range), as workerd does with a 2.2 MB key.
* ``CpuTimeExceeded``: only the error at the caller and the reset of the object are asserted, not
  whether writes made earlier in the event survive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import time
from typing import Any

import pytest

from durable import DurableObject, Limits, Worker
from durable.errors import (
    BatchTooLarge,
    CpuTimeExceeded,
    KeyTooLarge,
    MessageTooLarge,
    Overloaded,
    StorageLimitExceeded,
    ValueTooLarge,
)

KIB = 1024
MIB = 1024 * KIB
RPC_MESSAGE = re.compile(
    r"Serialized RPC arguments or return values are limited to \d+(?:MiB| bytes), "
    r"but the size of this value was: (\d+) bytes\."
)


@dataclasses.dataclass
class Hold:
    """A rendezvous between a test and calls parked inside an object."""

    expected: int
    entered: int = 0
    all_in: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


HOLDS: dict[str, Hold] = {}


class Limited(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.instance = secrets.token_hex(8)

    async def instance_id(self) -> str:
        return self.instance

    async def get(self, *args: Any) -> Any:
        return await self.ctx.storage.get(*args)

    async def put(self, *args: Any) -> None:
        await self.ctx.storage.put(*args)

    async def delete(self, keys: Any) -> Any:
        return await self.ctx.storage.delete(keys)

    async def list_keys(self, **options: Any) -> list[str]:
        return list(await self.ctx.storage.list(**options))

    async def list_all(self) -> dict[str, Any]:
        return dict(await self.ctx.storage.list())

    async def echo(self, value: Any) -> Any:
        return value

    async def length(self, value: str) -> int:
        return len(value)

    async def big_result(self, size: int) -> str:
        return "x" * size

    async def hold(self, name: str) -> str:
        hold = HOLDS[name]
        hold.entered += 1
        if hold.entered == hold.expected:
            hold.all_in.set()
        await hold.release.wait()
        return "released"

    async def spin(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:  # holds the loop: no await
            pass


worker = Worker(
    objects={
        "LIMITED": Limited,
        "SMALL_RPC": Limited,
        "SMALL_STORE": Limited,
        "FEW_EVENTS": Limited,
        "LOW_CPU": Limited,
    },
    limits={
        "SMALL_RPC": Limits(max_rpc_bytes=1000),
        "SMALL_STORE": Limits(max_storage_bytes=50_000),
        "FEW_EVENTS": Limits(max_pending_events=5),
        "LOW_CPU": Limits(cpu_ms=50),
    },
)

BASELINE = {"k0": 0, "k1": 1}


async def seeded(env: Any, binding: str = "LIMITED") -> Any:
    obj = getattr(env, binding).get_by_name("limits")
    await obj.put(BASELINE)
    return obj


# Keys


@pytest.mark.parametrize(
    "key", ["k" * 2048, "é" * 1024], ids=["2,048 ASCII bytes", "1,024 é = 2,048 bytes"]
)
async def test_key_of_2048_utf8_bytes_is_accepted(run: Any, key: str) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        await obj.put(key, 1)
        assert await obj.get(key) == 1


@pytest.mark.parametrize(
    "key", ["k" * 2049, "é" * 1024 + "a"], ids=["2,049 ASCII bytes", "1,025 chars = 2,049 bytes"]
)
async def test_key_over_2048_utf8_bytes_raises_key_too_large(run: Any, key: str) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(KeyTooLarge, match=re.escape(str(KeyTooLarge(2049, 2048)))):
            await obj.put(key, 1)
        assert await obj.list_all() == BASELINE


async def test_batch_put_with_one_key_too_large_writes_none(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(KeyTooLarge):
            await obj.put({"k0": "changed", "k" * 3000: 1, "new": 2})
        assert await obj.list_all() == BASELINE


async def test_over_long_key_reads_as_absent_for_get_delete_and_list(run: Any) -> None:
    long_key = "k" * 3000
    async with run(worker) as env:
        obj = await seeded(env)
        assert await obj.get(long_key) is None
        assert await obj.get([long_key, "k0"]) == {"k0": 0}
        assert await obj.delete(long_key) is False
        assert await obj.delete([long_key, "missing"]) == 0
        assert await obj.list_keys(prefix=long_key) == []
        assert await obj.list_keys(start="k0" + long_key) == ["k1"]
        assert await obj.list_keys(end="k0" + long_key) == ["k0"]
        assert await obj.list_all() == BASELINE


# Values


async def test_value_just_under_128_kib_serialized_is_accepted(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        await obj.put("big", b"x" * (128 * KIB - 64))
        assert await obj.get("big") == b"x" * (128 * KIB - 64)


@pytest.mark.parametrize(
    "value",
    [b"x" * (128 * KIB), "x" * (128 * KIB + 1), ["é" * KIB] * 100],
    ids=["128 KiB of bytes", "128 KiB + 1 str", "list of 200 KiB"],
)
async def test_value_over_128_kib_serialized_raises_value_too_large(run: Any, value: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(ValueTooLarge, match=r"over the limit of 131072 bytes"):
            await obj.put("k0", value)
        assert await obj.list_all() == BASELINE


async def test_batch_put_with_one_value_too_large_writes_none(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(ValueTooLarge):
            await obj.put({"k0": "changed", "big": b"x" * (200 * KIB), "new": 2})
        assert await obj.list_all() == BASELINE


# Batches


def keys(n: int) -> list[str]:
    return [f"b{i:03}" for i in range(n)]


async def test_batch_of_128_keys_is_accepted_by_put_get_and_delete(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        await obj.put({key: i for i, key in enumerate(keys(128))})
        assert len(await obj.get(keys(128))) == 128
        assert await obj.delete(keys(128)) == 128
        assert await obj.list_all() == BASELINE


async def test_put_of_129_keys_raises_batch_too_large_and_writes_none(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(BatchTooLarge, match=re.escape(str(BatchTooLarge(129, 128)))):
            await obj.put({key: i for i, key in enumerate(keys(129))})
        assert await obj.list_all() == BASELINE


async def test_get_of_129_keys_raises_batch_too_large(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(BatchTooLarge, match=re.escape(str(BatchTooLarge(129, 128)))):
            await obj.get(keys(129))
        assert await obj.list_all() == BASELINE


async def test_delete_of_129_keys_raises_batch_too_large_and_deletes_none(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env)
        with pytest.raises(BatchTooLarge, match=re.escape(str(BatchTooLarge(129, 128)))):
            await obj.delete([*BASELINE, *keys(127)])
        assert await obj.list_all() == BASELINE


# RPC messages


async def test_rpc_argument_within_custom_limit_is_accepted(run: Any) -> None:
    async with run(worker) as env:
        assert await env.SMALL_RPC.get_by_name("r").echo("x" * 500) == "x" * 500


async def test_rpc_argument_over_custom_limit_raises_message_too_large(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(MessageTooLarge, match=RPC_MESSAGE) as caught:
            await env.SMALL_RPC.get_by_name("r").echo("x" * 2000)
        match = RPC_MESSAGE.search(str(caught.value))
        assert match is not None
        assert int(match.group(1)) >= 2000


async def test_rpc_result_over_custom_limit_raises_message_too_large(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(MessageTooLarge, match=RPC_MESSAGE):
            await env.SMALL_RPC.get_by_name("r").big_result(2000)


async def test_rpc_argument_just_under_32_mib_is_accepted(run: Any) -> None:
    async with run(worker) as env:
        assert await env.LIMITED.get_by_name("r").length("x" * (32 * MIB - KIB)) == 32 * MIB - KIB


async def test_rpc_argument_over_32_mib_raises_message_too_large(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(
            MessageTooLarge,
            match=re.escape(
                "Serialized RPC arguments or return values are limited to 32MiB, "
                "but the size of this value was: "
            ),
        ) as caught:
            await env.LIMITED.get_by_name("r").length("x" * (32 * MIB + 1))
        match = RPC_MESSAGE.search(str(caught.value))
        assert match is not None
        assert int(match.group(1)) > 32 * MIB


# Storage size


async def test_write_over_max_storage_bytes_raises_and_writes_nothing(run: Any) -> None:
    async with run(worker) as env:
        obj = await seeded(env, "SMALL_STORE")
        await obj.put("small", "s" * 100)
        before = await obj.list_all()
        with pytest.raises(StorageLimitExceeded):
            await obj.put("huge", "h" * 60_000)
        assert await obj.list_all() == before
        with pytest.raises(StorageLimitExceeded):
            await obj.put({"half1": "a" * 30_000, "half2": "b" * 30_000})
        assert await obj.list_all() == before
        await obj.put("another small", "t" * 100)


# Pending events


async def test_call_beyond_max_pending_events_raises_overloaded(run: Any) -> None:
    hold = HOLDS["overload"] = Hold(expected=5)
    try:
        async with run(worker) as env:
            obj = env.FEW_EVENTS.get_by_name("hot")
            parked = [asyncio.ensure_future(obj.hold("overload")) for _ in range(5)]
            await asyncio.wait_for(hold.all_in.wait(), timeout=30)
            with pytest.raises(Overloaded) as caught:
                await asyncio.wait_for(obj.hold("overload"), timeout=30)
            assert caught.value.overloaded is True
            hold.release.set()
            assert await asyncio.gather(*parked) == ["released"] * 5
            assert await obj.echo("after") == "after"
    finally:
        hold.release.set()
        del HOLDS["overload"]


# CPU time


async def test_event_holding_the_loop_past_cpu_ms_raises_and_resets_the_object(run: Any) -> None:
    async with run(worker) as env:
        obj = env.LOW_CPU.get_by_name("spinner")
        first = await obj.instance_id()
        with pytest.raises(CpuTimeExceeded):
            await obj.spin(2.0)
        assert await obj.instance_id() != first
