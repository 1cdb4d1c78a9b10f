"""Issue 16: a cluster whose channel is forced over TCP (``channel="tcp"``) serves RPC to a
client through ``connect(address=...)``. Every host registers one address carrying its node,
its Unix socket and its TCP endpoint; with TCP forced, every caller (the client and the slots
calling each other) dials TCP; with a cert and key, TLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.channel import Endpoint
from tests.ray.apps import worker
from tests.ray.harness import RunningCluster, run_sync
from tests.test_channel_tcp import cert_in

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("tls", [False, True])
def test_rpc_over_forced_tcp(
    start_cluster: Callable[..., RunningCluster], tmp_path: Path, tls: bool
) -> None:
    cert = {"tls_cert": cert_in(tmp_path), "tls_key": str(tmp_path / "k.pem")} if tls else {}
    running = start_cluster(slots=2, partitions=4, channel="tcp", **cert)
    run_sync(running.settled())
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
