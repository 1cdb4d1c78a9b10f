"""The mining game under test: both designs, in process, through the real gateway (ASGI).

``async with open_game(tmp_path, design, **vars) as game:`` builds the worker, connects it in
process and gives an ``httpx`` client speaking to the gateway app (no socket). The sharded
design runs on a ``VirtualClock`` (``game.advance`` fires alarms, crons and evictions in order);
the original sleeps inside its object (finding 3), which a virtual clock cannot move, so it runs
on the real clock with short cycles and ``game.advance`` waits for real.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import durable
from durable.gateway import Gateway, Health, build_app
from durable.host import Host, host_of
from durable.testing import VirtualClock
from examples.mission_game.app import build_worker

START = 1_700_000_000.0  # 22:13:20 UTC
SHARDED_VARS = {"CYCLE_MS": 1000, "MAX_CYCLES": 3}
ORIGINAL_VARS = {"CYCLE_MS": 100, "MAX_CYCLES": 3}

# Parametrisation over the designs; the original's expected failures are marked per test.
DESIGNS = ["sharded", "original"]


def original_fails(reason: str) -> Any:
    """The original design, expected to fail this test: the finding is its bug."""
    return pytest.param("original", marks=pytest.mark.xfail(strict=True, reason=reason))


@dataclass
class Game:
    design: str
    env: Any
    client: httpx.AsyncClient
    host: Host
    gateway: Gateway
    clock: VirtualClock | None
    data_dir: Path

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of game time pass (virtual for sharded, real for the original)."""
        if self.clock is not None:
            await self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def join(self, name: str, mission: str = "alpha") -> dict[str, Any]:
        response = await self.client.post("/api/join", json={"name": name, "mission": mission})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def deploy(self, name: str) -> httpx.Response:
        return await self.client.post(f"/api/players/{name}/miners", json={})

    async def player(self, name: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/players/{name}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def active(self, namespace: str | None = None) -> list[str]:
        """Live (not evicted) objects as ``NS:name``."""
        names = [f"{oid.namespace}:{oid.name}" for oid in self.host._active]
        return [n for n in names if namespace is None or n.startswith(f"{namespace}:")]

    def stored(self) -> list[tuple[Any, ...]]:
        """Every stored row of every object (KV rows and object records), after a flush."""
        self.host.commits.flush()
        rows: list[tuple[Any, ...]] = []
        for path in sorted(self.data_dir.glob("partitions/*/partition.sqlite")):
            with sqlite3.connect(path) as db:
                rows += db.execute("SELECT ns, id, key, value FROM kv ORDER BY 1, 2, 3").fetchall()
                rows += db.execute(
                    "SELECT ns, id, kind, alarm FROM objects ORDER BY 1, 2"
                ).fetchall()
        return rows


@asynccontextmanager
async def open_game(
    tmp_path: Path,
    design: str = "sharded",
    *,
    real_time: bool = False,
    idle_timeout: float = 10.0,
    **values: Any,
) -> AsyncIterator[Game]:
    settings = {**(ORIGINAL_VARS if design == "original" else SHARDED_VARS), **values}
    database = f"sqlite:///{tmp_path}/db.sqlite"
    worker = build_worker(
        {"DESIGN": design, **settings}, database=database, idle_timeout=idle_timeout
    )
    clock = None if design == "original" or real_time else VirtualClock(start=START)
    data_dir = tmp_path / "data"
    async with durable.connect(worker, data_dir=data_dir, clock=clock) as env:
        host = host_of(env)
        gateway = build_app(worker, env, Health(), host=host, sole_holder=True)
        transport = httpx.ASGITransport(app=gateway)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://game") as client:
                yield Game(design, env, client, host, gateway, clock, data_dir)
        finally:
            gateway.close()


async def until(check: Any, what: str, seconds: float = 10.0) -> None:
    """Poll an async ``check`` every 20 ms until it is true, for at most ``seconds``."""
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
