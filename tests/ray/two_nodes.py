"""A durable cluster on a simulated two-node Ray cluster; run by ``test_two_nodes_on_ray.py``.

``python -m tests.ray.two_nodes OUT_DIR`` starts ``ray.cluster_utils.Cluster`` (a head node with
the custom resource ``node-a`` and a second node with ``node-b``; one Ray per process, so this
cannot share the test session's Ray), then one host slot per node, each on its own data directory
(``OUT_DIR/node-a``, ``OUT_DIR/node-b``) and its own HTTP port, and the directory on the head node.
``Cluster.start`` cannot do that placement (it names no node and has one data dir for every slot),
so the actors are created here with the same classes and arguments it uses.

It starts node A's slot alone and increments objects of every partition while it owns them all,
then starts node B's slot,
waits for the rebalance (each slot serving the partitions it wins), reads them again, then sends
HTTP requests to node A's gateway only and calls objects through ``connect(address="auto")``, and
prints one JSON line: the values before and after the rebalance, the Ray node each call ran on,
each slot's partitions, and the partition folders of each data dir.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import ray
from ray.cluster_utils import Cluster as RayCluster

import durable
from durable.cluster import DIRECTORY, RAY_NAMESPACE
from durable.directory import directory_actor_class
from durable.ray_host import host_actor_class
from tests.ray.apps import worker
from tests.ray.harness import PYTHONPATH, free_port, make_config, wait_until

NODES = ("node-a", "node-b")
PARTITIONS = 8


async def serve_and_call(out: Path) -> dict[str, Any]:
    base = make_config(out / NODES[0], slots=2, partitions=PARTITIONS)
    configs = [
        dataclasses.replace(base, data_dir=str((out / node).resolve()), http_port=free_port())
        for node in NODES
    ]
    directory = (
        directory_actor_class()
        .options(name=DIRECTORY, namespace=RAY_NAMESPACE, resources={NODES[0]: 0.01})
        .remote(PARTITIONS, base.info(), base.lease_ttl)
    )

    def start(slot: int) -> Any:
        node = NODES[slot]
        return (
            host_actor_class()
            .options(name=f"durable-host-{slot}", namespace=RAY_NAMESPACE, resources={node: 0.01})
            .remote(slot, configs[slot])
        )

    # Node A's slot starts alone and owns every partition while the objects are written; node
    # B's slot starts only then, so the partitions it wins move after the writes, every run
    # (started together, both could own their partitions before the first write).
    hosts = [start(0)]
    names = [f"o{i}" for i in range(4 * PARTITIONS)]
    try:
        await asyncio.wait_for(hosts[0].ready.remote(), 60)
        async with durable.connect(worker, address="auto") as env:
            before = {name: (await env.TALLY.get_by_name(name).increment())["n"] for name in names}
        first = [(await hosts[0].ready.remote())["owned"], []]
        hosts.append(start(1))
        await asyncio.wait_for(hosts[1].ready.remote(), 60)

        async def balanced() -> list[dict[str, int]] | None:
            owned = [(await h.ready.remote())["owned"] for h in hosts]
            served = sorted(int(p) for slot in owned for p in slot)
            return owned if all(owned) and served == list(range(PARTITIONS)) else None

        owned = await wait_until(balanced, 30, "both slots to serve partitions")
        async with durable.connect(worker, address="auto") as env:
            after = {name: await env.TALLY.get_by_name(name).value() for name in names}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{configs[0].http_port}"
            ) as http:
                replies = [(await http.get(f"/tally/{name}")) for name in names]
            rpc = [await env.TALLY.get_by_name(name).increment() for name in names]
            partitions = [env.TALLY.id_from_name(name).partition(PARTITIONS) for name in names]
        node_ids = {
            node: next(n["NodeID"] for n in ray.nodes() if node in n["Resources"]) for node in NODES
        }
        return {
            "node_ids": node_ids,
            "owned_at_ready": first,
            "owned": owned,
            "before_rebalance": before,
            "after_rebalance": after,
            "http": [[r.status_code, r.json()] for r in replies],
            "rpc": rpc,
            "partitions": partitions,
            "folders": {
                node: sorted(int(p.name) for p in (out / node / "partitions").iterdir())
                for node in NODES
            },
        }
    finally:
        await asyncio.gather(*(h.stop.remote() for h in hosts), return_exceptions=True)
        for actor in [*hosts, directory]:
            ray.kill(actor, no_restart=True)
        for config in configs:
            shutil.rmtree(config.runtime_dir, ignore_errors=True)


def main(out: Path) -> None:
    cluster = RayCluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {NODES[0]: 1}, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1, resources={NODES[1]: 1})
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace=RAY_NAMESPACE,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": PYTHONPATH, "RAY_worker_niceness": "0"}},
        )
        result = asyncio.run(serve_and_call(out))
        print(json.dumps(result), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
