"""Issue 16, acceptance 2 in one run: a cluster's life under continuous load.

A simulated Ray cluster (``ray.cluster_utils.Cluster``, one slot and one data dir per node,
channels forced over TCP) starts on nodes A, B and C. While RPC writers increment counters
without pause (every acknowledged value recorded), an HTTP writer does through the gateways (the
next one when one refuses, as a load balancer would) and a reader reads the counters:

1. node D joins: the directory rebalances partitions onto it;
2. ``durable drain`` empties node A;
3. ``durable.rollout.restart`` restarts every slot, one at a time, each emptied first;
4. node B is lost: its partitions answer 503 + ``Retry-After`` over HTTP and ``Unavailable``
   over RPC, and nothing else, while the other nodes' partitions serve;
5. node B returns with its disk.

Then every writer's log shows consecutive values (none lost, none applied twice) and its final
value accounted for, no read went backwards, and the only errors are retryable ones.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_cluster_life_on_ray OUT_DIR``), as in ``test_moves_on_ray.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

import durable
from durable.rollout import restart
from tests.ray import harness
from tests.ray.apps import worker
from tests.ray.harness import RETRYABLE, Load, acked, increment_outcome, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario
from tests.ray.test_moves_on_ray import durable_drain, settled

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

NODES = ("node-a", "node-b", "node-c", "node-d")
PARTITIONS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("life")
    return run_scenario("tests.ray.test_cluster_life_on_ray", out, timeout=500)


def test_the_joining_node_got_partitions_and_the_drained_one_none(run: dict[str, Any]) -> None:
    assert run["homes_after_join"].get("node-d"), run["homes_after_join"]
    assert run["drain"][0] == 0, run["drain"]
    assert "node-a" not in run["homes_after_drain"]


def test_every_slot_was_restarted(run: dict[str, Any]) -> None:
    assert run["rollout"] == {"restarted": [0, 1, 2, 3], "failed": {}}


def test_a_lost_node_s_partitions_answer_only_unavailable_while_the_others_serve(
    run: dict[str, Any],
) -> None:
    assert run["lost_partitions"], "node B held no partition when it was lost"
    assert set(run["lost_rpc"]) == {"Unavailable"}
    assert run["lost_http"] and all(s == 503 and r == "1" for s, r in run["lost_http"])
    assert run["others_during_loss"] and set(run["others_during_loss"]) == {"served"}


def test_no_acknowledged_write_is_lost_or_applied_twice_and_no_read_goes_backwards(
    run: dict[str, Any],
) -> None:
    assert run["failed_checks"] == [], run["failed_checks"]
    assert run["backwards"] == [], run["backwards"]
    assert all(n >= 10 for n in run["acks"]), run["acks"]  # the load ran throughout
    assert set(run["errors"]) <= RETRYABLE, run["errors"]


# -- the scenario (subprocess) -------------------------------------------------------------------


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS, channel="tcp")  # D's slot waits for its node
    urls = [slots.url(slot) for slot in range(len(NODES))]
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in slots.hosts[:3])), 90)
        await wait_until(partial(placed, slots, 3), 90, "A, B and C to serve every partition")
        async with durable.connect(worker, address="auto") as env:
            load = Load.start(env, urls[:3])
            everyone = load.everyone
            await wait_until(partial(acked, everyone, 3), 30, "the load to run")

            nodes.add("node-d")
            await asyncio.wait_for(slots.hosts[3].ready.remote(), 90)
            await wait_until(lambda: settled(slots), 120, "the rebalance onto D")
            homes_after_join = await homes(slots)

            drain = await asyncio.to_thread(durable_drain, nodes.node_id("node-a"))
            homes_after_drain = await homes(slots)
            await wait_until(partial(acked, everyone, 3), 60, "the load after the drain")

            rollout = await restart(slots.directory, timeout=90)
            await wait_until(lambda: settled(slots), 120, "the rebalance after the rollout")
            await wait_until(partial(acked, everyone, 3), 60, "the load after the rollout")

            lost = (await homes(slots)).get("node-b", [])
            nodes.remove("node-b")
            loss = await during_loss(env, slots, lost)
            nodes.add("node-b")  # B returns, with its disk
            await wait_until(partial(placed, slots, 4), 120, "B to serve its partitions again")
            await wait_until(partial(acked, everyone, 3), 60, "the load after B returned")

            failed_checks = await load.finish(env)
        return {
            "homes_after_join": homes_after_join,
            "drain": drain,
            "homes_after_drain": homes_after_drain,
            "rollout": {"restarted": rollout.restarted, "failed": rollout.failed},
            "rollout_seconds": rollout.seconds,
            "lost_partitions": lost,
            **loss,
            "acks": [len(c.acked) for c in everyone],
            "backwards": harness.went_backwards(load.seen),
            "errors": dict(Counter(harness.kind(e) for c in everyone for e in c.failures)),
            "failed_checks": failed_checks,
        }
    finally:
        await slots.stop()


async def placed(slots: Slots, count: int) -> bool:
    """Every partition is served by the first ``count`` slots (the others' nodes are absent)."""
    try:
        ready = [await h.ready.remote() for h in slots.hosts[:count]]
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError):
        return False  # a slot whose node is (re)starting: not yet
    return sorted(int(p) for r in ready for p in r["owned"]) == list(range(PARTITIONS))


async def homes(slots: Slots) -> dict[str, list[int]]:
    """Node name -> the partitions homed there, as the directory says."""
    ids = await slots.directory.nodes.remote()
    names = {home: NODES[int(slot)] for slot, (home, _) in ids.items()}
    status = await slots.directory.move_status.remote()
    return {names[home]: sorted(ps) for home, ps in status["homes"].items()}


async def during_loss(env: Any, slots: Slots, lost: list[int]) -> dict[str, Any]:
    """What callers get for objects of the lost partitions, and of the others, once B's slot is
    no longer live (its partitions unplaceable)."""

    async def unplaceable() -> bool:
        return sorted((await slots.directory.status.remote())["unplaceable"]) == lost

    await wait_until(unplaceable, 60, "node B's partitions to be unplaceable")
    names = [f"probe-{i}" for i in range(64)]
    on_b = [n for n in names if env.TALLY.id_from_name(n).partition(PARTITIONS) in lost]
    others = [n for n in names if n not in on_b]

    async with httpx.AsyncClient(base_url=slots.url(2), timeout=30) as http:
        replies = [await http.get(f"/tally/{n}") for n in on_b[:3]]
    return {
        "lost_rpc": [await increment_outcome(env, n) for n in on_b[3:6]],
        "lost_http": [[r.status_code, r.headers.get("retry-after")] for r in replies],
        "others_during_loss": [await increment_outcome(env, n) for n in others[:6]],
    }


if __name__ == "__main__":
    main(scenario, NODES[:3])  # node D is added by the scenario
