"""The mining mission game: the Worker (HTTP API, WebSocket route, cron, the page at ``/``).

``durable dev`` (no arguments: ``[tool.durable] app`` in pyproject.toml) serves it on port 8787,
sharded; ``DESIGN=original durable dev`` serves the reviewed design. Run from the repository root
(the modules import as ``examples.mission_game.*``). The protocol is in README.md; both designs
speak it, so the page and the load study (``benchmarks/mission_game.py``) drive either.

Bindings: sharded — ``SCHEDULER`` (``scheduler.SchedulerShard``), ``PLAYER``, ``ROOM``,
``GLOBAL``, ``LEADERBOARD``; original — ``SCHEDULER`` (``original.OriginalScheduler``, the one
object named ``scheduler``) and ``LEADERBOARD``. Both: ``DB`` (SQL, the leaderboard's tables,
``MISSION_DB`` or ``sqlite:///.durable/mission_game.db``) and the game's vars (``rules``).

Guarantees: every refused request gets ``{"error": Name, "message": text}``: 400 ``BadInput`` or
``MalformedJSON``, 404 ``UnknownPlayer``/``UnknownMiner``, 409 ``InsufficientCopper``/
``TooManyMiners``/``NotRunning``, 429 ``RateLimited``/``BatchTooLarge`` with ``Retry-After``, 503
``Overloaded`` with ``Retry-After``; input is checked before any object is called, so a bad
request writes nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from durable import JSONResponse, Request, Response, WebSocket, Worker
from durable.patterns import RateLimiter
from examples.mission_game.global_state import GlobalState
from examples.mission_game.leaderboard import (
    Leaderboard,
    RankCache,
    aggregate,
    boards,
    client_events,
)
from examples.mission_game.original import OriginalFront, OriginalScheduler
from examples.mission_game.player import Player
from examples.mission_game.room import MissionRoom
from examples.mission_game.rules import (
    BadInput,
    BatchTooLarge,
    GameConfig,
    GameError,
    check_name,
    check_task_id,
)
from examples.mission_game.scheduler import SchedulerShard
from examples.mission_game.telemetry import GameCollector

WEB = Path(__file__).parent / "web"
DEFAULT_DB = "sqlite:///.durable/mission_game.db"
EVENT_BATCHES_PER_MINUTE = 60  # per client address


class Front(Protocol):
    """What the routes need from a design (``ShardedFront`` here, ``original.OriginalFront``)."""

    async def join(self, env: Any, name: str, mission: str) -> dict[str, Any]: ...
    async def player(self, env: Any, name: str) -> dict[str, Any]: ...
    async def deploy(self, env: Any, name: str) -> dict[str, Any]: ...
    async def recall(self, env: Any, name: str, task_id: str) -> dict[str, Any]: ...
    async def tasks(self, env: Any, mission: str) -> dict[str, Any]: ...
    async def pool(self, env: Any) -> dict[str, Any]: ...
    async def socket(self, env: Any, websocket: WebSocket, mission: str) -> Response: ...


class ShardedFront:
    """Each request goes to the object that owns what it touches: a player, a room, the pool."""

    async def join(self, env: Any, name: str, mission: str) -> dict[str, Any]:
        result: dict[str, Any] = await env.PLAYER.get_by_name(name).join(mission)
        return result

    async def player(self, env: Any, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await env.PLAYER.get_by_name(name).view()
        return result

    async def deploy(self, env: Any, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await env.PLAYER.get_by_name(name).deploy()
        return result

    async def recall(self, env: Any, name: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await env.PLAYER.get_by_name(name).recall(task_id)
        return result

    async def tasks(self, env: Any, mission: str) -> dict[str, Any]:
        result: dict[str, Any] = await env.ROOM.get_by_name(mission).view()
        return result

    async def pool(self, env: Any) -> dict[str, Any]:
        result: dict[str, Any] = await env.GLOBAL.get_by_name("global-state").pool()
        return result

    async def socket(self, env: Any, websocket: WebSocket, mission: str) -> Response:
        response: Response = await env.ROOM.get_by_name(mission).fetch(websocket)
        return response


def game_error(error: GameError) -> JSONResponse:
    body: dict[str, Any] = {"error": error.name, "message": str(error)}
    headers = None
    if isinstance(error, BatchTooLarge):
        body["retry_after"] = error.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return JSONResponse(body, error.status, headers)


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object body (``{}`` for an empty body when ``optional``)."""
    raw = await request.body()
    if optional and not raw.strip():
        return {}
    body = json.loads(raw)  # JSONDecodeError → the gateway's 400 MalformedJSON
    if not isinstance(body, dict):
        raise BadInput("The body must be a JSON object.")
    return body


Handler = Callable[[Request, Any], Awaitable[Response]]


class Api:
    """The routes of one worker, bound to its design."""

    def __init__(self, front: Front, config: GameConfig) -> None:
        self.front = front
        self.config = config
        self.ranks = RankCache()
        self.event_limits = RateLimiter(EVENT_BATCHES_PER_MINUTE, 60.0, name="event batches")

    def routes(self) -> list[tuple[str, list[str], Handler]]:
        return [
            ("/api/join", ["POST"], self.join),
            ("/api/players/{name}", ["GET"], self.player),
            ("/api/players/{name}/miners", ["POST"], self.deploy),
            ("/api/players/{name}/miners/{task_id}/recall", ["POST"], self.recall),
            ("/api/missions/{mission}/tasks", ["GET"], self.tasks),
            ("/api/leaderboard", ["GET"], self.leaderboard),
            ("/api/events", ["POST"], self.events),
            ("/api/global", ["GET"], self.pool),
            ("/api/config", ["GET"], self.settings),
        ]

    async def join(self, request: Request, env: Any) -> Response:
        body = await json_object(request)
        name = check_name(body.get("name"), "name")
        mission = check_name(body.get("mission", "alpha"), "mission")
        return JSONResponse(await self.front.join(env, name, mission))

    async def player(self, request: Request, env: Any) -> Response:
        name = check_name(request.path_params["name"], "player name")
        return JSONResponse(await self.front.player(env, name))

    async def deploy(self, request: Request, env: Any) -> Response:
        name = check_name(request.path_params["name"], "player name")
        await json_object(request, optional=True)
        return JSONResponse(await self.front.deploy(env, name))

    async def recall(self, request: Request, env: Any) -> Response:
        name = check_name(request.path_params["name"], "player name")
        task_id = check_task_id(request.path_params["task_id"])
        await json_object(request, optional=True)
        return JSONResponse(await self.front.recall(env, name, task_id))

    async def tasks(self, request: Request, env: Any) -> Response:
        mission = check_name(request.path_params["mission"], "mission")
        return JSONResponse(await self.front.tasks(env, mission))

    async def leaderboard(self, request: Request, env: Any) -> Response:
        raw = request.query_params.get("limit", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise BadInput(f"limit must be an integer from 1 to 100, not {raw!r}.")
        return JSONResponse(await self.ranks.ranks(env, int(raw)))

    async def events(self, request: Request, env: Any) -> Response:
        client = request.client.host if request.client else "unknown"
        self.event_limits.acquire(client)
        events = client_events(await json_object(request))
        board = boards(env).get(client)  # spread clients over the buffers
        return JSONResponse({"accepted": await board.ingest(events)}, 202)

    async def pool(self, request: Request, env: Any) -> Response:
        return JSONResponse(await self.front.pool(env))

    async def settings(self, request: Request, env: Any) -> Response:
        config = self.config
        return JSONResponse({"design": config.design, "strategy": config.strategy,
                             "shards": config.shards, "cycle_ms": config.cycle_ms,
                             "max_cycles": config.max_cycles, "miner_cost": config.miner_cost,
                             "poll_ms": 500 if config.design == "original" else None})  # fmt: skip

    async def socket(self, websocket: WebSocket, env: Any) -> Response:
        try:
            mission = check_name(websocket.path_params["mission"], "mission")
        except GameError as error:
            return game_error(error)
        return await self.front.socket(env, websocket, mission)

    async def cron(self, event: Any, env: Any) -> None:
        await aggregate(env)


def guarded(handler: Handler) -> Handler:
    """``handler`` with game errors answered as their JSON body and status."""

    async def route(request: Request, env: Any) -> Response:
        try:
            return await handler(request, env)
        except GameError as error:
            return game_error(error)

    return route


SHARDED = {"SCHEDULER": SchedulerShard, "PLAYER": Player, "ROOM": MissionRoom,
           "GLOBAL": GlobalState, "LEADERBOARD": Leaderboard}  # fmt: skip
ORIGINAL = {"SCHEDULER": OriginalScheduler, "LEADERBOARD": Leaderboard}


def build_worker(
    values: Mapping[str, Any] | None = None,
    *,
    database: str | None = None,
    idle_timeout: float = 10.0,
) -> Worker:
    """The game's Worker: environment variables, overridden by ``values`` (tests pass these)."""
    settings = {**GameConfig.from_environ(), **(values or {})}
    config = GameConfig.from_vars(settings)
    sharded = config.design == "sharded"
    worker = Worker(
        objects=SHARDED if sharded else ORIGINAL,
        databases={"DB": database or os.environ.get("MISSION_DB", DEFAULT_DB)},
        vars=settings,
        idle_timeout=idle_timeout,
    )
    api = Api(ShardedFront() if sharded else OriginalFront(), config)
    for path, methods, handler in api.routes():
        worker.route(path, methods)(guarded(handler))
    worker.websocket_route("/ws/{mission}")(api.socket)
    worker.cron("* * * * *")(api.cron)
    worker.static("/", WEB)
    worker.metrics(GameCollector())
    return worker


worker = build_worker()
