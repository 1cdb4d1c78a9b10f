"""GatewayServer: ready only while uvicorn accepts, the collector only while serving, a busy port
as ``PortInUse`` and uvicorn's start-up exit raised in the caller, never in the loop."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import durable
from durable.errors import PortInUse
from durable.gateway import Gateway, Health, build_app
from durable.server import GatewayServer, bind

worker = durable.Worker()


@worker.route("/hello")
async def hello(request: durable.Request, env: object) -> durable.Response:
    return durable.Response("hello")


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()  # hand the test process back to CPython's schedule
        assert gc.get_threshold() == saved


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with durable.connect(worker, data_dir=tmp_path) as env:
        yield build_app(worker, env, Health())


async def test_ready_and_collecting_only_while_serving(gateway: Gateway, thresholds: None) -> None:
    server = GatewayServer(gateway, "127.0.0.1", 0)
    listening = bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    await server.start(listening)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert server.started and gateway.health.ready
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/hello")).text == "hello"
        assert gc.get_threshold()[2] > 10**9  # the collector owns the oldest generation
        server.exit()
        assert not gateway.health.ready and server.exiting
    await server.wait()


async def test_serve_reports_started_then_detaches_on_exit(
    gateway: Gateway, thresholds: None
) -> None:
    server = GatewayServer(gateway, "127.0.0.1", 0)
    seen: list[str] = []

    def started() -> None:
        seen.append("started")
        server.exit()

    await server.serve(bind("127.0.0.1", 0), started)
    assert seen == ["started"] and not gateway.health.ready


async def test_a_start_up_exit_of_uvicorn_is_raised_by_serve(
    gateway: Gateway, thresholds: None
) -> None:
    with bind("127.0.0.1", 0) as taken:  # uvicorn cannot bind the port itself: it exits
        server = GatewayServer(gateway, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(SystemExit):
            await server.serve()
    assert not server.started and not gateway.health.ready


def test_a_busy_port_is_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"Cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)
