"""The reviewed design, reproduced as written (seed ``mission-game-architecture-review``).

It exists to be measured against the sharded design, not fixed. What it does, finding by finding:

1. One object, ``idFromName("scheduler")``, holds every task, every player, the global pool and
   every WebSocket.
2. Each cycle broadcasts the full state (every task and player) to every client twice: after the
   deposit and after the checkpoint.
3. The cycle waits with ``asyncio.sleep`` inside the object (the review's ``setTimeout``), under
   ``ctx.wait_until``, so the object never hibernates while miners run.
4. The page polls ``/api/missions/{m}/tasks`` every 500 ms besides the socket (``poll_ms``).
6. Tasks carry the same fields, but the page of the time computed progress from elapsed time.
7. Two checkpoint writes per cycle: the step at the start and the step again with the deposit.
8. No rate limits, no cap on live miners.
9. No cleanup: finished tasks stay forever.
10. Deploy checks copper in one request and deducts it in another (``OriginalFront.deploy``): two
    tabs double-spend.
11. The pool is a ``global-state`` record created once; if it is lost, every cycle fails and the
    miners stop ("ALL miners break").
12. No game metrics.

Each scheduling rebuilds the whole queue (``_rebuild_queue``: read every task, sort, O(n)) to find
the next alarm, as the review's "queue rebuilds become O(n)".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from durable import DurableObject, ObjectState, Request, Response, WebSocket
from durable.object import AlarmInfo
from examples.mission_game.rules import (
    LIVE,
    ORE_PER_CYCLE,
    GameConfig,
    InsufficientCopper,
    NotRunning,
    Task,
    UnknownMiner,
    UnknownPlayer,
    finish,
    new_task,
)

SCHEDULER = "scheduler"


class OriginalScheduler(DurableObject):
    def __init__(self, ctx: ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.config = GameConfig.of(env)
        self.running: set[str] = set()  # tasks whose cycle is sleeping in this object

    # -- players -------------------------------------------------------------------------------
    async def join(self, name: str, mission: str) -> dict[str, Any]:
        if await self.ctx.storage.get("global-state") is None and not await self._created():
            await self.ctx.storage.put({"global-state": {"ore": 0}, "created": True})
        if await self.ctx.storage.get(f"player:{name}") is None:
            player = {"player": name, "mission": mission, "copper": self.config.starting_copper,
                      "ore": 0, "deployed": 0}  # fmt: skip
            await self.ctx.storage.put(f"player:{name}", player)
        return await self.player(name)

    async def player(self, name: str) -> dict[str, Any]:
        player = await self._player(name)
        tasks = [t for t in (await self._all_tasks()) if t["owner"] == name]
        return {**player, "miners": tasks, "server_time": self._now_ms()}

    async def resources(self, name: str) -> dict[str, Any]:
        return await self._player(name)

    async def set_copper(self, name: str, copper: int) -> None:
        await self.ctx.storage.put(f"player:{name}", {**await self._player(name), "copper": copper})

    # -- tasks -----------------------------------------------------------------------------------
    async def create_task(self, name: str) -> Task:
        player = await self._player(name)
        number = player["deployed"] + 1
        await self.ctx.storage.put(f"player:{name}", {**player, "deployed": number})
        task = new_task(self.config, name, player["mission"], number, self._now_ms())
        await self.ctx.storage.put(f"task:{task['id']}", task)
        await self._rebuild_queue()
        return task

    async def recall(self, name: str, task_id: str) -> Task:
        task = await self.ctx.storage.get(f"task:{task_id}")
        if task is None or task["owner"] != name:
            raise UnknownMiner(task_id)
        if task["status"] != LIVE:
            raise NotRunning(task_id, task["status"])
        task = finish(task, "recalled", self._now_ms())
        await self.ctx.storage.put(f"task:{task_id}", task)
        await self._rebuild_queue()
        return task

    async def tasks(self, mission: str) -> dict[str, Any]:
        tasks = [t for t in await self._all_tasks() if t["mission"] == mission]
        return {"tasks": tasks, "server_time": self._now_ms()}

    async def pool(self) -> dict[str, Any]:
        state = await self.ctx.storage.get("global-state")
        return {"ore": None if state is None else state["ore"], "shards": 1}

    # -- sockets ---------------------------------------------------------------------------------
    async def fetch(self, request: Request) -> Response:
        self.ctx.set_websocket_auto_response(("ping", "pong"))
        accepted = self.ctx.accept_websocket(request)
        accepted.websocket.send(await self._full_state())
        return accepted

    # -- the cycle -------------------------------------------------------------------------------
    async def alarm(self, info: AlarmInfo) -> None:
        now = self._now_ms()
        for task in await self._all_tasks():
            due = task["status"] == LIVE and task["next_cycle_at"] <= now
            if due and task["id"] not in self.running:
                self.running.add(task["id"])
                self.ctx.wait_until(self._process(task["id"]))
        await self._rebuild_queue()

    async def _process(self, task_id: str) -> None:
        try:
            task = await self.ctx.storage.get(f"task:{task_id}")
            await self.ctx.storage.put(f"task:{task_id}", {**task, "step": "mining"})  # write 1
            await asyncio.sleep(task["cycle_ms"] / 1000)  # the review's setTimeout
            task = await self.ctx.storage.get(f"task:{task_id}")
            if task["status"] != LIVE:
                return  # recalled while it slept
            await self._deposit(task)
            self._broadcast(await self._full_state())
            now = self._now_ms()
            cycles = task["cycles"] + 1
            done = cycles >= task["max_cycles"]
            task = {**task, "cycles": cycles, "ore": task["ore"] + ORE_PER_CYCLE,
                    "status": "completed" if done else LIVE, "step": "done",
                    "last_cycle_at": now, "next_cycle_at": now}  # fmt: skip
            await self.ctx.storage.put(f"task:{task_id}", task)  # write 2
            self._broadcast(await self._full_state())
        finally:
            self.running.discard(task_id)
        await self._rebuild_queue()

    async def _deposit(self, task: Task) -> None:
        state = await self.ctx.storage.get("global-state")
        if state is None:
            raise RuntimeError("global-state task is missing: the miner cannot deposit")
        await self.ctx.storage.put("global-state", {"ore": state["ore"] + ORE_PER_CYCLE})
        player = await self._player(task["owner"])
        await self.ctx.storage.put(
            f"player:{task['owner']}", {**player, "ore": player["ore"] + ORE_PER_CYCLE}
        )

    async def _rebuild_queue(self) -> None:
        """Read every task and sort them to find the next one due: O(n) per scheduling."""
        queue = sorted(
            (t for t in await self._all_tasks() if t["status"] == LIVE and t["id"] not in
             self.running), key=lambda t: t["next_cycle_at"])  # fmt: skip
        if queue:
            await self.ctx.storage.set_alarm(max(queue[0]["next_cycle_at"], self._now_ms()))

    def _broadcast(self, frame: str) -> None:
        for ws in self.ctx.get_websockets():
            ws.send(frame)

    async def _full_state(self) -> str:
        tasks = await self._all_tasks()
        players = await self.ctx.storage.list(prefix="player:")
        return json.dumps({"type": "snapshot", "tasks": tasks, "server_time": self._now_ms(),
                           "players": [_totals(p) for p in players.values()]})  # fmt: skip

    async def _all_tasks(self) -> list[Task]:
        tasks = await self.ctx.storage.list(prefix="task:")
        return [{k: v for k, v in t.items() if k != "step"} for t in tasks.values()]

    async def _player(self, name: str) -> dict[str, Any]:
        player: dict[str, Any] | None = await self.ctx.storage.get(f"player:{name}")
        if player is None:
            raise UnknownPlayer(name)
        return player

    async def _created(self) -> bool:
        return bool(await self.ctx.storage.get("created"))

    def _now_ms(self) -> int:
        return int(self.ctx.now() * 1000)


def _totals(player: dict[str, Any]) -> dict[str, Any]:
    return {"player": player["player"], "copper": player["copper"], "ore": player["ore"]}


class OriginalFront:
    """The original routes: everything goes to the one ``scheduler`` object."""

    def _scheduler(self, env: Any) -> Any:
        return env.SCHEDULER.get_by_name(SCHEDULER)

    async def join(self, env: Any, name: str, mission: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._scheduler(env).join(name, mission)
        return result

    async def player(self, env: Any, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._scheduler(env).player(name)
        return result

    async def deploy(self, env: Any, name: str) -> dict[str, Any]:
        """Check, create, then deduct: three requests, so concurrent deploys double-spend."""
        scheduler = self._scheduler(env)
        resources = await scheduler.resources(name)
        cost = GameConfig.of(env).miner_cost
        if resources["copper"] < cost:
            raise InsufficientCopper(resources["copper"], cost)
        task = await scheduler.create_task(name)
        await scheduler.set_copper(name, resources["copper"] - cost)
        return {"task": task, "copper": resources["copper"] - cost}

    async def recall(self, env: Any, name: str, task_id: str) -> dict[str, Any]:
        return {"task": await self._scheduler(env).recall(name, task_id)}

    async def tasks(self, env: Any, mission: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._scheduler(env).tasks(mission)
        return result

    async def pool(self, env: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._scheduler(env).pool()
        return result

    async def socket(self, env: Any, websocket: WebSocket, mission: str) -> Response:
        response: Response = await self._scheduler(env).fetch(websocket)
        return response
