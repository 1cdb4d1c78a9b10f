"""Conformance: input gates and interleaving (semantics.md, "Input gates and interleaving").

Ten concurrent calls to one fresh object. Storage calls never let another event in, so a
get-then-put counter reaches 10; any other await lets the next event in, so updates are lost, as in
workerd. Without real sleeps: the "non-storage await" is either `asyncio.sleep(0)` or a barrier that
yields with `asyncio.sleep(0)` until all ten calls have read (bounded, so a runtime that wrongly
keeps the gate closed fails the test instead of hanging it).

Decision: with the barrier, every call reads before any writes, so exactly one update survives
(final counter 1, as in the reference's trace "all 10 read 0 before any write").
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durable import DurableObject, Worker

N = 10
TRACE: list[str] = []
READS: list[int] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    TRACE.clear()
    READS.clear()


async def all_have_read(tries: int = 1000) -> None:
    """Yield to the loop until all N calls have read (or give up after `tries` yields)."""
    for _ in range(tries):
        if len(READS) >= N:
            return
        await asyncio.sleep(0)


class Counter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.mem = 0

    async def storage_only(self, i: int) -> None:
        TRACE.append(f"r{i} start")
        v = await self.ctx.storage.get("count", 0)
        TRACE.append(f"r{i} read")
        await self.ctx.storage.put("count", v + 1)
        TRACE.append(f"r{i} wrote")

    async def storage_with_yield(self, i: int) -> None:
        v = await self.ctx.storage.get("count", 0)
        await asyncio.sleep(0)
        await self.ctx.storage.put("count", v + 1)

    async def storage_with_barrier(self, i: int) -> None:
        v = await self.ctx.storage.get("count", 0)
        READS.append(v)
        await all_have_read()
        await self.ctx.storage.put("count", v + 1)

    async def memory_with_yield(self, i: int) -> None:
        v = self.mem
        await asyncio.sleep(0)
        self.mem = v + 1

    async def memory_with_barrier(self, i: int) -> None:
        v = self.mem
        READS.append(v)
        await all_have_read()
        self.mem = v + 1

    async def count(self) -> int:
        return await self.ctx.storage.get("count", 0)

    async def memory(self) -> int:
        return self.mem


@pytest.fixture
def worker() -> Worker:
    return Worker(objects={"COUNTER": Counter})


async def call_concurrently(stub: Any, method: str) -> None:
    await asyncio.gather(*(getattr(stub, method)(i) for i in range(N)))


async def test_concurrent_get_then_put_loses_no_update(run: Any, worker: Worker) -> None:
    async with run(worker) as env:
        stub = env.COUNTER.get_by_name("fresh")
        await call_concurrently(stub, "storage_only")
        assert await stub.count() == N


async def test_concurrent_get_then_put_runs_each_call_without_interleaving(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        await call_concurrently(env.COUNTER.get_by_name("fresh"), "storage_only")
    assert len(TRACE) == 3 * N
    for k in range(0, 3 * N, 3):
        who = TRACE[k].split()[0]
        assert TRACE[k : k + 3] == [f"{who} start", f"{who} read", f"{who} wrote"], TRACE


async def test_non_storage_await_between_get_and_put_loses_updates(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.COUNTER.get_by_name("fresh")
        await call_concurrently(stub, "storage_with_yield")
        assert await stub.count() < N


async def test_all_calls_read_before_any_write_when_a_non_storage_await_opens_the_gate(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.COUNTER.get_by_name("fresh")
        await call_concurrently(stub, "storage_with_barrier")
        assert READS == [0] * N
        assert await stub.count() == 1


async def test_in_memory_field_loses_updates_across_a_non_storage_await(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.COUNTER.get_by_name("fresh")
        await call_concurrently(stub, "memory_with_yield")
        assert await stub.memory() < N


async def test_in_memory_field_keeps_one_update_when_all_read_before_writing(
    run: Any, worker: Worker
) -> None:
    async with run(worker) as env:
        stub = env.COUNTER.get_by_name("fresh")
        await call_concurrently(stub, "memory_with_barrier")
        assert READS == [0] * N
        assert await stub.memory() == 1
