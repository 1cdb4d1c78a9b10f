"""``GlobalState``: the mission-wide ore pool, one object (``global-state``), rebuilt if lost.

Each scheduler shard deposits its *cumulative* ore (everything its miners ever mined) and the
pool is the sum over shards of the largest total each has sent::

    shards = {"scheduler-3": 120, "scheduler-7": 45}   →   pool = 165

Guarantees (finding 11):
- Idempotent: a repeated or late deposit (at-least-once retries) changes nothing, because a
  shard's total only grows and the pool keeps the largest.
- Recreated automatically: if the object's storage is lost (wiped, reset), the next deposit of
  each shard carries everything that shard ever mined, so the pool is whole again once every
  shard with miners has deposited; nothing is counted twice. ``created_at`` (in ``pool()``) tells
  when the current pool was started.
- While it is unreachable, shards keep their totals and retry on their next alarm: miners never
  stop because of it (the original's "if global-state fails, ALL miners break").

Does not guarantee: a shard whose miners have all retired deposits again only when it next runs
an alarm (a new miner or a cleanup), so a pool rebuilt after a loss may lag behind until then.
"""

from __future__ import annotations

from typing import Any

from durable import DurableObject


class GlobalState(DurableObject):
    async def deposit(self, shard: str, mined_total: int) -> int:
        """Record ``shard``'s cumulative ore; returns the pool."""
        storage = self.ctx.storage
        shards: dict[str, int] = await storage.get("shards") or {}
        if await storage.get("created_at") is None:
            await storage.put("created_at", int(self.ctx.now() * 1000))
        if mined_total > shards.get(shard, 0):
            shards[shard] = mined_total
            await storage.put("shards", shards)
        return sum(shards.values())

    async def pool(self) -> dict[str, Any]:
        shards: dict[str, int] = await self.ctx.storage.get("shards") or {}
        created_at = await self.ctx.storage.get("created_at")
        return {"ore": sum(shards.values()), "shards": len(shards), "created_at": created_at}
