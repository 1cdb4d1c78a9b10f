"""Issue 9, acceptance 3 (several nodes): a simulated two-node Ray cluster, one data dir per node;
issue 16, acceptance 3: a partition moved to the other node keeps its acknowledged writes.

``ray.cluster_utils.Cluster`` needs its own Ray, and a process holds one Ray at a time, so the
scenario runs in a subprocess (``tests/ray/two_nodes.py``) started once for this module; the
tests read the JSON it prints.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ray.simulated import run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.two_nodes", tmp_path_factory.mktemp("two-nodes"))


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
        slot = next(s for s, owned in enumerate(run["owned"]) if partition in owned)
        assert reply["node"] == node_of_slot[slot]
    for slot, node in enumerate(("node-a", "node-b")):
        assert run["owned"][slot] == run["folders"][node]  # no partition opened on the wrong disk


def test_every_acknowledged_write_reads_back(run: dict[str, Any]) -> None:
    assert run["written"] == run["read_back"]
    assert set(run["written"].values()) == {1}


def test_a_partition_moved_to_the_other_node_keeps_its_acknowledged_writes(
    run: dict[str, Any],
) -> None:
    assert run["move_error"] is None, run["move_error"]
    after = run["after_move"]
    assert after and after == {name: run["last"][name] for name in after}
    moved, folders = run["moved"], run["folders_after_move"]
    assert moved in folders["node-b"] and moved not in folders["node-a"]  # the source deleted
