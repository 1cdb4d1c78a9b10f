"""Planned moves: how long moving a partition takes against its size, and what clients see while
a node is drained (issue 16; ``durable/moves.py``).

A simulated two-node Ray cluster (``benchmarks/nodes.py``'s ``Nodes``: one slot per node, each
with its own data dir, 16 partitions, channel between nodes over TCP), the counter of
``benchmarks.apps``.

- Move time: for each size in ``--objects`` (default 100, 1,000 and 10,000 counters), that many
  objects are created in one partition of node 0, which is then moved to node 1
  (``reassign``: a planned move). Reported: the partition's bytes on disk, the move as the
  directory timed it (handed out to switched: the window in which its calls wait), end to end
  (asked to served at the target, which adds the wait for the source's next lease renewal),
  and the longest call a client made to an object of that partition during the move. Then one
  partition holding a single SQL object of ``--big-mb`` MB (a file over 100 MiB) is moved the
  same way, with the growth of both slots' peak memory (``VmHWM``): the file is streamed in
  256 KiB chunks, never held whole.
- Drain: ``CLIENTS`` RPC clients increment random counters of 2,000 (over every partition)
  without pause; after ``--window`` seconds, node 0 is drained (``durable drain``'s
  ``drain_node``) while they go on. Reported: latency percentiles and errors before and during
  the drain.

What 2 cores allow: both nodes, Ray's daemons and the clients share two cores; the copy runs on
the same disk at both ends.

Rerun (from the repo root)::

    .venv/bin/python benchmarks/moves.py            # about 2 minutes
    .venv/bin/python benchmarks/moves.py --quick    # 100 and 1,000 objects, 20 MB, shorter

Writes ``benchmarks/results/moves.json`` and ``moves.png`` and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable and benchmarks

import durable  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks.apps import worker  # noqa: E402
from benchmarks.nodes import PARTITIONS, Nodes  # noqa: E402
from benchmarks.report import Goal, num, percentile  # noqa: E402
from durable.moves import drain_node  # noqa: E402

CLIENTS = 16
DRAIN_OBJECTS = 2_000
BATCH = 256  # objects created concurrently


# -- move time against size ------------------------------------------------------------------------
def names_in(binding: Any, partition: int, count: int, prefix: str) -> list[str]:
    """``count`` names whose objects of ``binding`` (e.g. ``env.COUNTER``) live in
    ``partition`` (ids, so partitions, differ per namespace)."""
    names, k = [], 0
    while len(names) < count:
        name = f"{prefix}{k}"
        if binding.id_from_name(name).partition(PARTITIONS) == partition:
            names.append(name)
        k += 1
    return names


async def create(env: Any, names: list[str]) -> None:
    for i in range(0, len(names), BATCH):
        await asyncio.gather(
            *(env.COUNTER.get_by_name(n).increment() for n in names[i : i + BATCH])
        )


async def probe(env: Any, name: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """Increment one object of the moving partition, one call at a time, until ``stop``."""
    stub = env.COUNTER.get_by_name(name)
    while not stop.is_set():
        start = time.perf_counter()
        await stub.increment()
        latencies.append(time.perf_counter() - start)


def peak_kib(pid: int) -> int:
    """The peak resident memory of process ``pid`` (``VmHWM``), KiB."""
    return report._status_kib(f"/proc/{pid}/status", "VmHWM")


async def move_time(nodes: Nodes, env: Any, count: int, index: int, root: Path) -> dict[str, Any]:
    owned = sorted(int(p) for p in (await nodes.hosts[0].ready.remote())["owned"])
    partition = owned[index]
    names = names_in(env.COUNTER, partition, count, f"m{partition}-")
    await create(env, names)
    return await timed_move(nodes, env, partition, names[0], root, {"objects": count})


async def big_move(nodes: Nodes, env: Any, index: int, mb: int, root: Path) -> dict[str, Any]:
    """Move a partition holding one SQL object of ``mb`` MB (and the probe's counter)."""
    owned = sorted(int(p) for p in (await nodes.hosts[0].ready.remote())["owned"])
    partition = owned[index]
    (name,) = names_in(env.BLOB, partition, 1, "big-")
    (probed,) = names_in(env.COUNTER, partition, 1, f"m{partition}-")
    rows = await env.BLOB.get_by_name(name).fill(mb)
    row = await timed_move(nodes, env, partition, probed, root, {"objects": 1})
    assert await env.BLOB.get_by_name(name).rows() == rows  # read back at the target
    return {**row, "big_mb": mb}


async def timed_move(
    nodes: Nodes, env: Any, partition: int, probed: str, root: Path, row: dict[str, Any]
) -> dict[str, Any]:
    """Move ``partition`` from node 0 to node 1 while ``probed`` (a counter) is called."""
    size, files = report.dir_bytes(root / "node-0" / "partitions" / f"{partition:04d}")
    pids = await nodes.pids()
    peaks = [peak_kib(pid) for pid in pids]
    stop, latencies = asyncio.Event(), []
    prober = asyncio.ensure_future(probe(env, probed, stop, latencies))
    started = time.monotonic()
    await nodes.directory.reassign.remote(partition, 1)
    while True:
        status = await nodes.directory.move_status.remote()
        target = (await nodes.hosts[1].ready.remote())["owned"]
        if partition in status["moved"] and partition in target:
            break
        if partition in status["failed"]:
            raise RuntimeError(f"the move failed: {status['failed'][partition]}")
        await asyncio.sleep(0.02)
    end_to_end = time.monotonic() - started
    await asyncio.sleep(0.2)  # the probe reaches the target once
    stop.set()
    await prober
    row = {
        **row,
        "partition": partition,
        "bytes": size,
        "files": files,
        "move_s": round(status["seconds"][partition], 3),
        "end_to_end_s": round(end_to_end, 3),
        "longest_call_ms": round(max(latencies) * 1000, 1),
        "peak_growth_kib": [peak_kib(pid) - peak for pid, peak in zip(pids, peaks, strict=True)],
    }
    report.console.print(f"{size:,} bytes: moved in {row['move_s']} s")
    return row


# -- latency during a drain ------------------------------------------------------------------------
async def client(env: Any, names: list[str], stop: asyncio.Event, log: list[Any]) -> None:
    """Increment random counters until ``stop``; (start, seconds, error or None) per call."""
    rng = random.Random(len(log))
    while not stop.is_set():
        start = time.monotonic()
        try:
            await env.COUNTER.get_by_name(rng.choice(names)).increment()
            log.append((start, time.monotonic() - start, None))
        except Exception as error:
            log.append((start, time.monotonic() - start, type(error).__name__))


def summary(calls: list[tuple[float, float, str | None]]) -> dict[str, Any]:
    ordered = sorted(seconds for _, seconds, error in calls if error is None)
    errors = [error for _, _, error in calls if error is not None]
    return {
        "calls": len(ordered),
        **{f"p{q}_ms": round(percentile(ordered, q) * 1000, 2) for q in (50, 95, 99)},
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


async def drain_latency(nodes: Nodes, env: Any, window: float) -> dict[str, Any]:
    names = [f"d{i}" for i in range(DRAIN_OBJECTS)]
    await create(env, names)
    stop, logs = asyncio.Event(), [[] for _ in range(CLIENTS)]
    load = [asyncio.ensure_future(client(env, names, stop, log)) for log in logs]
    await asyncio.sleep(window)
    home = (await nodes.directory.nodes.remote())[0][0]  # node 0's home id
    started = time.monotonic()
    drained = await drain_node(nodes.directory, home)
    ended = time.monotonic()
    stop.set()
    await asyncio.gather(*load)
    calls = [call for log in logs for call in log]
    before = [c for c in calls if c[0] < started]
    during = [c for c in calls if started <= c[0] < ended]
    report.console.print(f"drain: {len(drained.moved)} partitions in {ended - started:.1f} s")
    return {
        "clients": CLIENTS,
        "partitions_moved": len(drained.moved),
        "failed": drained.failed,
        "drain_s": round(ended - started, 2),
        "before": summary(before),
        "during": summary(during),
    }


# -- report ----------------------------------------------------------------------------------------
def goals(result: dict[str, Any]) -> list[Goal]:
    return [Goal("errors during the drain", result["drain"]["during"]["errors"], 0, "",
                 at_least=False)]  # fmt: skip


def print_tables(result: dict[str, Any]) -> None:
    report.print_table(
        "Moving one partition to the other node, against its size",
        ("objects", "bytes", "move s", "end to end s", "longest call ms", "peak +MiB src/dst"),
        [
            (_label(r), num(r["bytes"]), num(r["move_s"], 2), num(r["end_to_end_s"], 2),
             num(r["longest_call_ms"], 1),
             " / ".join(num(k / 1024, 1) for k in r["peak_growth_kib"]))
            for r in result["sizes"]
        ],
    )  # fmt: skip
    drain = result["drain"]
    report.print_table(
        f"{CLIENTS} RPC clients while node 0 is drained "
        f"({drain['partitions_moved']} partitions, {drain['drain_s']} s)",
        ("phase", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"),
        [
            (phase, num(s["calls"]), num(s["p50_ms"], 2), num(s["p95_ms"], 2),
             num(s["p99_ms"], 2), num(s["max_ms"], 1), num(s["errors"]))
            for phase, s in (("before", drain["before"]), ("during", drain["during"]))
        ],
    )  # fmt: skip


def _label(row: dict[str, Any]) -> str:
    return f"1 SQL object, {row['big_mb']} MB" if "big_mb" in row else f"{row['objects']:,}"


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = report.figure(1, 2, "Planned moves between two simulated nodes")
    sizes = result["sizes"]
    report.bars(axes[0], [f"{r['bytes'] / 2**20:.1f} MiB" for r in sizes],
                [r["move_s"] for r in sizes], "move time per partition (by size)", "s")  # fmt: skip
    drain = result["drain"]
    labels, heights = [], []
    for q in ("p50", "p95", "p99"):
        for phase in ("before", "during"):
            labels.append(f"{q} {phase}")
            heights.append(drain[phase][f"{q}_ms"])
    colors = ["tab:blue", "tab:orange"] * 3
    report.bars(axes[1], labels, heights, "RPC latency before / during a drain", "ms",
                colors=colors)  # fmt: skip
    report.save(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer objects, shorter windows")
    parser.add_argument("--objects", help="comma list of partition sizes (objects)")
    parser.add_argument("--window", type=float, help="seconds of load before the drain")
    parser.add_argument("--big-mb", type=int, help="MB of the one-object partition (0: none)")
    parser.add_argument("--output", default="moves", help="results file name (without suffix)")
    args = parser.parse_args(argv)
    args.objects = [int(n) for n in (args.objects or ("100,1000" if args.quick else
                                                      "100,1000,10000")).split(",")]  # fmt: skip
    if args.window is None:
        args.window = 2.0 if args.quick else 5.0
    if args.big_mb is None:
        args.big_mb = 20 if args.quick else 110
    return args


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    nodes = Nodes(2, root)
    try:
        await nodes.start()
        async with durable.connect(worker, address="auto") as env:
            sizes = [
                await move_time(nodes, env, count, index, root)
                for index, count in enumerate(args.objects)
            ]
            if args.big_mb:
                sizes.append(await big_move(nodes, env, len(sizes), args.big_mb, root))
            drain = await drain_latency(nodes, env, args.window)
    finally:
        await nodes.stop()
    return {"sizes": sizes, "drain": drain}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durable-moves-") as tmp:
        measured = asyncio.run(measure(args, Path(tmp)))
    chosen = {k: v for k, v in vars(args).items() if k not in ("quick", "output")}
    fixed = {"clients": CLIENTS, "partitions": PARTITIONS, "drain_objects": DRAIN_OBJECTS}
    meta = report.machine_meta(args=sys.argv[1:] if argv is None else list(argv))
    result = {"meta": meta, "settings": {**chosen, **fixed}, **measured}
    publish(result, args.output)
    return result


def publish(result: dict[str, Any], name: str) -> None:
    """``results/<name>.json`` (goals included) and ``.png``, then the tables on the console."""
    checked = goals(result)
    report.write_json(
        report.RESULTS / f"{name}.json", {**result, "goals": [g.as_dict() for g in checked]}
    )
    plot(result, report.RESULTS / f"{name}.png")
    print_tables(result)
    report.print_goals(checked)


if __name__ == "__main__":
    main()
