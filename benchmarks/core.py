"""Core benchmark: the in-process runtime (``durable.connect``) beside the physical limit.

Measures in one run, each part on a fresh temporary data dir (same ext4 disk as the repo):

(a) RPC to one object (``examples/counter.py``'s ``increment``: get + put, reply after commit)
    at 1/16/64 calls in flight, closed loop (N coroutines awaiting calls back to back) for a
    fixed time after a warm-up: calls/s, p50/p99 latency.
(b) 1,000 objects round robin, 64 in flight.
(c) creation of 100,000 new objects (each a first ``increment``, which writes one key), 64 in
    flight, and 2,000 created one at a time: µs per object.
(d) RSS with the 100,000 objects of (c) resident, then after evicting them (``Host.evict`` on
    every idle activation); 1,000,000 objects stored (written 64 at a time, evicted after 1 s
    idle), then each read back: µs per write and per read, size of the data dir.
(e) promoted objects (used ``sql.exec``): promotion, cold open after eviction (first call),
    warm call; a KV-only object's cold open beside it.
limit: ray-measurements.md §1 "turn" mode, the physical limit of one object in one process:
    64 coroutines doing get + put on a plain dict, written through to SQLite
    (``kv(k PRIMARY KEY, v) WITHOUT ROWID``, WAL, ``synchronous=NORMAL``), one COMMIT per event
    loop turn by a ``call_soon`` flusher, each caller awaiting a future resolved after the commit.
    Measured 163,000/s on this machine. (a) and (b) are reported as ratios of it.

Goals (issue #15), each printed beside the same run's limit where it has one: (a) ≥ 80,000 calls/s
at 64 in flight (at the very least 40,000), p99 ≤ 10 ms; (b) ≥ 50,000 calls/s; (c) a new object
≤ 50 µs; (d) 100,000 resident objects < 1 GiB (projected from (c)'s objects in ``--quick``).

The event loop is asyncio's default loop (not uvloop): ``connect`` runs in the caller's loop,
and scripts and tests use asyncio's.

Rerun (from the repo root)::

    .venv/bin/python benchmarks/core.py            # full run, a few minutes
    .venv/bin/python benchmarks/core.py --quick    # small sizes, 0.5 s per measurement
    .venv/bin/python benchmarks/core.py --stored 200000
    .venv/bin/python benchmarks/core.py --profile  # (a) at 64 in flight under cProfile
    .venv/bin/python benchmarks/core.py --profile c  # (c) creating objects under cProfile

Writes ``benchmarks/results/core.json`` and ``core.png`` (``--output NAME`` for another name;
nothing with ``--profile``). The stored-objects part stops writing after ``--stored-budget``
seconds (120 s by default; this machine writes ~3,000-5,000 new objects/s) and reports the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import itertools
import math
import os
import pstats
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable, examples and benchmarks

from benchmarks import report  # noqa: E402
from benchmarks.report import Goal, Latency, num  # noqa: E402
from durable import DurableObject, Worker, connect  # noqa: E402
from durable.connection import Env  # noqa: E402
from durable.host import Host, host_of  # noqa: E402
from examples.counter import Counter  # noqa: E402

LIMIT_MEASURED = 163_387  # ray-measurements.md §1, asyncio, turn, 64 callers
IN_FLIGHT = (1, 16, 64)
# Issue #15's goals (moonshots, reported met or not):
GOAL_CALLS = 80_000  # (a) one object, get + put, 64 in flight
GOAL_CALLS_FLOOR = 40_000  # (a) "at the very least"
GOAL_P99_MS = 10.0  # (a) at 64 in flight
GOAL_ROUND_ROBIN = 50_000  # (b) 1,000 objects, 64 in flight
GOAL_CREATE_US = 50.0  # (c) a new object
GOAL_RSS_KIB = 1024 * 1024  # (d) 100,000 resident objects
GOAL_RATIO = 0.25  # (a) at 64 ÷ the limit at 64 (issue #8)
RSS_AT = 100_000  # the goal's object count


@dataclass(frozen=True, slots=True)
class Sizes:
    seconds: float  # per throughput measurement
    warmup: float
    created: int  # (c), resident for (d)
    created_sequential: int
    stored: int  # (d)
    stored_budget: float  # seconds for the write pass, and again for the read pass
    promoted: int  # (e)
    round_robin: int = 1_000


FULL = Sizes(3.0, 0.5, 100_000, 2_000, 1_000_000, 120.0, 200)
QUICK = Sizes(0.5, 0.1, 5_000, 500, 20_000, 30.0, 50)


# -- objects under test ------------------------------------------------------------------------
class ReadableCounter(Counter):
    """The example Counter plus a read-only method, to read stored objects back."""

    async def read(self) -> int:
        return int(await self.ctx.storage.get("n", 0))


class SqlCounter(DurableObject):
    """An object that uses the SQL API, so it lives in a file of its own (promoted)."""

    async def setup(self) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS hits(at INTEGER)")
        sql.exec("INSERT INTO hits VALUES (?)", 1)
        return 1

    async def count(self) -> int:
        return int(self.ctx.storage.sql.exec("SELECT count(*) AS n FROM hits").one()["n"])


@asynccontextmanager
async def runtime(idle_timeout: float = 3600.0) -> AsyncIterator[tuple[Env, Host]]:
    """``connect`` on a fresh temporary data dir; yields the env and its in-process Host."""
    worker = Worker(
        objects={"COUNTER": ReadableCounter, "SQL": SqlCounter}, idle_timeout=idle_timeout
    )
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as data_dir:
        async with connect(worker, data_dir=data_dir) as env:
            yield env, local_host(env)


def local_host(env: Env) -> Host:
    """The Host that ``connect`` (no address) runs in this process."""
    host = host_of(env)
    if host is None:
        raise RuntimeError("connect() without an address should run its Host in this process")
    return host


def evict_idle(host: Host) -> int:
    """Hibernate every idle activation now (reaches into the host: there is no public call)."""
    evicted = 0
    for activation in list(host._active.values()):
        if activation.idle and not activation.cache.busy:
            host.evict(activation)
            evicted += 1
    return evicted


# -- drivers -----------------------------------------------------------------------------------
Call = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Throughput:
    in_flight: int
    calls: int  # completed inside the timed window
    seconds: float
    latency: Latency  # calls that started and ended inside the window
    completed: int  # every call, warm-up and tail included (for consistency checks)

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "calls_per_s": round(self.per_second),
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "latency": self.latency.as_dict(),
        }


async def closed_loop(call: Call, in_flight: int, seconds: float, warmup: float) -> Throughput:
    """``in_flight`` coroutines each awaiting ``call(i)`` back to back; i = 0, 1, 2 … overall."""
    begin = perf_counter() + warmup
    end = begin + seconds
    latencies: list[float] = []
    counts = [0, 0]  # [in window, all]

    async def caller(first: int) -> None:
        for i in itertools.count(first, in_flight):
            t0 = perf_counter()
            await call(i)
            t1 = perf_counter()
            counts[1] += 1
            if t1 > end:
                return
            if t1 >= begin:
                counts[0] += 1
                if t0 >= begin:
                    latencies.append(t1 - t0)

    await asyncio.gather(*(caller(w) for w in range(in_flight)))
    return Throughput(in_flight, counts[0], seconds, Latency.of(latencies), counts[1])


async def fan_out(call: Call, count: int, in_flight: int, budget: float = math.inf) -> int:
    """Call ``call(i)`` for i in 0..count-1, ``in_flight`` at once, for at most ``budget`` s.

    Returns how many completed; they are exactly i = 0..n-1. Yields to the loop every 256 calls
    of a caller, so timers (idle eviction) run even when calls complete without suspending.
    """
    indexes = iter(range(count))
    deadline = perf_counter() + budget
    done = 0

    async def caller() -> None:
        nonlocal done
        for n, i in enumerate(indexes):  # one shared iterator: each index goes to one caller
            await call(i)
            done += 1
            if n % 256 == 255:
                if perf_counter() > deadline:
                    return
                await asyncio.sleep(0)

    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return done


async def timed_each(call: Call, count: int) -> Latency:
    """Call ``call(i)`` for i in 0..count-1 one at a time, timing each."""
    samples = []
    for i in range(count):
        t0 = perf_counter()
        await call(i)
        samples.append(perf_counter() - t0)
    return Latency.of(samples)


def settle() -> None:
    gc.collect()


# -- the limit -------------------------------------------------------------------------------------
class TurnCounter:
    """ray-measurements.md §1 "turn": lock + dict + SQLite write-through, commit once per turn."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv(k PRIMARY KEY, v) WITHOUT ROWID")
        self.cache: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.pending: asyncio.Future[None] | None = None
        self.commits = 0

    async def increment(self) -> int:
        async with self.lock:
            n = self.cache.get("n", 0) + 1
            self.cache["n"] = n
            if self.pending is None:
                self.conn.execute("BEGIN")
                self.pending = self.loop.create_future()
                self.loop.call_soon(self._flush)
            self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", ("n", n))
            committed = self.pending
        await committed  # output gate: the reply waits for the commit; the lock does not
        return n

    def _flush(self) -> None:
        committed, self.pending = self.pending, None
        self.conn.execute("COMMIT")
        self.commits += 1
        if committed is not None:
            committed.set_result(None)

    def close(self) -> None:
        self.conn.close()


async def measure_limit(sizes: Sizes) -> dict[int, Throughput]:
    results = {}
    for in_flight in IN_FLIGHT:
        with tempfile.TemporaryDirectory(prefix="durable-limit-") as data_dir:
            counter = TurnCounter(Path(data_dir) / "object.sqlite")
            settle()
            call = counter.increment
            results[in_flight] = await closed_loop(
                lambda _, call=call: call(), in_flight, sizes.seconds, sizes.warmup
            )
            counter.close()
    return results


# -- (a) (b) throughput ----------------------------------------------------------------------------
async def measure_one_object(sizes: Sizes) -> tuple[dict[int, Throughput], bool]:
    """(a); also checks the counter advanced by exactly the number of calls (no lost update)."""
    results = {}
    async with runtime() as (env, _):
        stub = env.COUNTER.get_by_name("one")
        await stub.increment()
        for in_flight in IN_FLIGHT:
            settle()
            results[in_flight] = await closed_loop(
                lambda _: stub.increment(), in_flight, sizes.seconds, sizes.warmup
            )
        final = await stub.read()
    consistent = final == 1 + sum(r.completed for r in results.values())
    return results, consistent


async def measure_round_robin(sizes: Sizes) -> Throughput:
    """(b): warm objects (activated before the timed loop), 64 in flight."""
    async with runtime() as (env, _):
        stubs = [env.COUNTER.get_by_name(f"rr-{i}") for i in range(sizes.round_robin)]
        await fan_out(lambda i: stubs[i].increment(), len(stubs), 64)
        settle()
        return await closed_loop(
            lambda i: stubs[i % len(stubs)].increment(), 64, sizes.seconds, sizes.warmup
        )


# -- (c) (d) creation, memory, stored objects ------------------------------------------------------
async def measure_creation(sizes: Sizes) -> dict[str, Any]:
    """(c) and the resident/evicted half of (d)."""
    settle()
    rss_empty = report.rss_kib()
    async with runtime() as (env, host):
        rss_open = report.rss_kib()
        ns = env.COUNTER
        t0 = perf_counter()
        await fan_out(lambda i: ns.get_by_name(f"new-{i}").increment(), sizes.created, 64)
        create_s = perf_counter() - t0
        settle()
        rss_resident = report.rss_kib()
        active = host.statistics().active_objects
        t0 = perf_counter()
        evicted = evict_idle(host)
        evict_s = perf_counter() - t0
        settle()
        rss_evicted = report.rss_kib()
        sequential = await timed_each(
            lambda i: ns.get_by_name(f"seq-{i}").increment(), sizes.created_sequential
        )
    per_object_kib = (rss_resident - rss_open) / max(1, active)
    return {
        "objects": sizes.created,
        "in_flight": 64,
        "us_per_object": create_s / sizes.created * 1e6,
        "objects_per_s": sizes.created / create_s,
        "sequential": {"objects": sizes.created_sequential, "latency": sequential.as_dict()},
        "rss_kib": {
            "before_connect": rss_empty,
            "empty_runtime": rss_open,
            "resident": rss_resident,
            "after_eviction": rss_evicted,
        },
        "active_before_eviction": active,
        "evicted": evicted,
        "evict_us_per_object": evict_s / max(1, evicted) * 1e6,
        "kib_per_resident_object": per_object_kib,
        "rss_kib_projected_at_100k": rss_open + per_object_kib * RSS_AT,
    }


async def measure_stored(sizes: Sizes) -> dict[str, Any]:
    """The stored half of (d): write ``sizes.stored`` objects, then read each back."""
    with tempfile.TemporaryDirectory(prefix="durable-stored-") as data_dir:
        worker = Worker(objects={"COUNTER": ReadableCounter}, idle_timeout=1.0)
        async with connect(worker, data_dir=data_dir) as env:
            ns = env.COUNTER
            t0 = perf_counter()
            written = await fan_out(
                lambda i: ns.get_by_name(f"s-{i}").increment(),
                sizes.stored,
                64,
                sizes.stored_budget,
            )
            write_s = perf_counter() - t0
            evict_idle(local_host(env))
            wrong = 0

            async def read(i: int) -> None:
                nonlocal wrong
                wrong += await ns.get_by_name(f"s-{i}").read() != 1

            t0 = perf_counter()
            read_back = await fan_out(read, written, 64, sizes.stored_budget)
            read_s = perf_counter() - t0
            rss_after = report.rss_kib()
        size, files = report.dir_bytes(Path(data_dir))
    return {
        "target": sizes.stored,
        "written": written,
        "stopped_by_budget": written < sizes.stored or read_back < written,
        "budget_s_per_pass": sizes.stored_budget,
        "us_per_write": write_s / max(1, written) * 1e6,
        "writes_per_s": written / write_s,
        "read": read_back,
        "wrong_values": wrong,
        "us_per_read": read_s / max(1, read_back) * 1e6,
        "reads_per_s": read_back / read_s,
        "data_dir_bytes": size,
        "data_dir_files": files,
        "bytes_per_object": size / max(1, written),
        "rss_kib_after_reads": rss_after,
        "in_flight": 64,
        "idle_timeout_s": 1.0,
    }


# -- (e) promoted objects ----------------------------------------------------------------------
async def measure_promoted(sizes: Sizes) -> dict[str, Any]:
    n = sizes.promoted
    async with runtime() as (env, host):
        sql = [env.SQL.get_by_name(f"sql-{i}") for i in range(n)]
        kv = [env.COUNTER.get_by_name(f"kv-{i}") for i in range(n)]
        promote = await timed_each(lambda i: sql[i].setup(), n)
        await fan_out(lambda i: kv[i].increment(), n, 16)
        evict_idle(host)
        settle()
        cold = await timed_each(lambda i: sql[i].count(), n)
        warm = await timed_each(lambda i: sql[i].count(), n)
        kv_cold = await timed_each(lambda i: kv[i].read(), n)
        kv_warm = await timed_each(lambda i: kv[i].read(), n)
    return {
        "objects": n,
        "promotion": promote.as_dict(),
        "cold_open": cold.as_dict(),
        "warm_call": warm.as_dict(),
        "kv_cold_open": kv_cold.as_dict(),
        "kv_warm_call": kv_warm.as_dict(),
    }


# -- the run -------------------------------------------------------------------------------------
async def run(sizes: Sizes) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    meta = report.machine_meta(
        loop=f"{type(loop).__module__}.{type(loop).__name__} (asyncio default, not uvloop)",
        sizes=asdict(sizes),
    )
    parts: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("creation", lambda: measure_creation(sizes)),  # first: cleanest RSS baseline
        ("limit", lambda: measure_limit(sizes)),
        ("one_object", lambda: measure_one_object(sizes)),
        ("round_robin", lambda: measure_round_robin(sizes)),
        ("promoted", lambda: measure_promoted(sizes)),
        ("stored", lambda: measure_stored(sizes)),
    ]
    for name, step in steps:
        t0 = perf_counter()
        report.console.print(f"[dim]measuring {name} …[/]")
        parts[name] = await step()
        report.console.print(f"[dim]  {name}: {perf_counter() - t0:.1f} s[/]")
    return {"meta": meta, **parts}


def summarize(raw: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    limit: dict[int, Throughput] = raw["limit"]
    one, consistent = raw["one_object"]
    rr: Throughput = raw["round_robin"]
    ratios = {f"a_{n}": one[n].per_second / limit[n].per_second for n in IN_FLIGHT}
    ratios["b_64"] = rr.per_second / limit[64].per_second
    result = {
        "meta": raw["meta"],
        "limit": {
            "measured_in_reference": LIMIT_MEASURED,
            **{str(n): t.as_dict() for n, t in limit.items()},
        },
        "one_object": {
            "consistent": consistent,
            **{str(n): t.as_dict() for n, t in one.items()},
        },
        "round_robin": {"objects": sizes.round_robin, **rr.as_dict()},
        "ratios_to_limit": {k: round(v, 3) for k, v in ratios.items()},
        "creation": raw["creation"],
        "stored": raw["stored"],
        "promoted": raw["promoted"],
    }
    result["goals"] = [g.as_dict() for g in goals(result, sizes)]
    return result


def goals(result: dict[str, Any], sizes: Sizes) -> list[Goal]:
    """Issue #15's goals, each beside the same run's limit where it has one."""
    limit, one, rr = result["limit"]["64"], result["one_object"]["64"], result["round_robin"]
    ratios, limit_calls = result["ratios_to_limit"], num(limit["calls_per_s"])
    a_beside = f"{ratios['a_64']:.2f}× limit {limit_calls}"
    calls, p99_ms = one["calls_per_s"], one["latency"]["p99_us"] / 1000
    return [
        Goal("(a) one object, 64 in flight", calls, GOAL_CALLS, "calls/s", beside=a_beside),
        Goal("(a) the same, at the very least", calls, GOAL_CALLS_FLOOR, "calls/s",
             beside=a_beside),
        Goal("(a) p99, 64 in flight", p99_ms, GOAL_P99_MS, "ms", at_least=False,
             beside=f"limit p99 {limit['latency']['p99_us'] / 1000:.2f} ms"),
        Goal("(a) at 64 ÷ limit at 64", ratios["a_64"], GOAL_RATIO, "×",
             beside=f"limit {limit_calls} calls/s"),
        Goal(f"(b) {rr['objects']:,} objects round robin", rr["calls_per_s"], GOAL_ROUND_ROBIN,
             "calls/s", beside=f"{ratios['b_64']:.2f}× limit {limit_calls} (1 object)"),
        creation_goal(result["creation"]),
        memory_goal(result["creation"], sizes),
    ]  # fmt: skip


def creation_goal(creation: dict[str, Any]) -> Goal:
    """(c) a new object, 64 in flight (no limit to compare with: beside it, one at a time)."""
    p50 = creation["sequential"]["latency"]["p50_us"]
    return Goal("(c) µs per new object, 64 in flight", creation["us_per_object"], GOAL_CREATE_US,
                "µs", at_least=False, beside=f"1 at a time: p50 {num(p50)} µs")  # fmt: skip


def memory_goal(creation: dict[str, Any], sizes: Sizes) -> Goal:
    """(d) RSS with 100,000 resident; projected from the objects created when fewer were."""
    resident_measured = sizes.created >= RSS_AT
    rss = (
        creation["rss_kib"]["resident"]
        if resident_measured
        else creation["rss_kib_projected_at_100k"]
    )
    empty, per_object = creation["rss_kib"]["empty_runtime"], creation["kib_per_resident_object"]
    beside = f"empty {_mib(empty)}, {num(per_object, 2)} KiB/object"
    return Goal("(d) RSS, 100,000 resident", rss / 1024, GOAL_RSS_KIB / 1024, "MiB",
                at_least=False, projected=not resident_measured, beside=beside)  # fmt: skip


# -- output ----------------------------------------------------------------------------------------
def print_tables(result: dict[str, Any]) -> None:
    meta = result["meta"]
    report.console.print(
        f"python {meta['python']}, SQLite {meta['sqlite']}, {meta['cpu_count']} CPUs, "
        f"loop {meta['loop']}, load at start {meta['loadavg_at_start'][0]:.2f}"
    )
    report.print_table(
        "Throughput (closed loop)",
        ("measurement", "in flight", "calls/s", "p50 µs", "p99 µs", "× limit"),
        throughput_rows(result),
    )
    report.print_table("Per-object costs and memory", ("measurement", "value"), cost_rows(result))
    report.print_goals(goals_from(result))


def throughput_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    ratios = result["ratios_to_limit"]
    for n in IN_FLIGHT:
        t = result["limit"][str(n)]
        rows.append(("limit: dict + SQLite, commit per turn", str(n), *_cells(t), "1.00"))
    for n in IN_FLIGHT:
        t = result["one_object"][str(n)]
        rows.append(
            ("(a) one object, Counter.increment", str(n), *_cells(t), f"{ratios[f'a_{n}']:.2f}")
        )
    rr = result["round_robin"]
    rows.append(
        (f"(b) {rr['objects']:,} objects round robin", "64", *_cells(rr), f"{ratios['b_64']:.2f}")
    )
    return rows


def _cells(t: dict[str, Any]) -> tuple[str, str, str]:
    lat = t["latency"]
    return num(t["calls_per_s"]), num(lat["p50_us"]), num(lat["p99_us"])


def cost_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [*_creation_rows(result["creation"]), *_stored_rows(result["stored"]),
            *_promoted_rows(result["promoted"])]  # fmt: skip


def _creation_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    rss, seq = c["rss_kib"], c["sequential"]
    rows = [
        (
            f"(c) create {c['objects']:,} objects, 64 in flight",
            f"{num(c['us_per_object'], 1)} µs/object",
        ),
        (
            f"(c) create {seq['objects']:,} objects, 1 in flight",
            f"p50 {num(seq['latency']['p50_us'])} µs, p99 {num(seq['latency']['p99_us'])} µs",
        ),
        ("(d) RSS, empty runtime", _mib(rss["empty_runtime"])),
        (
            f"(d) RSS, {c['active_before_eviction']:,} resident",
            f"{_mib(rss['resident'])} ({num(c['kib_per_resident_object'], 2)} KiB/object)",
        ),
    ]
    if c["objects"] < RSS_AT:
        rows.append(
            ("(d) RSS, projected at 100,000 resident", _mib(c["rss_kib_projected_at_100k"]))
        )
    rows.append(
        (
            f"(d) RSS after evicting {c['evicted']:,}",
            f"{_mib(rss['after_eviction'])} ({num(c['evict_us_per_object'], 1)} µs/evict)",
        )
    )
    return rows


def _stored_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    cut = f", stopped after {s['budget_s_per_pass']:.0f} s" if s["stopped_by_budget"] else ""
    return [
        (
            f"(d) store {s['written']:,} of {s['target']:,} objects, 64 in flight{cut}",
            f"{num(s['us_per_write'], 1)} µs/write ({num(s['writes_per_s'])}/s)",
        ),
        (
            f"(d) read back {s['read']:,} (cold), 64 in flight",
            f"{num(s['us_per_read'], 1)} µs/read ({num(s['reads_per_s'])}/s), "
            f"{s['wrong_values']} wrong values",
        ),
        (
            "(d) data dir",
            f"{num(s['data_dir_bytes'] / 2**20, 1)} MiB, {s['data_dir_files']} files, "
            f"{num(s['bytes_per_object'], 0)} B/object",
        ),
    ]


def _promoted_rows(p: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"(e) promote {p['objects']} objects (first sql.exec)", _ms(p["promotion"])),
        ("(e) promoted object: cold open + first call", _ms(p["cold_open"])),
        ("(e) promoted object: warm call", _ms(p["warm_call"])),
        ("(e) KV object: cold open + first call", _ms(p["kv_cold_open"])),
        ("(e) KV object: warm call", _ms(p["kv_warm_call"])),
    ]


def _mib(kib: float) -> str:
    return f"{num(kib / 1024, 1)} MiB"


def _ms(lat: dict[str, float]) -> str:
    return f"p50 {lat['p50_us'] / 1000:.3f} ms, p99 {lat['p99_us'] / 1000:.3f} ms"


def goals_from(result: dict[str, Any]) -> list[Goal]:
    return [Goal(**{k: v for k, v in g.items() if k != "met"}) for g in result["goals"]]


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = report.figure(2, 3, f"durable core benchmark ({result['meta']['when']})")
    ratios = result["ratios_to_limit"]
    report.bars(
        ax[0],
        ["(a) c=1", "(a) c=16", "(a) c=64", "(b) 1k objs c=64"],
        [ratios["a_1"], ratios["a_16"], ratios["a_64"], ratios["b_64"]],
        "throughput / limit (same in-flight)",
        "ratio",
        reference=(GOAL_RATIO, f"goal {GOAL_RATIO}× at c=64"),
    )
    labels, heights, colors = [], [], []
    for n in IN_FLIGHT:
        labels += [f"limit c={n}", f"(a) c={n}"]
        heights += [
            result["limit"][str(n)]["calls_per_s"],
            result["one_object"][str(n)]["calls_per_s"],
        ]
        colors += ["tab:gray", "tab:blue"]
    labels.append("(b) c=64")
    heights.append(result["round_robin"]["calls_per_s"])
    colors.append("tab:green")
    report.bars(
        ax[1],
        labels,
        heights,
        "calls/s",
        "calls/s",
        reference=(GOAL_CALLS, "(a) goal"),
        colors=colors,
    )
    lat_labels = [f"(a) c={n} p50" for n in IN_FLIGHT] + [f"(a) c={n} p99" for n in IN_FLIGHT]
    lat = [result["one_object"][str(n)]["latency"]["p50_us"] for n in IN_FLIGHT]
    lat += [result["one_object"][str(n)]["latency"]["p99_us"] for n in IN_FLIGHT]
    report.bars(ax[2], lat_labels, lat, "(a) latency", "µs", log=True)
    _plot_costs(ax[3], result)
    _plot_memory(ax[4], result)
    report.text_panel(ax[5], "goals", [g.line() for g in goals_from(result)])
    report.save(fig, path)


def _plot_costs(ax: Any, result: dict[str, Any]) -> None:
    c, s, p = result["creation"], result["stored"], result["promoted"]
    report.bars(
        ax,
        [
            "create c=64",
            "create c=1 p50",
            "store write",
            "store read",
            "promote p50",
            "SQL cold p50",
            "KV cold p50",
            "KV warm p50",
        ],
        [
            c["us_per_object"],
            c["sequential"]["latency"]["p50_us"],
            s["us_per_write"],
            s["us_per_read"],
            p["promotion"]["p50_us"],
            p["cold_open"]["p50_us"],
            p["kv_cold_open"]["p50_us"],
            p["kv_warm_call"]["p50_us"],
        ],
        "per-object costs",
        "µs",
        log=True,
        reference=(GOAL_CREATE_US, "create goal"),
    )


def _plot_memory(ax: Any, result: dict[str, Any]) -> None:
    creation = result["creation"]
    rss = creation["rss_kib"]
    bars = {
        "empty": rss["empty_runtime"],
        f"{creation['active_before_eviction']:,} resident": rss["resident"],
    }
    if creation["objects"] < RSS_AT:
        bars["projected 100k"] = creation["rss_kib_projected_at_100k"]
    bars["after eviction"] = rss["after_eviction"]
    labels = list(bars)
    heights = [kib / 1024 for kib in bars.values()]
    report.bars(ax, labels, heights, "RSS", "MiB", reference=(GOAL_RSS_KIB / 1024, "1 GiB goal"))


# -- profile -------------------------------------------------------------------------------------
async def profile(sizes: Sizes, part: str) -> None:
    """One part under cProfile; prints the top functions by cumulative and by own time.

    ``a``: (a) at 64 in flight for ``sizes.seconds``; ``b``: (b); ``c``: creating 10,000 objects.
    """
    async with runtime() as (env, _):
        ns = env.COUNTER
        stubs = [ns.get_by_name(f"p-{i}") for i in range(1 if part == "a" else sizes.round_robin)]
        await fan_out(lambda i: stubs[i].increment(), len(stubs), 64)

        async def workload() -> str:
            if part == "c":
                t0 = perf_counter()
                await fan_out(lambda i: ns.get_by_name(f"new-{i}").increment(), 10_000, 64)
                return f"{(perf_counter() - t0) / 10_000 * 1e6:,.1f} µs per new object"
            loop = await closed_loop(
                lambda i: stubs[i % len(stubs)].increment(), 64, sizes.seconds, 0.0
            )
            return f"{loop.per_second:,.0f} calls/s"

        profiler = cProfile.Profile()
        profiler.enable()
        outcome = await workload()
        profiler.disable()
    report.console.print(f"({part}) under cProfile, 64 in flight: {outcome}")
    for order, count in (("cumulative", 25), ("tottime", 15)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(count)
        print(out.getvalue())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 0.5 s per measurement")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="a",
        choices=("a", "b", "c"),
        help="only this part under cProfile (default a: one object, 64 in flight)",
    )
    parser.add_argument("--stored", type=int, help="objects to store in (d) (default 1,000,000)")
    parser.add_argument("--stored-budget", type=float, help="seconds for each pass of (d) stored")
    parser.add_argument("--seconds", type=float, help="seconds per throughput measurement")
    parser.add_argument(
        "--output", default="core", help="results/<OUTPUT>.json and .png (default: core)"
    )
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.stored is not None:
        sizes = replace(sizes, stored=args.stored)
    if args.stored_budget is not None:
        sizes = replace(sizes, stored_budget=args.stored_budget)
    if args.seconds is not None:
        sizes = replace(sizes, seconds=args.seconds)
    return sizes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = sizes_from(args)
    if args.profile:
        asyncio.run(profile(sizes, args.profile))
        return
    result = summarize(asyncio.run(run(sizes)), sizes)
    result["meta"]["args"] = vars(args)
    result["meta"]["loadavg_at_end"] = list(os.getloadavg())
    json_path = report.RESULTS / f"{args.output}.json"
    report.write_json(json_path, result)
    plot(result, json_path.with_suffix(".png"))
    print_tables(result)
    report.console.print(f"wrote {json_path} and {json_path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
