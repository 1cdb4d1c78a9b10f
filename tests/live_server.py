"""A real uvicorn server for gateway tests: the worker's objects and the gateway in this loop.

``async with live(worker, data_dir, clock) as server:`` binds 127.0.0.1 on a free port (port 0),
waits (bounded) until uvicorn has started and ``/healthz`` answers 200, and yields the URLs, an
``httpx.AsyncClient``, the env, the in-process Host and the gateway. On exit the server stops, the
gateway detaches and everything is closed. ``serving(gateway)`` runs any gateway so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import durable
from durable.gateway import Gateway, Health, build_app, server_config
from durable.host import Host, host_of
from durable.testing import VirtualClock

STARTUP_POLLS = 500  # x 10 ms


@dataclass
class Live:
    http: str
    ws: str
    client: httpx.AsyncClient
    env: Any
    host: Host
    gateway: Gateway


@asynccontextmanager
async def live(
    worker: durable.Worker, data_dir: Path, clock: VirtualClock | None = None, **options: Any
) -> AsyncIterator[Live]:
    async with durable.connect(worker, data_dir=data_dir, clock=clock) as env:
        host = host_of(env)
        gateway = build_app(worker, env, Health(), host=host, sole_holder=True)
        async with serving(gateway, **options) as (port, client):
            yield Live(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", client, env,
                       host, gateway)  # fmt: skip


@asynccontextmanager
async def serving(gateway: Gateway, **options: Any) -> AsyncIterator[tuple[int, httpx.AsyncClient]]:
    """``gateway`` under uvicorn on a free port until ``/healthz`` answers 200: (port, client).
    On exit the server stops and the gateway detaches."""
    server = uvicorn.Server(server_config(gateway, "127.0.0.1", 0, **options))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(STARTUP_POLLS):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        gateway.health.ready = True
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(STARTUP_POLLS):
                if (await client.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError("/healthz never answered 200")
            yield port, client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        gateway.close()
