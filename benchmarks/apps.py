"""The workers the HTTP benchmark serves (importable as ``benchmarks.apps``, also by Ray hosts).

``worker``: the counter of ``examples/counter.py`` (``GET /counter/{name}``; ``GET /rpc/{name}``
calls its ``increment`` over RPC from the route, as ``reference/worker.mjs`` does on workerd), a
broadcast room (``/ws/{room}``) and ``BLOB``, an SQL object of any size. ``dedicated``: the same
counter with ``placement="dedicated"``, the baseline of one Ray actor per object.
"""

from __future__ import annotations

from typing import Any

from durable import DurableObject, JSONResponse, Request, Worker
from examples.counter import Counter


class Room(DurableObject):
    async def fetch(self, request: Request) -> Any:
        return self.ctx.accept_websocket(request, tags=["room"])

    async def websocket_message(self, ws: Any, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("B:"):
            for other in self.ctx.get_websockets():
                other.send(message)


class Blob(DurableObject):
    """An SQL object (its own file) of ``fill(mb)`` megabytes: ``benchmarks/moves.py`` moves one
    over 100 MiB."""

    async def fill(self, mb: int) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
        for _ in range(mb):  # rows under the 2 MB row limit
            sql.exec("INSERT INTO blobs VALUES (randomblob(1000000))")
        return int(sql.exec("SELECT count(*) AS n FROM blobs").one()["n"])

    async def rows(self) -> int:
        return int(self.ctx.storage.sql.exec("SELECT count(*) AS n FROM blobs").one()["n"])


def make_worker(placement: str = "packed") -> Worker:
    worker = Worker(
        objects={"COUNTER": Counter, "ROOM": Room, "BLOB": Blob},
        idle_timeout=2.0,
        placement={"COUNTER": placement},  # type: ignore[dict-item]
    )

    @worker.route("/counter/{name}")
    async def counter(request: Request, env: Any) -> Any:
        return await env.COUNTER.get_by_name(request.path_params["name"]).fetch(request)

    @worker.route("/rpc/{name}")
    async def rpc(request: Request, env: Any) -> Any:
        return JSONResponse(
            {"n": await env.COUNTER.get_by_name(request.path_params["name"]).increment()}
        )

    @worker.websocket_route("/ws/{room}")
    async def room(websocket: Any, env: Any) -> Any:
        return await env.ROOM.get_by_name(websocket.path_params["room"]).fetch(websocket)

    return worker


worker = make_worker()
dedicated = make_worker("dedicated")
