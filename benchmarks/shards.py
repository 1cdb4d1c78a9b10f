"""Shards benchmark: a hot write workload through ``HashRouter`` with 1–64 shards, and a live
reshard 4 → 16 under load.

Measures, in process (``durable.connect``, one event loop, asyncio's default loop), each part on a
fresh temporary data dir whose players are stored first and then reopened (shards activated from
disk, as a deployment meets them):

(a) ``counter``: 128 concurrent clients (``Sizes.clients``), closed loop, each call
    ``add(player, 1)`` for a random one of 10,000 players (``Sizes.players``): get + put of the
    player's scoped row, reply after commit; routed
    by ``HashRouter(shards=S)`` for S in 1, 2, 4, 8, 16, 64: calls/s and p50/p95/p99 latency.
(b) ``leaderboard``: the same calls on a shard that also keeps its top 10 current, recomputed from
    all of its players on every update (``heapq.nlargest``), as the seeds' objects rebuild their
    queue on every operation (mission-game review: "Queue rebuilds become O(n)"). Per call that
    costs O(players / S): this is the workload where one object saturates.
(c) live reshard: the leaderboard workload on 4 shards; after ``Sizes.before`` seconds
    ``router.reshard(16)`` runs while the clients continue (``--reshard-concurrency`` batches
    of 32 keys at once, 4 by default), then ``Sizes.after`` seconds more. Calls/s and p99 in
    100 ms bins, before / during / after, and the reshard's duration and keys moved.
    Afterwards every player's points are checked against the acknowledged calls (exactly once).

What it cannot show: the cross-core scaling of sharding. Every shard here runs in the one process
and the one core that also runs the clients, so sharding divides per-object work (b) and nothing
else; spreading shards over host processes (DESIGN §2, one per CPU: 2 on this machine) is the Ray
issue's.

Rerun (from the repo root)::

    .venv/bin/python benchmarks/shards.py           # full run, a few minutes
    .venv/bin/python benchmarks/shards.py --quick   # small sizes, ~1 s per measurement

Writes ``benchmarks/results/shards.json`` and ``shards.png`` (``--output NAME`` for another name).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable and benchmarks

from benchmarks import report  # noqa: E402
from benchmarks.report import num, percentile  # noqa: E402
from durable import Worker, connect  # noqa: E402
from durable.routers import HashRouter, ShardObject, shard_wide  # noqa: E402

SHARDS = (1, 2, 4, 8, 16, 64)
BIN = 0.1  # seconds per bin of the reshard timeline


@dataclass(frozen=True, slots=True)
class Sizes:
    seconds: float  # per throughput measurement
    warmup: float
    players: int
    clients: int
    before: float  # (c): seconds of load before the reshard starts
    after: float  # (c): seconds of load after it ends


FULL = Sizes(4.0, 1.0, 10_000, 128, 3.0, 3.0)
QUICK = Sizes(1.0, 0.3, 2_000, 64, 1.0, 1.0)


# -- the shard objects -----------------------------------------------------------------------------
class CounterShard(ShardObject):
    """Points per player, nothing else: O(1) per call."""

    async def add(self, player: str, points: int) -> int:
        scope = self.scope(player)
        total: int = await scope.get("points", 0) + points
        await scope.put("points", total)
        return total

    async def points(self, player: str) -> int:
        value: int = await self.scope(player).get("points", 0)
        return value

    @shard_wide
    async def seed(self, players: dict[str, int]) -> int:
        """Store many players at once (setup only; they must be routed here)."""
        for player, points in players.items():
            await self.scope(player).put("points", points)
        return len(players)


class BoardShard(CounterShard):
    """Points per player and the shard's top 10, recomputed from every player on each update."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.scores: dict[str, int] | None = None
        self.best: list[tuple[str, int]] = []

    def _scores(self) -> dict[str, int]:
        if self.scores is None:
            rows = self.ctx.storage.kv.list(start="\x01")
            self.scores = {k.partition("\x00")[0]: v for k, v in rows.items() if "\x00" in k}
        return self.scores

    async def add(self, player: str, points: int) -> int:
        total = await super().add(player, points)
        scores = self._scores()
        scores[player] = total
        self.best = heapq.nlargest(10, scores.items(), key=itemgetter(1))
        return total

    async def _routing_key_changed(self, key: str) -> None:
        if self.scores is not None:  # a player arrived or left with a move
            points = await self.scope(key).get("points")
            if points is None:
                self.scores.pop(key, None)
            else:
                self.scores[key] = points

    @shard_wide
    async def top(self) -> list[tuple[str, int]]:
        return self.best


WORKLOADS = {"counter": "COUNTER", "leaderboard": "BOARD"}


@asynccontextmanager
async def seeded(workload: str, shards: int, players: list[str]) -> AsyncIterator[HashRouter]:
    """A router over shards that already hold ``players`` on disk.

    The players are stored in a first ``connect`` and measured in a second one, as a deployment
    meets them: objects activated from disk. (A fresh object's cache holds every key in memory
    and scans it whole for each ``list()``, which is not what long-lived shards see.)
    """
    worker = Worker(objects={"COUNTER": CounterShard, "BOARD": BoardShard}, idle_timeout=3600.0)
    with tempfile.TemporaryDirectory(prefix="durable-shards-") as data_dir:
        async with connect(worker, data_dir=data_dir) as env:
            await seed(HashRouter(getattr(env, WORKLOADS[workload]), shards=shards), players)
        async with connect(worker, data_dir=data_dir) as env:
            yield HashRouter(getattr(env, WORKLOADS[workload]), shards=shards)


async def seed(router: HashRouter, players: list[str]) -> None:
    groups: dict[str, dict[str, int]] = {}
    for player in players:
        groups.setdefault(router.name_for(player), {})[player] = 0
    for name, group in groups.items():
        items = list(group.items())
        for i in range(0, len(items), 500):
            await router.namespace.get_by_name(name).seed(dict(items[i : i + 500]))


# -- the load -------------------------------------------------------------------------------------
@dataclass
class Samples:
    """(end time, latency) of every call, and the points acknowledged per player."""

    ends: list[float]
    latencies: list[float]
    acked: dict[str, int]


async def load(
    call: Callable[[str], Awaitable[object]],
    players: list[str],
    clients: int,
    until: Callable[[], bool],
) -> Samples:
    """``clients`` coroutines calling ``call(random player)`` back to back until ``until()``."""
    samples = Samples([], [], {})

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while not until():
            player = rng.choice(players)
            t0 = perf_counter()
            await call(player)
            t1 = perf_counter()
            samples.ends.append(t1)
            samples.latencies.append(t1 - t0)
            samples.acked[player] = samples.acked.get(player, 0) + 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return samples


def summary(samples: Samples, start: float, end: float) -> dict[str, float]:
    """Calls/s and latency percentiles (ms) of the calls that ended in ``[start, end)``."""
    window = sorted(
        lat for t, lat in zip(samples.ends, samples.latencies, strict=True) if start <= t < end
    )
    ms = 1000.0
    return {
        "calls_per_s": round(len(window) / (end - start), 1) if end > start else 0.0,
        "calls": len(window),
        "p50_ms": round(percentile(window, 50) * ms, 3),
        "p95_ms": round(percentile(window, 95) * ms, 3),
        "p99_ms": round(percentile(window, 99) * ms, 3),
    }


async def steady(workload: str, shards: int, sizes: Sizes) -> dict[str, Any]:
    """(a)/(b): one shard count, warm-up then a timed window."""
    players = [f"player-{i}" for i in range(sizes.players)]
    async with seeded(workload, shards, players) as router:
        begin = perf_counter() + sizes.warmup
        end = begin + sizes.seconds
        samples = await load(
            lambda p: router.call(p, "add", 1),
            players,
            sizes.clients,
            lambda: perf_counter() >= end,
        )
    return {"workload": workload, "shards": shards, **summary(samples, begin, end)}


async def live_reshard(
    sizes: Sizes, concurrency: int, workload: str = "leaderboard"
) -> dict[str, Any]:
    """(c): the workload on 4 shards, reshard to 16 while it runs, then check every point."""
    players = [f"player-{i}" for i in range(sizes.players)]
    async with seeded(workload, 4, players) as router:
        marks: dict[str, float] = {}

        async def reshard() -> None:
            await asyncio.sleep(sizes.before)
            marks["start"] = perf_counter()
            marks["progress"] = (await router.reshard(16, concurrency=concurrency)).moved
            marks["end"] = perf_counter()

        def until() -> bool:
            return "end" in marks and perf_counter() >= marks["end"] + sizes.after

        t0 = perf_counter()
        samples, _ = await asyncio.gather(
            load(lambda p: router.call(p, "add", 1), players, sizes.clients, until), reshard()
        )
        t1 = perf_counter()
        wrong = 0
        for player in players:
            wrong += await router.call(player, "points") != samples.acked.get(player, 0)
        stats = router.statistics()
    start, end = marks["start"], marks["end"]
    bins = []
    for i in range(int((t1 - t0) / BIN)):
        lo = t0 + i * BIN
        part = summary(samples, lo, lo + BIN)
        bins.append(
            {"t": round(i * BIN, 2), "calls_per_s": part["calls_per_s"], "p99_ms": part["p99_ms"]}
        )
    return {
        "workload": workload,
        "players": sizes.players,
        "concurrency": concurrency,
        "from_shards": 4,
        "to_shards": 16,
        "reshard_seconds": round(end - start, 3),
        "keys_moved": marks["progress"],
        "redirects": stats.redirects,
        "players_wrong_after": wrong,
        "phases": {
            "before": summary(samples, t0 + min(0.3, sizes.before / 3), start),
            "during": summary(samples, start, end),
            "after": summary(samples, end, t1),
        },
        "start_s": round(start - t0, 3),
        "end_s": round(end - t0, 3),
        "timeline": bins,
    }


# -- output ---------------------------------------------------------------------------------------
def print_steady(rows: list[dict[str, Any]]) -> None:
    for workload in WORKLOADS:
        mine = [r for r in rows if r["workload"] == workload]
        base = mine[0]["calls_per_s"] if mine else 1.0
        report.print_table(
            f"({'a' if workload == 'counter' else 'b'}) {workload}: HashRouter, in process",
            ("shards", "calls/s", "× 1 shard", "p50 ms", "p95 ms", "p99 ms"),
            [
                (
                    str(r["shards"]), num(r["calls_per_s"]), num(r["calls_per_s"] / base, 2),
                    num(r["p50_ms"], 2), num(r["p95_ms"], 2), num(r["p99_ms"], 2),
                )
                for r in mine
            ],
        )  # fmt: skip


def print_reshard(live: dict[str, Any]) -> None:
    report.print_table(
        f"(c) live reshard 4 → 16 ({live['workload']}): {live['keys_moved']:,} keys moved in "
        f"{live['reshard_seconds']:.2f} s, {live['players_wrong_after']} players wrong after",
        ("phase", "calls/s", "p50 ms", "p95 ms", "p99 ms"),
        [
            (phase, num(p["calls_per_s"]), *(num(p[q], 2) for q in ("p50_ms", "p95_ms", "p99_ms")))
            for phase, p in live["phases"].items()
        ],
    )  # fmt: skip


def note(rows: list[dict[str, Any]], live: dict[str, Any]) -> list[str]:
    """The closing interpretation, from the measured numbers."""

    def rate(workload: str, shards: int) -> float:
        found = [r for r in rows if r["workload"] == workload and r["shards"] == shards]
        return float(found[0]["calls_per_s"])

    board = [r for r in rows if r["workload"] == "leaderboard"]
    best = max(board, key=lambda r: r["calls_per_s"])
    one = rate("leaderboard", 1)
    counter = [rate("counter", s) for s in SHARDS]
    before, during, after = (live["phases"][p] for p in ("before", "during", "after"))
    return [
        f"counter: {num(min(counter))}-{num(max(counter))} calls/s at every shard count. An O(1)",
        "  object does not saturate in process: the one event loop (clients, router, all",
        "  shards, SQLite commits) does, so shards add only routing cost.",
        f"leaderboard: one object saturates at {num(one)} calls/s (its top 10 is rebuilt",
        f"  over all {live['players']:,} players per call); {best['shards']} shards reach "
        f"{num(best['calls_per_s'])}/s ({best['calls_per_s'] / one:.1f}x),",
        f"  close to the counter's ceiling ({num(rate('counter', best['shards']))}/s): past it,",
        "  more shards buy nothing in one process. More CPU needs shards spread over host",
        "  processes (Ray issue): at most 2x more on this 2-core machine.",
        f"reshard 4->16 under load: {live['keys_moved']:,} keys in {live['reshard_seconds']:.1f} s",
        f"  ({live['concurrency']} batches at once); calls/s {num(before['calls_per_s'])} -> "
        f"{num(during['calls_per_s'])} -> {num(after['calls_per_s'])},",
        f"  p99 {num(before['p99_ms'], 1)} -> {num(during['p99_ms'], 1)} -> "
        f"{num(after['p99_ms'], 1)} ms; {live['players_wrong_after']} players wrong afterwards.",
        "  Keys move 32 per batch (4 RPCs per batch, each queued behind the clients).",
    ]


def plot(rows: list[dict[str, Any]], live: dict[str, Any], lines: list[str], path: Path) -> None:
    fig, axes = report.figure(
        2, 3, "durable routers: hot writes over HashRouter shards (in process, 2 cores)"
    )
    ax = axes[0]
    for workload, color in (("counter", "tab:blue"), ("leaderboard", "tab:orange")):
        mine = [r for r in rows if r["workload"] == workload]
        ax.plot(
            [r["shards"] for r in mine],
            [r["calls_per_s"] for r in mine],
            "o-",
            color=color,
            label=workload,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(SHARDS, [str(s) for s in SHARDS])
    ax.set_xlabel("shards")
    ax.set_ylabel("calls/s")
    ax.set_title("throughput vs shards", fontsize=10)
    ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)
    for ax, workload in ((axes[1], "counter"), (axes[2], "leaderboard")):
        mine = [r for r in rows if r["workload"] == workload]
        for q, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
            ax.plot([r["shards"] for r in mine], [r[q] for r in mine], style, label=q[:3])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(SHARDS, [str(s) for s in SHARDS])
        ax.set_xlabel("shards")
        ax.set_ylabel("latency, ms")
        ax.set_title(f"{workload} latency", fontsize=10)
        ax.legend(fontsize=8)
    times = [b["t"] for b in live["timeline"]]
    for ax, field, label in ((axes[3], "calls_per_s", "calls/s"), (axes[4], "p99_ms", "p99 ms")):
        ax.plot(times, [b[field] for b in live["timeline"]], color="tab:orange")
        ax.axvspan(
            live["start_s"], live["end_s"], color="tab:red", alpha=0.15, label="reshard 4→16"
        )
        ax.set_xlabel("seconds")
        ax.set_ylabel(label)
        ax.set_title(f"live reshard: {label} per {int(BIN * 1000)} ms", fontsize=10)
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    report.text_panel(axes[5], "reading", lines)
    report.save(fig, path)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ~1 s per measurement")
    parser.add_argument("--output", default="shards", help="results/<NAME>.json and .png")
    parser.add_argument(
        "--reshard-concurrency", type=int, default=4, help="batches of moves at once in (c)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    await steady("counter", 1, QUICK)  # warm up (imports, page cache) before the first number
    rows = []
    for workload in WORKLOADS:
        for shards in SHARDS:
            rows.append(await steady(workload, shards, sizes))
            report.console.print(f"{workload} × {shards}: {num(rows[-1]['calls_per_s'])} calls/s")
    live = await live_reshard(sizes, args.reshard_concurrency)
    print_steady(rows)
    print_reshard(live)
    lines = note(rows, live)
    for line in lines:
        report.console.print(line)
    meta = report.machine_meta(quick=args.quick, sizes=asdict(sizes), loop="asyncio")
    payload = {"meta": meta, "steady": rows, "reshard": live, "note": lines}
    report.write_json(report.RESULTS / f"{args.output}.json", payload)
    plot(rows, live, lines, report.RESULTS / f"{args.output}.png")


if __name__ == "__main__":
    asyncio.run(main())
