"""Issue 16, partition homes: a node that is lost takes its partitions with it, never their data.

A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one data dir per node, one slot
per node, started together so the new partitions spread over both). Objects of every partition
are incremented; then node B is removed. Its partitions answer ``Unavailable`` over RPC and 503
with ``Retry-After`` over HTTP (through node A's gateway), never an empty object opened on node
A; node A's partitions keep serving. Node B then returns (a new Ray node, the same disk): Ray
restarts its slot, which finds its partitions (its ``home-id``) with every acknowledged write.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_homes_on_ray OUT_DIR``), as in ``test_two_nodes_on_ray.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

import durable
from tests.ray.apps import worker
from tests.ray.harness import increment_outcome, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

NODES = ("node-a", "node-b")
PARTITIONS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_homes_on_ray", tmp_path_factory.mktemp("homes"))


def test_new_partitions_spread_over_both_nodes_and_stay_on_their_disk(run: dict[str, Any]) -> None:
    a, b = run["owned"]
    assert a and b and sorted(a + b) == list(range(PARTITIONS))
    assert run["folders"] == {"node-a": a, "node-b": b}  # no partition opened on the wrong disk


def test_a_lost_node_s_partitions_are_unavailable_and_the_others_serve(run: dict[str, Any]) -> None:
    assert sorted(run["unplaceable"]) == run["owned"][1]  # node B's, and only those
    assert run["lost_rpc"] and set(run["lost_rpc"]) == {"Unavailable"}
    assert run["lost_http"] and all(s == 503 and r == "1" for s, r in run["lost_http"])
    assert run["alive"] == {n: v + 1 for n, v in run["before"].items() if n in run["alive"]}
    assert run["alive"]  # objects of node A's partitions were read and written meanwhile


def test_a_returning_node_serves_its_partitions_with_every_write(run: dict[str, Any]) -> None:
    assert run["owned_after_return"] == run["owned"]
    expected = {n: v + (n in run["alive"]) for n, v in run["before"].items()}
    assert run["after_return"] == expected


# -- the scenario (subprocess) -------------------------------------------------------------------


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS)

    async def spread() -> list[list[int]] | None:
        try:
            now = await slots.owned()
        except ray.exceptions.ActorUnavailableError:
            return None  # node B's slot is being restarted
        return now if sorted(now[0] + now[1]) == list(range(PARTITIONS)) else None

    names = [f"o{i}" for i in range(4 * PARTITIONS)]
    try:
        first = await wait_until(spread, 60, "both slots to serve partitions")
        async with durable.connect(worker, address="auto") as env:
            before = {n: (await env.TALLY.get_by_name(n).increment())["n"] for n in names}
            partition = {n: env.TALLY.id_from_name(n).partition(PARTITIONS) for n in names}
        on_a = [n for n in names if partition[n] in first[0]]
        on_b = [n for n in names if partition[n] in first[1]]

        nodes.remove(NODES[1])  # node B is lost with its slot
        async with durable.connect(worker, address="auto") as env:
            async with httpx.AsyncClient(base_url=slots.url(0), timeout=30) as http:
                replies = await asyncio.gather(*(http.get(f"/tally/{n}") for n in on_b[:3]))
            lost_rpc = await asyncio.gather(*(increment_outcome(env, n) for n in on_b[3:6]))
            alive = {n: (await env.TALLY.get_by_name(n).increment())["n"] for n in on_a}
        unplaceable = (await slots.directory.status.remote())["unplaceable"]

        nodes.add(NODES[1])  # node B returns, with its disk
        back = await wait_until(spread, 90, "node B's slot to serve its partitions again")
        async with durable.connect(worker, address="auto") as env:
            after = {n: await env.TALLY.get_by_name(n).value() for n in names}
        return {
            "owned": first,
            "owned_after_return": back,
            "before": before,
            "unplaceable": unplaceable,
            "lost_http": [[r.status_code, r.headers.get("retry-after")] for r in replies],
            "lost_rpc": lost_rpc,
            "alive": alive,
            "after_return": after,
            "folders": slots.folders(),
        }
    finally:
        await slots.stop()


if __name__ == "__main__":
    main(scenario, NODES)
