"""The worker every hostile test attacks: a counter, a body store, a WebSocket echo and objects
that misbehave (``SystemExit``, a reply held until the test releases it), with a read-only view
of what each object stored."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.routing import Route, Router

import durable

_HELD: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}


def held() -> asyncio.Event:
    """The event ``/t/<name>/hold`` requests wait for, one per server loop."""
    loop = asyncio.get_running_loop()
    return _HELD.setdefault(loop, asyncio.Event())


async def release_held() -> None:
    held().set()
    _HELD.pop(asyncio.get_running_loop())


class Target(durable.DurableObject):
    """Stores what valid requests send; ``stored()`` shows it without writing anything."""

    async def fetch(self, request: Request) -> durable.Response:
        if request.headers.get("upgrade", "").lower() == "websocket":
            return self.ctx.accept_websocket(request)
        action = request.url.path.rsplit("/", 1)[-1]
        if action == "exit":
            raise SystemExit(3)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "hold":
            await held().wait()  # until the test releases it: a request that stays in flight
        if action == "store":
            body = await request.body()
            await self.ctx.storage.put("body", body.decode("utf-8", "replace"))
        n = await self.ctx.storage.get("n", 0) + 1
        await self.ctx.storage.put("n", n)
        return durable.JSONResponse({"n": n})

    async def websocket_message(self, ws: Any, message: str | bytes) -> None:
        count = await self.ctx.storage.get("messages", 0) + 1
        await self.ctx.storage.put("messages", count)
        ws.send(message if isinstance(message, str) else bytes(message))

    async def add(self, by: int = 1) -> int:
        n = int(await self.ctx.storage.get("n", 0)) + by
        await self.ctx.storage.put("n", n)
        return n

    async def stored(self) -> dict[str, Any]:
        return await self.ctx.storage.list()


async def raw_exit(request: Request) -> durable.Response:
    raise SystemExit(4)  # a plain Starlette route (Worker(router=...)), outside any object


def make_worker() -> durable.Worker:
    router = Router([Route("/raw/exit", raw_exit)])
    worker = durable.Worker(objects={"TARGET": Target}, max_request_bytes=64 * 1024, router=router)

    @worker.route("/t/{name}/{action}", methods=["GET", "POST", "PUT"])
    async def target(request: Request, env: Any) -> Any:
        return await env.TARGET.get_by_name(request.path_params["name"]).fetch(request)

    @worker.websocket_route("/ws/{name}")
    async def socket(websocket: durable.WebSocket, env: Any) -> Any:
        return await env.TARGET.get_by_name(websocket.path_params["name"]).fetch(websocket)

    return worker


worker = make_worker()  # for `durable serve tests/hostile/app.py` (the lifecycle tests)
