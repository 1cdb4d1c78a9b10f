"""Issue 16, acceptance 2's "roll-restart all": every slot restarted, one at a time, under load.

A simulated Ray cluster (``ray.cluster_utils.Cluster``, one data dir per node, channels over
TCP), in two layouts: two nodes, where A runs slots 0 and 1 (one disk: each empties into the
other by a lease handover) and B runs slot 2 alone (it empties by planned moves to A, and gets
them back by a rebalance); and one node running slots 0 and 1 (handovers only). While RPC
clients increment counters without pause (every acknowledged value recorded), an HTTP client
does through every gateway in turn (the next one when one refuses, as a load balancer would),
a reader reads the counters, and a WebSocket client is connected through each gateway,
``durable.rollout.restart`` restarts every slot.

Then: every slot runs in a new process and serves; every client's log shows consecutive values
(none lost, none applied twice) and the final value accounted for; no read went backwards; the
only errors are retryable ones; every WebSocket client was closed with 1012. The run reports how
long the rollout took, per slot and in all, and the errors clients saw, by kind.

The scenario runs in a subprocess with its own Ray (``python -m tests.ray.test_restarts_on_ray
OUT_DIR LAYOUT``), as ``test_moves_on_ray.py``'s does.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import durable
from durable.rollout import restart, way_out
from tests.ray import harness
from tests.ray.apps import worker
from tests.ray.harness import Load, acked, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

# Layouts: the Ray nodes, and each slot's node.
LAYOUTS = {
    "two-nodes": (("node-a", "node-b"), ("node-a", "node-a", "node-b")),
    "one-node": (("node-a",), ("node-a", "node-a")),
}
WAYS = {"two-nodes": ["handover", "handover", "move"], "one-node": ["handover", "handover"]}
PARTITIONS = 8
ROLLOUT = 240.0  # seconds the whole rollout may take here


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("restarts")
    module = "tests.ray.test_restarts_on_ray"
    result = run_scenario(module, out, timeout=ROLLOUT + 200, args=[request.param])
    return {**result, "layout": request.param}


def test_every_slot_is_emptied_its_own_way_then_restarted_and_serves_again(
    run: dict[str, Any],
) -> None:
    assert run["ways"] == WAYS[run["layout"]]
    slots = list(range(len(WAYS[run["layout"]])))
    assert run["rollout"]["restarted"] == slots and run["rollout"]["failed"] == {}
    assert all(a != b for a, b in zip(run["pids_before"], run["pids_after"], strict=True))
    assert all(run["owned_after"]), run["owned_after"]  # each serves its share again
    assert sorted(p for ps in run["owned_after"] for p in ps) == list(range(PARTITIONS))


def test_no_acknowledged_write_is_lost_or_applied_twice_and_no_read_goes_backwards(
    run: dict[str, Any],
) -> None:
    assert run["failed_checks"] == [], run["failed_checks"]
    assert run["backwards"] == [], run["backwards"]
    assert all(n >= 10 for n in run["acks"]), run["acks"]  # the load ran throughout
    assert run["reads"] >= 10


def test_clients_see_only_retryable_errors(run: dict[str, Any]) -> None:
    assert set(run["errors"]) <= harness.RETRYABLE, run["errors"]


def test_websocket_clients_of_a_restarted_gateway_are_closed_1012(run: dict[str, Any]) -> None:
    assert run["close_codes"] == [1012] * len(WAYS[run["layout"]])


def test_the_rollout_is_timed(run: dict[str, Any]) -> None:
    assert set(run["rollout"]["seconds"]) == {str(s) for s in range(len(WAYS[run["layout"]]))}
    assert 0 < run["seconds"] < ROLLOUT


# -- the scenario (subprocess) -------------------------------------------------------------------


async def spread(slots: Slots) -> list[list[int]] | None:
    """Per slot its partitions, once every slot serves some and every partition is served."""
    now = await slots.owned()
    every = sorted(p for s in now for p in s) == list(range(PARTITIONS))
    return now if all(now) and every else None


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, LAYOUTS[sys.argv[2]][1], PARTITIONS, channel="tcp")
    urls = [slots.url(slot) for slot in range(len(slots.nodes))]
    sockets = []
    try:
        await wait_until(lambda: spread(slots), 120, "every slot to serve partitions")
        for url in urls:
            await wait_until(partial(harness.healthy, url), 60, f"the gateway at {url}")
        homes = {int(s): h for s, (h, _) in (await slots.directory.nodes.remote()).items()}
        ways = [way_out(slot, homes).value for slot in sorted(homes)]
        pids_before = [(await h.ready.remote())["pid"] for h in slots.hosts]
        sockets = [await ws_connect(f"{url.replace('http', 'ws')}/room/lobby") for url in urls]
        closes = [asyncio.ensure_future(harness.close_code(ws, ROLLOUT)) for ws in sockets]
        async with durable.connect(worker, address="auto") as env:
            load = Load.start(env, urls)
            everyone = load.everyone
            await wait_until(partial(acked, everyone, 3), 30, "the load to run")
            started = time.monotonic()
            rollout = await restart(slots.directory, timeout=ROLLOUT / 3)
            seconds = time.monotonic() - started
            await wait_until(partial(acked, everyone, 3), 30, "the load to go on")
            failed_checks = await load.finish(env)
        errors = Counter(harness.kind(e) for c in everyone for e in c.failures)
        return {
            "ways": ways,
            "rollout": {
                "restarted": rollout.restarted,
                "seconds": rollout.seconds,
                "failed": rollout.failed,
            },
            "seconds": round(seconds, 2),
            "pids_before": pids_before,
            "pids_after": [(await h.ready.remote())["pid"] for h in slots.hosts],
            "owned_after": await slots.owned(),
            "acks": [len(c.acked) for c in everyone],
            "reads": sum(len(v) for v in load.seen.values()),
            "backwards": harness.went_backwards(load.seen),
            "errors": dict(errors),
            "failed_checks": failed_checks,
            "close_codes": [await c for c in closes],
        }
    finally:
        for ws in sockets:
            await ws.close()
        await slots.stop()


if __name__ == "__main__":
    main(scenario, LAYOUTS[sys.argv[2]][0])
