"""The worker the Ray suite serves (``tests.ray.apps:worker``): conformance classes, and probes.

Ray workers import this as ``tests.ray.apps`` (the repo root is on their ``PYTHONPATH``), and so
does the test process, so an exception class defined here or in a conformance module has the
same module path on both sides and is re-raised as itself.

``Tally`` counts calls and stores, with each count, the pid and Ray node of the process that ran
it: crash and fencing tests read those to check that no write was lost or applied twice, and that
an object never ran in two processes at once. ``Room`` (``/room/{name}``) broadcasts each message
to its WebSockets, wherever they connected.
"""

from __future__ import annotations

import os
from typing import Any

from durable import DurableObject, JSONResponse, Request, Response, WebSocket, Worker
from tests.conformance.test_ids import IdProbe
from tests.conformance.test_input_gates import Counter
from tests.conformance.test_list import Lister
from tests.conformance.test_rpc import NoFetch, Rpc
from tests.conformance.test_sql import SqlProbe
from tests.conformance.test_transaction import Txn
from tests.routers.apps import ledger_worker


def node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class Tally(DurableObject):
    async def increment(self) -> dict[str, Any]:
        n = await self.ctx.storage.get("n", 0) + 1
        where = {"n": n, "pid": os.getpid(), "node": node_id()}
        await self.ctx.storage.put({"n": n, f"at:{n:09d}": where})  # one commit, one turn
        return where

    async def value(self) -> int:
        return int(await self.ctx.storage.get("n", 0))

    async def history(self) -> list[dict[str, Any]]:
        """Every count with the process that made it, in order."""
        return list((await self.ctx.storage.list(prefix="at:")).values())

    async def fetch(self, request: Request) -> Response:
        return JSONResponse(await self.increment())


class Alarmed(DurableObject):
    """Sets an alarm on the real clock and remembers each time it fired."""

    async def arm(self, delay_ms: int) -> int:
        at = int(self.ctx.now() * 1000) + delay_ms
        await self.ctx.storage.set_alarm(at)
        return at

    async def alarm(self, info: Any) -> None:
        fired = await self.ctx.storage.get("fired", [])
        fired.append(
            {
                "scheduled_time": info.scheduled_time,
                "retry_count": info.retry_count,
                "now_ms": int(self.ctx.now() * 1000),
                "get_alarm": await self.ctx.storage.get_alarm(),
            }
        )
        await self.ctx.storage.put("fired", fired)

    async def fired(self) -> list[dict[str, Any]]:
        return list(await self.ctx.storage.get("fired", []))

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()


class Failing(DurableObject):
    """Writes, then raises the exception class named: the write is kept (as in Cloudflare)."""

    async def write_then_raise(self, kind: str) -> None:
        n = await self.ctx.storage.get("n", 0) + 1
        await self.ctx.storage.put("n", n)
        raise {"ConnectionError": ConnectionError, "TimeoutError": TimeoutError}[kind](f"run {n}")

    async def runs(self) -> int:
        return int(await self.ctx.storage.get("n", 0))


class Room(DurableObject):
    """A chat room: every message goes to every socket of the room, through any gateway."""

    async def fetch(self, request: Request) -> Response:
        return self.ctx.accept_websocket(request)

    async def websocket_message(self, ws: Any, message: str | bytes) -> None:
        for peer in self.ctx.get_websockets():
            peer.send(message)

    async def members(self) -> int:
        return len(self.ctx.get_websockets())


class Blob(DurableObject):
    """An SQL object of ``fill(mb)`` megabytes: a partition that takes a while to copy."""

    async def fill(self, mb: int) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
        for _ in range(mb):  # rows under the 2 MB row limit
            sql.exec("INSERT INTO blobs VALUES (randomblob(1000000))")
        return await self.rows()

    async def rows(self) -> int:
        return int(self.ctx.storage.sql.exec("SELECT count(*) AS n FROM blobs").one()["n"])


worker = Worker(
    objects={
        "RPC": Rpc,
        "NOFETCH": NoFetch,
        "IDS": IdProbe,
        "OTHER": IdProbe,
        "GATE": Counter,
        "LIST": Lister,
        "TXN": Txn,
        "SQL": SqlProbe,
        "TALLY": Tally,
        "ALARMED": Alarmed,
        "FAILING": Failing,
        "ROOM": Room,
        "BLOB": Blob,
    }
)


@worker.websocket_route("/room/{name}")
async def room(websocket: WebSocket, env: Any) -> Any:
    return await env.ROOM.get_by_name(websocket.path_params["name"]).fetch(websocket)


@worker.route("/tally/{name}")
async def tally(request: Request, env: Any) -> Response:
    return await env.TALLY.get_by_name(request.path_params["name"]).fetch(request)


@worker.route("/rpc/{name}/{rest:path}", methods=["GET", "POST", "PUT"])
async def rpc(request: Request, env: Any) -> Response:
    return await env.RPC.get_by_name(request.path_params["name"]).fetch(request)


# The router suite's shards (tests.routers.apps), served for tests/ray/test_routers_on_ray.py.
routers = ledger_worker()
