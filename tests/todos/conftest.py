"""Fixtures of the todo backend tests: workers built from settings, live servers, Node scripts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import durable
from durable.testing import VirtualClock
from examples.todos.app import build_worker
from examples.todos.persister import Persister, persister_for
from examples.todos.sharding import Settings
from tests.live_server import Live, live

JS = Path(__file__).parent / "js"
TodoApp = Callable[..., AbstractAsyncContextManager[tuple[Any, Persister]]]
LiveApp = Callable[..., AbstractAsyncContextManager[Live]]


def settings_for(tmp_path: Path, **fields: Any) -> Settings:
    fields.setdefault("database_url", f"sqlite:///{tmp_path / 'todos.db'}")
    return Settings(**fields)


@pytest.fixture
def todo_app(tmp_path: Path, clock: VirtualClock) -> TodoApp:
    """``async with todo_app(sharding=...) as (env, persister):`` in process, virtual clock."""

    @asynccontextmanager
    async def start(**fields: Any) -> AsyncIterator[tuple[Any, Persister]]:
        settings = settings_for(tmp_path, **fields)
        worker = build_worker(settings)
        async with durable.connect(worker, data_dir=tmp_path / "data", clock=clock) as env:
            persister = persister_for(env, settings)
            yield env, persister
            if persister.hybrid is not None:
                await persister.hybrid.close()

    return start


@pytest.fixture
def live_app(tmp_path: Path, clock: VirtualClock) -> LiveApp:
    """``async with live_app(sharding=...) as server:`` a real uvicorn on 127.0.0.1:0."""

    @asynccontextmanager
    async def start(*, real_clock: bool = False, **fields: Any) -> AsyncIterator[Live]:
        worker = build_worker(settings_for(tmp_path, **fields))
        async with live(worker, tmp_path / "data", None if real_clock else clock) as server:
            yield server

    return start


def content(todos: dict[str, dict[str, Any]], **values: Any) -> bytes:
    """A TinyBase body as ``JSON.stringify([tables, values])`` writes it."""
    return json.dumps([{"todos": todos} if todos else {}, values], separators=(",", ":")).encode()


async def node(script: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``tests/todos/js/<script>`` with Node; its last stdout line is a JSON report."""
    binary = shutil.which("node")
    if binary is None or not (JS / "node_modules" / "tinybase").is_dir():
        pytest.fail("node and tests/todos/js/node_modules are needed: run `make test`")
    process = await asyncio.create_subprocess_exec(
        binary,
        str(JS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert process.returncode == 0 and lines, f"{script} failed:\n{err.decode()}\n{out.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served(data_dir: Path, port: int | None = None) -> AsyncIterator[str]:
    """``durable serve examples.todos.app:worker --in-process`` (a subprocess) on ``port`` or a
    free one, until healthy (30 s at most); yields its ws:// URL; SIGTERM on exit."""
    port = port or free_port()
    command = [str(Path(sys.executable).parent / "durable"), "serve", "examples.todos.app:worker",
               "--in-process", "--port", str(port), "--data-dir", str(data_dir)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]),
           "DATABASE_URL": f"sqlite:///{data_dir.parent / 'todos.db'}"}  # fmt: skip
    process = await asyncio.create_subprocess_exec(*command, cwd=data_dir.parent, env=env,
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    assert process.returncode is None, "durable serve exited"
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("durable serve did not become healthy")
        yield f"ws://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
