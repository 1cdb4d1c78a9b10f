"""``MissionRoom``: one object per mission; holds the mission's WebSockets and its task view.

Guarantees (finding 2):
- A client gets the full snapshot once, when it connects (``{"type": "snapshot", ...}``), then
  only deltas: the tasks that changed, the ids removed, the players whose totals changed.
- At most 10 broadcasts per second per room: changes published by the shards accumulate in
  ``pending`` and the room's alarm sends them as one delta, at least ``MIN_GAP_MS`` (100 ms) after
  the previous one. Each delta is one frame for every socket (one push to the gateway).
- No timers in the object (finding 3): the wait between deltas is the alarm; the sockets are
  hibernatable, so an idle room is evicted with its clients still connected, and ``ping`` is
  answered by the gateway (auto-response) without waking it.
- The view (``task:<id>``) and ``pending`` are in storage, so a room evicted between a publish
  and its alarm still sends the delta.

Does not guarantee: that a client sees every intermediate state; it sees the latest state of each
changed task at the next delta. A client that missed deltas (reconnect) gets a fresh snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from durable import DurableObject, ObjectState, Request, Response
from durable.object import AlarmInfo
from examples.mission_game import telemetry
from examples.mission_game.rules import NAME, Task, delete_all, get_all, put_all

MIN_GAP_MS = 100  # 10 broadcasts/s


class MissionRoom(DurableObject):
    def __init__(self, ctx: ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.last_sent = 0

    async def fetch(self, request: Request) -> Response:
        """Accept a WebSocket upgrade (``/ws/{mission}?player=...``) and send the snapshot."""
        player = request.query_params.get("player", "")
        tags = [player] if NAME.fullmatch(player) else []
        self.ctx.set_websocket_auto_response(("ping", "pong"))  # before accept: its 101 says so
        accepted = self.ctx.accept_websocket(request, tags=tags)
        frame = {"type": "snapshot", "tasks": await self.tasks(), "server_time": self._now_ms()}
        accepted.websocket.send(json.dumps(frame))
        return accepted

    async def tasks(self) -> list[Task]:
        """The mission's tasks (the snapshot)."""
        return list((await self.ctx.storage.list(prefix="task:")).values())

    async def view(self) -> dict[str, Any]:
        """``GET /api/missions/{mission}/tasks``: the polling fallback."""
        return {"tasks": await self.tasks(), "server_time": self._now_ms()}

    async def publish(self, tasks: list[Task], players: list[dict[str, Any]]) -> None:
        """Record changed tasks and player totals; they leave with the next delta."""
        storage = self.ctx.storage
        pending = await storage.get("pending") or {"tasks": [], "removed": [], "players": {}}
        changed, removed = set(pending["tasks"]), set(pending["removed"])
        gone = {task["id"] for task in tasks if task.get("deleted")}
        kept = {f"task:{task['id']}": task for task in tasks if task["id"] not in gone}
        await delete_all(storage, [f"task:{i}" for i in gone])
        await put_all(storage, kept)
        changed = (changed - gone) | {task["id"] for task in kept.values()}
        removed = (removed | gone) - changed
        for totals in players:
            pending["players"][totals["player"]] = totals
        pending = {
            "tasks": sorted(changed),
            "removed": sorted(removed),
            "players": pending["players"],
        }
        await storage.put("pending", pending)
        if await storage.get_alarm() is None:
            await storage.set_alarm(max(self._now_ms(), self.last_sent + MIN_GAP_MS))

    async def alarm(self, info: AlarmInfo) -> None:
        pending = await self.ctx.storage.get("pending")
        await self.ctx.storage.delete("pending")
        self.last_sent = self._now_ms()
        sockets = self.ctx.get_websockets()
        if pending is None or not sockets:
            return
        frame = json.dumps(
            {
                "type": "delta",
                "tasks": await self._changed(pending["tasks"]),
                "removed": pending["removed"],
                "players": list(pending["players"].values()),
                "server_time": self.last_sent,
            }
        )
        for ws in sockets:
            ws.send(frame)
        telemetry.GAME.broadcast(frame, len(sockets))

    async def _changed(self, ids: list[str]) -> list[Task]:
        return list((await get_all(self.ctx.storage, [f"task:{i}" for i in ids])).values())

    def _now_ms(self) -> int:
        return int(self.ctx.now() * 1000)
