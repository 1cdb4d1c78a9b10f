"""Shard objects and workers the router tests share."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from typing import Any

from durable import Worker
from durable.routers import ShardObject, shard_wide

# Events a test sets to release a stalled shard (keyed by object name); module-level because
# objects are built by the runtime, not by the test.
STALLS: dict[str, asyncio.Event] = {}


class Ledger(ShardObject):
    """Per key: a counter ``n`` and one row per write (``op:<id>``), so duplicates show."""

    async def write(self, key: str, op: int) -> int:
        scope = self.scope(key)
        n = await scope.get("n", 0) + 1
        await scope.put({"n": n, f"op:{op:08d}": op})
        return n

    async def read(self, key: str) -> int:
        value: int = await self.scope(key).get("n", 0)
        return value

    async def ops(self, key: str) -> list[int]:
        rows = await self.scope(key).list(prefix="op:")
        return sorted(rows.values())

    async def slow_write(self, key: str, op: int, gate: str) -> int:
        """Write after a non-storage await (so a move must wait for this call to drain)."""
        await STALLS[gate].wait()
        return await self.write(key, op)

    async def relay(self, key: str, target: str, op: int) -> int:
        """Write ``key`` at another object from inside this object's call for ``key``."""
        result: int = await self.env.LEDGER.get_by_name(target).write(key, op)
        return result

    @shard_wide
    async def keys(self) -> list[str]:
        return await self.route_keys()

    @shard_wide
    async def total(self) -> int:
        rows = await self.ctx.storage.list(start="\x01")
        return sum(v for k, v in rows.items() if k.endswith("\x00n"))

    @shard_wide
    async def stall(self) -> str:
        await STALLS[self.ctx.id.name or ""].wait()
        return "released"

    @shard_wide
    async def fail(self) -> None:
        raise ValueError(f"{self.ctx.id.name} is broken")

    @shard_wide
    async def whoami(self) -> str:
        return self.ctx.id.name or ""


class Board(ShardObject):
    """A leaderboard shard: points per player."""

    async def add(self, player: str, points: int) -> int:
        scope = self.scope(player)
        total: int = await scope.get("points", 0) + points
        await scope.put("points", total)
        return total

    async def profile(self, player: str) -> dict[str, Any]:
        return {"points": await self.scope(player).get("points", 0), "player": player}


def ledger_worker(**kw: Any) -> Worker:
    return Worker(objects={"LEDGER": Ledger, "NEW": Ledger}, **kw)


class Traffic:
    """Writers and readers running against a router until stopped; they record what was acked."""

    def __init__(self, router: Any, keys: list[str], writers: int = 6, readers: int = 2) -> None:
        self.router = router
        self.keys = keys
        self.acked: dict[str, list[int]] = defaultdict(list)
        self.seen: dict[str, int] = defaultdict(int)
        self.backwards: list[tuple[str, int, int]] = []
        self.during = 0  # writes acknowledged while the router was moving keys
        self._ops = itertools.count(1)
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(i)) for i in range(writers)]
        self._tasks += [asyncio.create_task(self._read(i)) for i in range(readers)]

    def moving(self) -> bool:
        stats = self.router.statistics()
        sweep = getattr(stats, "reshard", None) or getattr(stats, "sweep", None)
        return bool(sweep and sweep.running)

    async def _write(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            key, op = rng.choice(self.keys), next(self._ops)
            await self.router.call(key, "write", op)
            self.acked[key].append(op)
            self.during += self.moving()

    async def _read(self, seed: int) -> None:
        rng = random.Random(100 + seed)
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            n = await self.router.call(key, "read")
            if n < self.seen[key]:
                self.backwards.append((key, self.seen[key], n))
            self.seen[key] = max(self.seen[key], n)
            await asyncio.sleep(0)  # a yield, not a wait: an in-process read never suspends

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def check(self, router: Any | None = None) -> None:
        """Every acknowledged op is stored once, at one object, and n counts them."""
        router = router or self.router
        assert not self.backwards
        for key in self.keys:
            assert await router.call(key, "ops") == sorted(self.acked[key]), key
            assert await router.call(key, "read") == len(self.acked[key]), key
