"""A durable cluster on a simulated multi-node Ray cluster, for scenarios run in a subprocess.

``ray.cluster_utils.Cluster`` needs its own Ray, and a process holds one Ray at a time, so each
scenario is a module run as ``python -m MODULE OUT_DIR`` (``run_scenario``) that prints one JSON
line. Inside it, ``RayNodes`` starts one Ray node per name (a custom resource of that name pins
actors to it) and ``Slots`` one host slot per node, each on its own data directory
(``OUT_DIR/<node>``) and HTTP port, with the directory on the first node: ``Cluster.start``
cannot place them so (it names no node and has one data dir for every slot), so the actors are
created here with the same classes and arguments it uses; ``Slots(..., channel="tcp")`` and other
``ClusterConfig`` fields apply to every slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tests.ray.harness import PYTHONPATH, ROOT, free_port, make_config


def run_scenario(
    module: str, out: Path, timeout: float = 200, args: Sequence[str] = ()
) -> dict[str, Any]:
    """Run ``python -m module out *args`` on its own Ray (at most ``timeout`` s); the JSON line
    it printed last."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", module, str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class RayNodes:
    """One Ray node per name (one CPU, a custom resource of that name); ``ray.init`` on them."""

    def __init__(self, names: Sequence[str]) -> None:
        import ray
        from ray.cluster_utils import Cluster as RayCluster

        from durable.cluster import RAY_NAMESPACE

        self.names = list(names)
        self.cluster = RayCluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "resources": {names[0]: 1}, "include_dashboard": False},
        )
        self.nodes = {names[0]: self.cluster.head_node}
        for name in names[1:]:
            self.add(name)
        self.cluster.wait_for_nodes()
        ray.init(
            address=self.cluster.address,
            namespace=RAY_NAMESPACE,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": PYTHONPATH, "RAY_worker_niceness": "0"}},
        )

    def add(self, name: str) -> None:
        """(Re)start the node ``name``: what was placed on it may run again."""
        self.nodes[name] = self.cluster.add_node(num_cpus=1, resources={name: 1})

    def remove(self, name: str) -> None:
        """Lose the node ``name`` and everything on it (its disk stays)."""
        self.cluster.remove_node(self.nodes.pop(name))

    def node_id(self, name: str) -> str:
        import ray

        return str(next(n["NodeID"] for n in ray.nodes() if name in n["Resources"]))

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


class Slots:
    """The directory (on the first node) and one host slot per node, each on ``out/<node>``."""

    def __init__(self, out: Path, nodes: Sequence[str], partitions: int, **config: Any) -> None:
        from durable.cluster import DIRECTORY, RAY_NAMESPACE
        from durable.directory import directory_actor_class

        self.out, self.nodes, self.partitions = out, list(nodes), partitions
        base = make_config(out / nodes[0], slots=len(nodes), partitions=partitions, **config)
        self.configs = [
            dataclasses.replace(base, data_dir=str((out / node).resolve()), http_port=free_port())
            for node in nodes
        ]
        self.directory = (
            directory_actor_class()
            .options(name=DIRECTORY, namespace=RAY_NAMESPACE, resources={nodes[0]: 0.01})
            .remote(partitions, base.info(), base.lease_ttl)
        )
        self.hosts = [self._start(slot) for slot in range(len(nodes))]

    def _start(self, slot: int) -> Any:
        from durable.cluster import RAY_NAMESPACE
        from durable.ray_host import host_actor_class

        return (
            host_actor_class()
            .options(name=f"durable-host-{slot}", namespace=RAY_NAMESPACE,
                     resources={self.nodes[slot]: 0.01})
            .remote(slot, self.configs[slot])
        )  # fmt: skip

    def url(self, slot: int) -> str:
        return f"http://127.0.0.1:{self.configs[slot].http_port}"

    async def owned(self) -> list[list[int]]:
        """Per slot, the partitions it serves now."""
        ready = [await h.ready.remote() for h in self.hosts]
        return [sorted(int(p) for p in r["owned"]) for r in ready]

    def folders(self) -> dict[str, list[int]]:
        """Per node, the partitions with a folder in its data dir."""
        return {
            node: sorted(int(p.name) for p in (self.out / node / "partitions").iterdir())
            for node in self.nodes
        }

    async def stop(self) -> None:
        import ray

        await asyncio.gather(*(h.stop.remote() for h in self.hosts), return_exceptions=True)
        for actor in [*self.hosts, self.directory]:
            ray.kill(actor, no_restart=True)
        for config in self.configs:
            shutil.rmtree(config.runtime_dir, ignore_errors=True)


def main(
    scenario: Callable[[RayNodes, Path], Awaitable[dict[str, Any]]], names: Sequence[str]
) -> None:
    """A scenario module's entry point (``python -m MODULE OUT_DIR``): its JSON line on stdout."""
    nodes = RayNodes(names)
    try:
        print(json.dumps(asyncio.run(scenario(nodes, Path(sys.argv[1])))), flush=True)
    finally:
        nodes.shutdown()
