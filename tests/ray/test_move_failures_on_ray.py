"""Issue 16, a planned move whose target dies mid-copy: nothing changes, the source serves on.

A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one data dir and one slot per
node, channel between them over TCP). One of node A's partitions gets a 60 MB SQL object (so
its copy takes a while) and RPC clients increment counters of that partition without pause.
The partition is moved to node B and, as soon as the move runs, B's slot is killed (SIGKILL).
The move must abort with the partition still homed on A, which serves the clients again; once
Ray has restarted B's slot the directory plans the move again, and it completes: every
acknowledged write and the 60 MB object are then read back at B, and A holds no copy.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_move_failures_on_ray OUT_DIR``), as in ``test_homes_on_ray.py``.
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
from tests.ray.harness import Client, keep_incrementing, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

NODES = ("node-a", "node-b")
PARTITIONS = 8
BLOB_MB = 60


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_move_failures_on_ray", tmp_path_factory.mktemp("fail"))


def test_a_move_whose_target_dies_aborts_and_the_source_serves_on(run: dict[str, Any]) -> None:
    assert run["home_after_kill"] == "a"  # the switch never happened
    assert run["probe_node"] == "a"  # the source serves it again, before the retry


def test_the_move_is_retried_and_then_keeps_every_acknowledged_write(run: dict[str, Any]) -> None:
    assert run["attempts_after_kill"] >= 1 and run["home_at_end"] == "b"
    assert run["failed_checks"] == [], run["failed_checks"]
    assert run["blob_rows"] == BLOB_MB
    assert run["moving"] in run["folders"]["node-b"]
    assert run["moving"] not in run["folders"]["node-a"]


# -- the scenario (subprocess) -------------------------------------------------------------------


async def status(slots: Slots) -> dict[str, Any]:
    result: dict[str, Any] = await slots.directory.move_status.remote()
    return result


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS)
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in slots.hosts)), 90)

        async def spread() -> list[list[int]] | None:
            owned = await slots.owned()
            return owned if all(owned) and sum(map(len, owned)) == PARTITIONS else None

        owned = await wait_until(spread, 60, "both slots to serve partitions")
        moving = owned[0][0]
        short = {
            home: name[-1] for name, (home, _) in _by_node(await slots.directory.nodes.remote())
        }
        a_id = nodes.node_id("node-a")
        async with durable.connect(worker, address="auto") as env:
            names = [f"t{i}" for i in range(2000)]
            mine = [n for n in names if env.TALLY.id_from_name(n).partition(PARTITIONS) == moving]
            blob = next(f"b{i}" for i in range(2000)
                        if env.BLOB.id_from_name(f"b{i}").partition(PARTITIONS) == moving)  # fmt: skip
            await env.BLOB.get_by_name(blob).fill(BLOB_MB)
            stop = asyncio.Event()
            clients = [Client(name) for name in mine[:4]]
            load = [asyncio.ensure_future(keep_incrementing(env, c, stop)) for c in clients]
            await wait_until(lambda: _all_acked(clients), 30, "the load to run")

            pid_b = await slots.hosts[1].pid.remote()
            await slots.directory.reassign.remote(moving, 1)
            await wait_until(lambda: _running(slots, moving), 30, "the move to start")
            os.kill(pid_b, signal.SIGKILL)  # the target dies mid-move
            await wait_until(lambda: _aborted(slots, moving), 60, "the move to abort")
            after_kill = await status(slots)
            probe = await env.TALLY.get_by_name(mine[-1]).increment()  # B is still restarting
            await wait_until(lambda: _moved(slots, moving), 120, "the move to be retried")
            done = await status(slots)
            stop.set()
            await asyncio.gather(*load)
            finals = {c.name: await env.TALLY.get_by_name(c.name).value() for c in clients}
            rows = await env.BLOB.get_by_name(blob).rows()
        problems = []
        for client in clients:
            try:
                client.check(finals[client.name])
            except AssertionError as error:
                problems.append(str(error)[:300])
        return {
            "moving": moving,
            "home_after_kill": _home(after_kill, moving, short),
            "attempts_after_kill": after_kill["attempts"].get(moving, 0),
            "probe_node": "a" if probe["node"] == a_id else probe["node"],
            "home_at_end": _home(done, moving, short),
            "failed_checks": problems,
            "blob_rows": rows,
            "folders": slots.folders(),
        }
    finally:
        await slots.stop()


def _by_node(nodes: dict[int, tuple[str, str]]) -> list[tuple[str, tuple[str, str]]]:
    """(node name, (home id, address)) per slot: slot i runs on NODES[i]."""
    return [(NODES[int(slot)], entry) for slot, entry in nodes.items()]


def _home(status: dict[str, Any], partition: int, short: dict[str, str]) -> str:
    return next(short[home] for home, ps in status["homes"].items() if partition in ps)


async def _all_acked(clients: list[Client]) -> bool:
    return all(len(c.acked) >= 3 for c in clients)


async def _running(slots: Slots, partition: int) -> bool:
    return partition in (await status(slots))["running"]


async def _aborted(slots: Slots, partition: int) -> bool:
    now = await status(slots)
    return partition not in now["running"] and bool(now["attempts"].get(partition))


async def _moved(slots: Slots, partition: int) -> bool:
    return partition in (await status(slots))["moved"]


if __name__ == "__main__":
    main(scenario, NODES)
