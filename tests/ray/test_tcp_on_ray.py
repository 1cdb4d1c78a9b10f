"""Issue 16: a cluster whose channel is forced over TCP (``channel="tcp"``) serves RPC to a
client through ``connect(address=...)``. Every host registers one address carrying its node,
its Unix socket and its TCP endpoint; with TCP forced, every caller (the client and the slots
calling each other) dials TCP; with a cert and key, TLS. WebSockets ride the same channel: the
two slots share one HTTP port, so clients of one room land on both gateways, and every client
gets every message whichever gateway it came through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import durable
from durable.endpoint import Endpoint
from tests.ray.apps import worker
from tests.ray.harness import RunningCluster, run_sync, wait_until
from tests.test_channel_tcp import cert_in

pytestmark = pytest.mark.ray


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def running(
    request: pytest.FixtureRequest, start_cluster: Callable[..., RunningCluster], tmp_path: Path
) -> RunningCluster:
    """Two slots, channel forced over TCP, plain or TLS, once placement is balanced."""
    tls = request.param
    cert = {"tls_cert": cert_in(tmp_path), "tls_key": str(tmp_path / "k.pem")} if tls else {}
    cluster = start_cluster(slots=2, partitions=4, channel="tcp", **cert)
    run_sync(cluster.settled())
    return cluster


def test_rpc_over_forced_tcp(running: RunningCluster) -> None:
    endpoints = [Endpoint.parse(a) for _, a in run_sync(running.table()).values()]
    assert all(e.node and e.unix and e.tcp for e in endpoints)
    assert all(e.dial(e.node, "tcp").startswith("tcp:") for e in endpoints)

    async def calls() -> list[int]:
        async with durable.connect(worker, address="auto") as env:
            tallies = [env.TALLY.get_by_name(f"t{i}") for i in range(8)]  # both slots' partitions
            first = [(await t.increment())["n"] for t in tallies]
            return first + [(await t.increment())["n"] for t in tallies]

    results: list[Any] = run_sync(calls())
    assert results == [1] * 8 + [2] * 8


def test_websockets_over_forced_tcp(running: RunningCluster) -> None:
    url = running.url.replace("http", "ws") + "/room/lobby"

    async def chat() -> tuple[list[list[str]], int]:
        clients = [await ws_connect(url) for _ in range(8)]  # the kernel spreads them
        try:
            for i, client in enumerate(clients):
                await client.send(f"m{i}")
            got = [sorted([str(await client.recv()) for _ in clients]) for client in clients]
            env: Any
            async with durable.connect(worker, address="auto") as env:
                members = await env.ROOM.get_by_name("lobby").members()
            return got, members
        finally:
            for client in clients:
                await client.close()

    got, members = run_sync(chat())
    assert got == [sorted(f"m{i}" for i in range(8))] * 8
    assert members == 8

    async def emptied() -> bool:
        env: Any
        async with durable.connect(worker, address="auto") as env:
            return bool(await env.ROOM.get_by_name("lobby").members() == 0)

    run_sync(wait_until(emptied, 10, "the room to forget its closed sockets"))
