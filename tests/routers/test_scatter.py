"""scatter: every shard at once; partial results plus per-shard errors on timeouts and failures."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import durable
from durable.clock import SystemClock
from durable.routers import FeatureRouter, HashRouter, ScatterResult
from durable.testing import VirtualClock, wait_all_tasks_blocked
from tests.routers.apps import STALLS, ledger_worker


async def test_scatter_gathers_every_shard_in_router_order(run: Any, clock: VirtualClock) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=4, clock=clock)
        for i in range(40):
            await router.call(f"k{i}", "write", i)
        result = await router.scatter(lambda s: s.total(), timeout=1.0)
        assert isinstance(result, ScatterResult) and result.complete
        assert list(result.results) == ["shard-0", "shard-1", "shard-2", "shard-3"]
        assert sum(result.results.values()) == 40


async def test_a_failing_shard_is_reported_and_the_others_answer(
    run: Any, clock: VirtualClock
) -> None:
    async with run(ledger_worker()) as env:
        router = FeatureRouter(env.LEDGER, ["ok", "broken"], clock=clock)

        async def probe(stub: Any) -> str:
            return await (stub.fail() if stub.name == "broken" else stub.whoami())

        result = await router.scatter(probe, timeout=1.0)
        assert result.results == {"ok": "ok"}
        assert not result.complete
        assert isinstance(result.errors["broken"], ValueError)
        assert str(result.errors["broken"]) == "broken is broken"


async def test_a_slow_shard_times_out_on_the_virtual_clock_and_is_cancelled(
    run: Any, clock: VirtualClock
) -> None:
    async with run(ledger_worker()) as env:
        router = HashRouter(env.LEDGER, shards=3, clock=clock)
        for name in ("shard-0", "shard-2"):
            STALLS[name] = asyncio.Event()
            STALLS[name].set()
        STALLS["shard-1"] = asyncio.Event()  # never set
        try:
            task = asyncio.create_task(router.scatter(lambda s: s.stall(), timeout=2.5))
            await wait_all_tasks_blocked()
            assert not task.done()
            await clock.advance(2.4)
            assert not task.done()
            await clock.advance(0.1)
            result = await task
        finally:
            STALLS.clear()
        assert result.results == {"shard-0": "released", "shard-2": "released"}
        error = result.errors["shard-1"]
        assert isinstance(error, TimeoutError)
        assert str(error) == "shard-1 did not answer within 2.5 s; its call was cancelled."


async def test_a_real_small_timeout_returns_partial_results(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = FeatureRouter(env.LEDGER, ["fast", "slow"], clock=SystemClock())
        STALLS["fast"] = asyncio.Event()
        STALLS["fast"].set()
        STALLS["slow"] = asyncio.Event()
        try:
            result = await router.scatter(lambda s: s.stall(), timeout=0.05)
        finally:
            STALLS.clear()
        assert result.results == {"fast": "released"}
        assert list(result.errors) == ["slow"]


async def test_cancelling_a_scatter_cancels_its_calls(run: Any, clock: VirtualClock) -> None:
    async with run(ledger_worker()) as env:
        router = FeatureRouter(env.LEDGER, ["a"], clock=clock)
        STALLS["a"] = asyncio.Event()
        try:
            task = asyncio.create_task(router.scatter(lambda s: s.stall(), timeout=60))
            await wait_all_tasks_blocked()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_all_tasks_blocked()
            assert await router.get("a").whoami() == "a"  # the object is free again
        finally:
            STALLS.clear()


@pytest.mark.parametrize("timeout", [0, -1, "1", None, True])
async def test_timeout_must_be_positive(run: Any, timeout: object) -> None:
    async with run(ledger_worker()) as env:
        with pytest.raises(
            durable.InvalidArgument, match=re.escape(f"positive number, not {timeout!r}")
        ):
            await HashRouter(env.LEDGER, shards=2).scatter(lambda s: s.whoami(), timeout=timeout)  # type: ignore[arg-type]


async def test_routers_without_a_fixed_set_cannot_scatter(run: Any) -> None:
    from durable.routers import TemplateRouter

    async with run(ledger_worker()) as env:
        with pytest.raises(durable.InvalidRouteKey, match="has no fixed set of objects"):
            await TemplateRouter(env.LEDGER, "u-{u}").scatter(lambda s: s.whoami(), timeout=1)
