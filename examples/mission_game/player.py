"""``Player``: one object per player name; owns the player's copper, ore and miner list.

Guarantees:
- No double spending (finding 10): ``deploy`` checks the copper, the live-miner count (at most
  10) and deducts the cost inside one ``storage.transaction``. Storage calls never suspend an
  object's turn, so two tabs deploying at once are serialised here: with copper for three miners,
  exactly three deploys succeed however many arrive together.
- Rate limits per action (finding 8): deploy 10/min, recall 30/min, join 30/min, token buckets
  (``durable.patterns.RateLimiter``) on the object's clock. A refused call (``RateLimited`` →
  HTTP 429 + ``Retry-After``) reads and writes nothing.
- Credits are idempotent: a shard may deliver a miner's state more than once (at-least-once
  retries); a state is applied only if it is later than the stored one (``rules.newer``), and ore
  is credited as the difference, so no cycle is counted twice or lost.

Does not guarantee: the buckets live in memory, so they refill when the object is evicted (after
10 s without any event, which is itself slower than the limits). If the scheduler shard cannot be
reached while deploying, the copper is refunded and the miner recorded as failed; should the shard
have started it after all, its first cycle revives the record (the player keeps a free miner).

On failure: game errors (``rules.GameError``) leave storage as it was; the caller gets them with
their HTTP status.
"""

from __future__ import annotations

from typing import Any

from durable import DurableObject, ObjectState
from durable.patterns import RateLimiter
from durable.storage import Transaction
from examples.mission_game.rules import (
    LIVE,
    MAX_LIVE_MINERS,
    GameConfig,
    InsufficientCopper,
    NotRunning,
    Task,
    TooManyMiners,
    UnknownMiner,
    UnknownPlayer,
    check_name,
    delete_all,
    finish,
    get_all,
    new_task,
    newer,
    put_all,
)
from examples.mission_game.scheduler import TaskRouter

ACTIONS_PER_MINUTE = {"join": 30, "deploy": 10, "recall": 30}


class Player(DurableObject):
    def __init__(self, ctx: ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.config = GameConfig.of(env)
        self.name = str(ctx.id.name)
        self.router = TaskRouter(env, self.config)
        self.limits = {
            action: RateLimiter(rate, 60.0, clock=ctx.now, name=f"{action} ({rate}/min)")
            for action, rate in ACTIONS_PER_MINUTE.items()
        }

    # -- actions ---------------------------------------------------------------------------------
    async def join(self, mission: str) -> dict[str, Any]:
        """Create the player (starting copper) or return it as it is: joining is idempotent."""
        self.limits["join"].acquire(self.name)
        check_name(mission, "mission")
        if await self.ctx.storage.get("profile") is None:
            profile = {"player": self.name, "mission": mission, "ore": 0, "deployed": 0,
                       "copper": self.config.starting_copper}  # fmt: skip
            await self.ctx.storage.put("profile", profile)
        return await self.view()

    async def view(self) -> dict[str, Any]:
        profile = await self._profile()
        miners = await self.ctx.storage.list(prefix="miner:")
        return {
            **self._totals(profile),
            "mission": profile["mission"],
            "miners": [record["task"] for record in miners.values()],
            "server_time": self._now_ms(),
        }

    async def deploy(self) -> dict[str, Any]:
        """Pay for a miner and start it on its scheduler shard; returns the task and copper."""
        self.limits["deploy"].acquire(self.name)
        record: dict[str, Any] = await self.ctx.storage.transaction(self._reserve)
        task = record["task"]
        try:
            await self.env.SCHEDULER.get_by_name(record["shard"]).start(task)
        except Exception:
            await self._refund(record)
            raise
        profile = await self._profile()
        return {"task": task, "copper": profile["copper"]}

    async def recall(self, task_id: str) -> dict[str, Any]:
        self.limits["recall"].acquire(self.name)
        await self._profile()
        record = await self.ctx.storage.get(f"miner:{task_id}")
        if record is None:
            raise UnknownMiner(task_id)
        if record["task"]["status"] != LIVE:
            raise NotRunning(task_id, record["task"]["status"])
        task = await self.env.SCHEDULER.get_by_name(record["shard"]).recall(task_id)
        await self.credit([task])
        return {"task": task}

    # -- from the scheduler shards -----------------------------------------------------------------
    async def credit(self, tasks: list[Task]) -> dict[str, Any]:
        """Apply miner states delivered by a shard; returns the player's totals afterwards."""
        profile = await self._profile()
        keys = [f"miner:{task['id']}" for task in tasks]
        records = await get_all(self.ctx.storage, keys)
        changed: dict[str, Any] = {}
        for key, task in zip(keys, tasks, strict=True):
            record = changed.get(key, records.get(key))
            if record is not None and not task.get("deleted") and newer(task, record["task"]):
                profile = {**profile, "ore": profile["ore"] + task["ore"] - record["task"]["ore"]}
                changed[key] = {**record, "task": task}
        gone = [key for key, task in zip(keys, tasks, strict=True) if task.get("deleted")]
        await delete_all(self.ctx.storage, gone)
        if changed:
            await put_all(self.ctx.storage, {**changed, "profile": profile})
        return self._totals(profile)

    # -- internals ---------------------------------------------------------------------------------
    async def _reserve(self, txn: Transaction) -> dict[str, Any]:
        """Check and deduct the cost and record the miner, in the caller's transaction."""
        profile = await txn.get("profile")
        if profile is None:
            raise UnknownPlayer(self.name)
        miners = await txn.list(prefix="miner:")
        if sum(r["task"]["status"] == LIVE for r in miners.values()) >= MAX_LIVE_MINERS:
            raise TooManyMiners()
        cost = self.config.miner_cost
        if profile["copper"] < cost:
            raise InsufficientCopper(profile["copper"], cost)
        number = profile["deployed"] + 1
        task = new_task(self.config, self.name, profile["mission"], number, self._now_ms())
        shard = self.router.name_for(task)
        record = {"task": task, "shard": shard}
        profile = {**profile, "copper": profile["copper"] - cost, "deployed": number}
        await txn.put({"profile": profile, f"miner:{task['id']}": record})
        return record

    async def _refund(self, record: dict[str, Any]) -> None:
        profile = await self._profile()
        failed = finish(record["task"], "failed", self._now_ms())
        await self.ctx.storage.put(
            {
                "profile": {**profile, "copper": profile["copper"] + self.config.miner_cost},
                f"miner:{failed['id']}": {**record, "task": failed},
            }
        )

    async def _profile(self) -> dict[str, Any]:
        profile: dict[str, Any] | None = await self.ctx.storage.get("profile")
        if profile is None:
            raise UnknownPlayer(self.name)
        return profile

    def _totals(self, profile: dict[str, Any]) -> dict[str, Any]:
        return {"player": self.name, "copper": profile["copper"], "ore": profile["ore"]}

    def _now_ms(self) -> int:
        return int(self.ctx.now() * 1000)
