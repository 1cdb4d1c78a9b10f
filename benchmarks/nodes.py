"""Scaling across nodes: durable on a simulated three-node Ray cluster, beside one node (issue 18).

``ray.cluster_utils.Cluster`` starts each Ray node as its own raylet on this machine, with a
custom resource ``node-<i>``; one host slot runs on each node, with the node's own data directory
and HTTP port, and a request for a partition another node serves crosses the channel to that
node's slot: over TCP since slots listen on it (issue 16; each simulated node is its own Ray
node, so the channel's ``auto`` choice dials TCP, as between machines), over the Unix socket
before (results from commit 5d4877b and earlier).
Configurations, each on a fresh cluster:

- ``one-node``: one node, one slot; the load on its gateway.
- ``three-nodes``: three nodes, one slot each; the load on node 0's gateway only, so about two
  thirds of the requests cross to another node's slot over the channel.
- ``three-nodes-spread``: the same cluster; the connections split over the three gateways, as a
  load balancer in front of the nodes would.

Workload: ``GET /counter/{r}`` over 1,000 objects (``benchmarks.apps``), ``CONCURRENCY``
connections in all, ``--duration`` seconds after ``--warmup``, measured by ``loadgen/loadgen.mjs``
beside the servers; server CPU is that of the slot actors' processes.

What 2 cores allow: the three nodes, Ray's daemons and the load generator share the same two
cores, so a simulated cluster cannot serve more than one node here; the ratios measure what the
extra hop between nodes costs, not what more machines would add.

Rerun (from the repo root; ``cd benchmarks/loadgen && npm ci`` once)::

    .venv/bin/python benchmarks/nodes.py            # about 2 minutes
    .venv/bin/python benchmarks/nodes.py --quick    # shorter runs

Writes ``benchmarks/results/nodes.json`` and ``nodes.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable and benchmarks

import httpx  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.gateway import LOADGEN, free_port  # noqa: E402
from benchmarks.report import Goal, num  # noqa: E402
from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig, new_token  # noqa: E402
from durable.directory import directory_actor_class  # noqa: E402
from durable.ray_host import host_actor_class  # noqa: E402

APP = "benchmarks.apps:worker"
PARTITIONS = 16
CONCURRENCY = 64
OBJECTS = "1000"
CONFIGS = ("one-node", "three-nodes", "three-nodes-spread")
LEASE_TTL = 5.0


def node_name(i: int) -> str:
    return f"node-{i}"


# -- a cluster -------------------------------------------------------------------------------------
class Nodes:
    """A simulated Ray cluster of ``count`` nodes and one durable host slot on each."""

    def __init__(self, count: int, root: Path) -> None:
        self.count, self.root = count, root
        self.ray = RayCluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "resources": {node_name(0): 1},
                            "include_dashboard": False},
        )  # fmt: skip
        for i in range(1, count):
            self.ray.add_node(num_cpus=1, resources={node_name(i): 1})
        self.ray.wait_for_nodes()
        ray.init(address=self.ray.address, namespace=RAY_NAMESPACE, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
        base = ClusterConfig(target=APP, data_dir="", sys_path=(str(ROOT),),
                             partitions=PARTITIONS, slots=count, token=new_token(),
                             lease_ttl=LEASE_TTL)  # fmt: skip
        self.configs = [
            dataclasses.replace(base, data_dir=str(root / node_name(i)), http_port=free_port())
            for i in range(count)
        ]
        self.directory: Any = None
        self.hosts: list[Any] = []

    async def start(self) -> None:
        self.directory = (
            directory_actor_class()
            .options(name=DIRECTORY, namespace=RAY_NAMESPACE, resources={node_name(0): 0.01})
            .remote(PARTITIONS, self.configs[0].info(), LEASE_TTL)
        )
        self.hosts = [
            host_actor_class()
            .options(name=f"durable-host-{i}", namespace=RAY_NAMESPACE,
                     resources={node_name(i): 0.01})
            .remote(i, config)
            for i, config in enumerate(self.configs)
        ]  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self.hosts)), 120)
        await self._balanced()

    async def _balanced(self) -> None:
        """Until every slot serves partitions and together they serve all of them."""
        for _ in range(600):
            owned = [(await h.ready.remote())["owned"] for h in self.hosts]
            served = sorted(int(p) for slot in owned for p in slot)
            if all(owned) and served == list(range(PARTITIONS)):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the slots never split the partitions: {owned}")

    async def pids(self) -> list[int]:
        return [int(await h.pid.remote()) for h in self.hosts]

    @property
    def ports(self) -> list[int]:
        return [c.http_port for c in self.configs]

    async def stop(self) -> None:
        await asyncio.gather(*(h.stop.remote() for h in self.hosts), return_exceptions=True)
        for actor in [*self.hosts, self.directory]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        for config in self.configs:
            shutil.rmtree(config.runtime_dir, ignore_errors=True)
        ray.shutdown()
        self.ray.shutdown()


# -- load ----------------------------------------------------------------------------------------
def loads(
    ports: Sequence[int], pids: Sequence[int], duration: float, warmup: float
) -> dict[str, Any]:
    """``CONCURRENCY`` connections split over ``ports``, all at once; the sum of what they got."""
    shares = [CONCURRENCY // len(ports) + (i < CONCURRENCY % len(ports)) for i in range(len(ports))]
    procs = [
        subprocess.Popen(
            [
                "node",
                str(LOADGEN / "loadgen.mjs"),
                "--url",
                f"http://127.0.0.1:{port}/counter/{{r}}",
                "--distinct",
                OBJECTS,
                "--concurrency",
                str(share),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--pids",
                ",".join(map(str, pids)) if i == 0 else "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=LOADGEN,
        )
        for i, (port, share) in enumerate(zip(ports, shares, strict=True))
    ]
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration + warmup + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen.mjs failed: {err[-2000:]}")
        runs.append(json.loads(out)["runs"][0])
    rps = sum(r["rps"] for r in runs)
    return {
        "rps": rps,
        "errors": sum(r["errors"] for r in runs),
        "p50_ms": max(r["latencyMs"]["p50"] for r in runs),
        "p99_ms": max(r["latencyMs"]["p99"] for r in runs),
        # every loadgen measures the same slots over the same window: the first one's figure
        "server_cpu_us_per_request": _cpu_per_request(runs[0], rps),
        "per_gateway_rps": [r["rps"] for r in runs],
    }


def _cpu_per_request(run: dict[str, Any], rps: float) -> float | None:
    per_own = run.get("serverCpuUsPerRequest")
    return None if per_own is None or not rps else per_own * run["rps"] / rps


async def measure(config: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    count = 1 if config == "one-node" else 3
    nodes = Nodes(count, root / config)
    try:
        await nodes.start()
        async with httpx.AsyncClient() as client:  # every gateway answers before the load starts
            for port in nodes.ports:
                assert (
                    await client.get(f"http://127.0.0.1:{port}/counter/warm")
                ).status_code == 200
        ports = nodes.ports if config == "three-nodes-spread" else nodes.ports[:1]
        pids = await nodes.pids()
        result = await asyncio.to_thread(loads, ports, pids, args.duration, args.warmup)
    finally:
        await nodes.stop()
    report.console.print(f"{config}: {num(result['rps'])} req/s, {num(result['errors'])} errors")
    return {"config": config, "nodes": count, "gateways": len(ports), **result}


# -- report --------------------------------------------------------------------------------------
def goals(rows: list[dict[str, Any]]) -> list[Goal]:
    by = {r["config"]: r for r in rows}
    return [
        Goal(f"{config}: errors under load", by[config]["errors"], 0, "", at_least=False)
        for config in CONFIGS
        if config in by
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    one = next((r["rps"] for r in rows if r["config"] == "one-node"), None)
    report.print_table(
        f"1,000 objects, {CONCURRENCY} connections: one node against three simulated nodes",
        ("config", "gateways", "req/s", "÷ one node", "p50 / p99 ms", "CPU µs/req", "errors"),
        [
            (r["config"], str(r["gateways"]), num(r["rps"]), report.ratio(r["rps"], one),
             f"{num(r['p50_ms'], 1)} / {num(r['p99_ms'], 1)}",
             num(r["server_cpu_us_per_request"]), num(r["errors"]))
            for r in rows
        ],
    )  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, axes = report.figure(1, 2, "One node against three simulated nodes (1,000 objects)")
    labels = [r["config"] for r in rows]
    report.bars(axes[0], labels, [r["rps"] for r in rows], "throughput", "req/s")
    report.bars(axes[1], labels, [r["p99_ms"] for r in rows], "p99 latency", "ms")
    report.save(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--duration", type=float, help="seconds of load per configuration")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configs")
    parser.add_argument("--output", default="nodes", help="results file name (without suffix)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 8.0
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="durable-nodes-") as tmp:
        for config in args.configs.split(","):
            rows.append(asyncio.run(measure(config, args, Path(tmp))))
    result: dict[str, Any] = {
        "meta": report.machine_meta(args=sys.argv[1:] if argv is None else list(argv)),
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "concurrency": CONCURRENCY,
            "objects": int(OBJECTS),
            "partitions": PARTITIONS,
        },
        "rows": rows,
        "goals": [g.as_dict() for g in goals(rows)],
    }
    report.write_json(report.RESULTS / f"{args.output}.json", result)
    plot(rows, report.RESULTS / f"{args.output}.png")
    print_table(rows)
    report.print_goals(goals(rows))
    return result


if __name__ == "__main__":
    main()
