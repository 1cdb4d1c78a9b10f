"""Issue 16, planned moves under load: a node joins (rebalance), one is drained, one gets SIGTERM.

A simulated Ray cluster (``ray.cluster_utils.Cluster``, one data dir per node, one slot per node,
channels across nodes over TCP) starts with nodes A and B; node C's slot is declared but its
node joins only once the partitions have homes on A and B. While RPC clients increment counters
without pause (every acknowledged value recorded), and an HTTP client does through C's gateway:

1. C joins: the directory plans the moves that spread the partitions over the three nodes by
   rendezvous, and the slots run them one at a time;
2. ``durable drain A`` (the command, given A's Ray node id): every partition homed on A moves
   to B or C, and it exits 0;
3. B's slot gets SIGTERM: it drains B's partitions to C before it stops (Ray restarts it).

Then every client's log must show consecutive values (none lost, none applied twice), errors
only of the kinds that say nothing ran or that the call may have run, and the final value
accounted for; A's and B's data dirs hold no partition any more.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_moves_on_ray OUT_DIR``), as in ``test_homes_on_ray.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import durable
from tests.ray.apps import worker
from tests.ray.harness import (
    CLIENTS,
    IN_FLIGHT_ERRORS,
    Client,
    acked,
    checked,
    http_load,
    keep_incrementing,
    kind,
    wait_until,
)
from tests.ray.simulated import RayNodes, Slots, main, run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

NODES = ("node-a", "node-b", "node-c")
PARTITIONS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_moves_on_ray", tmp_path_factory.mktemp("moves"))


def test_a_joining_node_receives_its_share_of_the_partitions(run: dict[str, Any]) -> None:
    before, after = run["homes_before_join"], run["homes_after_join"]
    assert set(before) == {"a", "b"} and after.get("c")  # C started empty, then got some
    assert run["rebalanced"] == sorted(after["c"])  # exactly what C won moved, nothing else


def test_a_drained_node_keeps_no_partition_and_no_files(run: dict[str, Any]) -> None:
    exit_code, output = run["drain_command"]
    assert exit_code == 0 and "partition(s) moved" in output, output
    assert "a" not in run["homes_after_drain"]
    assert run["folders"]["node-a"] == []


def test_sigterm_of_a_slot_drains_its_node_first(run: dict[str, Any]) -> None:
    assert "b" not in run["homes_after_sigterm"]
    assert run["homes_after_sigterm"] == {"c": list(range(PARTITIONS))}
    assert run["folders"]["node-b"] == [] and run["folders"]["node-c"] == list(range(PARTITIONS))


def test_every_acknowledged_write_survives_the_moves_and_none_is_applied_twice(
    run: dict[str, Any],
) -> None:
    assert run["failed_checks"] == [], run["failed_checks"]
    assert all(n >= 10 for n in run["acks"]), run["acks"]  # the load ran throughout
    assert run["moved"] >= PARTITIONS  # rebalance + drain + SIGTERM: each partition moved
    assert run["errors"] is not None


def test_errors_in_the_move_windows_are_only_retryable_ones(run: dict[str, Any]) -> None:
    allowed = {"Unavailable", "Overloaded", *(e.__name__ for e in IN_FLIGHT_ERRORS), "http-503"}
    assert set(run["errors"]) <= allowed, run["errors"]


# -- the scenario (subprocess) -------------------------------------------------------------------
SHORT = {"node-a": "a", "node-b": "b", "node-c": "c"}


async def homes(slots: Slots, names: dict[str, str]) -> dict[str, list[int]]:
    """node name (a, b, c) -> the partitions homed there, as the directory says."""
    status = await slots.directory.move_status.remote()
    return {names[home]: sorted(ps) for home, ps in status["homes"].items()}


async def settled(slots: Slots) -> dict[str, Any] | None:
    status = await slots.directory.move_status.remote()
    return None if status["planned"] or status["running"] else status


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS)  # C's slot waits for its node
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in slots.hosts[:2])), 90)
        ids = await slots.directory.nodes.remote()
        names = {home: SHORT[NODES[int(slot)]] for slot, (home, _) in ids.items()}
        homes_before = await homes(slots, names)
        stop = asyncio.Event()
        clients = [Client(f"c{i}") for i in range(CLIENTS)]
        web = Client("web")
        async with durable.connect(worker, address="auto") as env:
            load = [asyncio.ensure_future(keep_incrementing(env, c, stop)) for c in clients]
            await wait_until(lambda: acked(clients, 3), 30, "the load to run")

            nodes.add("node-c")  # C joins: a rebalance is planned and run
            await asyncio.wait_for(slots.hosts[2].ready.remote(), 90)
            ids = await slots.directory.nodes.remote()
            names = {home: SHORT[NODES[int(slot)]] for slot, (home, _) in ids.items()}
            load.append(asyncio.ensure_future(http_load([slots.url(2)], web, stop)))
            await wait_until(lambda: settled(slots), 120, "the rebalance to finish")
            homes_after_join = await homes(slots, names)
            rebalanced = sorted((await slots.directory.move_status.remote())["moved"])

            drained = await asyncio.to_thread(durable_drain, nodes.node_id("node-a"))
            await wait_until(lambda: _drained(slots, names, "a"), 10, "node A to be drained")
            homes_after_drain = await homes(slots, names)

            pid_b = await slots.hosts[1].pid.remote()
            os.kill(pid_b, signal.SIGTERM)  # B's slot drains B, then stops (Ray restarts it)
            await wait_until(lambda: _drained(slots, names, "b"), 120, "node B to be drained")
            homes_after_sigterm = await homes(slots, names)
            await wait_until(lambda: acked([*clients, web], 3), 30, "the load to go on")

            stop.set()
            results = await asyncio.gather(*load, return_exceptions=True)
            crashed = [repr(r) for r in results if isinstance(r, BaseException)]
            finals = {c.name: await env.TALLY.get_by_name(c.name).value() for c in clients}
            finals["web"] = await env.TALLY.get_by_name("web").value()
            status = await slots.directory.move_status.remote()
        everyone = [*clients, web]
        return {
            "homes_before_join": homes_before,
            "homes_after_join": homes_after_join,
            "rebalanced": rebalanced,
            "homes_after_drain": homes_after_drain,
            "drain_command": drained,
            "homes_after_sigterm": homes_after_sigterm,
            "moved": len(status["moved"]),
            "failed_moves": status["failed"],
            "folders": slots.folders(),
            "acks": [len(c.acked) for c in everyone],
            "errors": sorted({kind(e) for c in everyone for e in c.failures}),
            "failed_checks": checked(everyone, finals) + crashed,
        }
    finally:
        await slots.stop()


async def _drained(slots: Slots, names: dict[str, str], node: str) -> bool:
    return await settled(slots) is not None and node not in await homes(slots, names)


def durable_drain(node: str) -> list[Any]:
    """``durable drain NODE`` in this process (already a driver of the cluster's Ray)."""
    from typer.testing import CliRunner

    from durable.cli import app

    done = CliRunner().invoke(app, ["drain", node, "--timeout", "120"])
    return [done.exit_code, done.output[-300:]]


if __name__ == "__main__":
    main(scenario, NODES[:2])  # node C is added by the scenario
