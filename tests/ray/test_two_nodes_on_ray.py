"""Issue 9, acceptance 3 (several nodes): a simulated two-node Ray cluster, one data dir per node.

``ray.cluster_utils.Cluster`` needs its own Ray, and a process holds one Ray at a time, so the
scenario runs in a subprocess (``tests/ray/two_nodes.py``) started once for this module; the
tests read the JSON it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.ray.harness import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("two-nodes")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.ray.two_nodes", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_one_gateway_serves_objects_of_both_nodes(run: dict[str, Any]) -> None:
    a, b = run["node_ids"]["node-a"], run["node_ids"]["node-b"]
    assert a != b
    assert all(run["owned"]), run["owned"]  # each node's slot serves some partitions
    assert {status for status, _ in run["http"]} == {200}
    http_nodes = {reply["node"] for _, reply in run["http"]}
    assert http_nodes == {a, b}  # every request entered through node A's gateway
    assert {reply["node"] for reply in run["rpc"]} == {a, b}


def test_each_node_runs_the_partitions_of_its_slot(run: dict[str, Any]) -> None:
    node_of_slot = [run["node_ids"]["node-a"], run["node_ids"]["node-b"]]
    for reply, partition in zip(run["rpc"], run["partitions"], strict=True):
        slot = next(s for s, owned in enumerate(run["owned"]) if str(partition) in owned)
        assert reply["node"] == node_of_slot[slot]
    for slot, node in enumerate(("node-a", "node-b")):
        assert {int(p) for p in run["owned"][slot]} <= set(run["folders"][node])


@pytest.mark.xfail(
    strict=True,
    reason="a rebalance moves a partition to another node's slot without its data: the new "
    "owner opens an empty database in its own data dir (DESIGN §8's copy is not implemented)",
)
def test_a_partition_moved_to_the_other_node_keeps_its_acknowledged_writes(
    run: dict[str, Any],
) -> None:
    first, settled = run["owned_at_ready"], run["owned"]
    assert any(set(first[s]) != set(settled[s]) for s in (0, 1))  # partitions did change nodes
    lost = {n: v for n, v in run["after_rebalance"].items() if v < run["before_rebalance"][n]}
    assert lost == {}
