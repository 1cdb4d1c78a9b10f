"""Todo backend benchmark: simulated TinyBase users saving and loading, rooms syncing, for every
sharding strategy, every migration strategy and the seed's single ``default-store``.

For each configuration a real server runs in a subprocess (``durable serve
examples.todos.app:worker --in-process`` with the configuration's environment variables) and:

(a) ``capacity``: ``Sizes.users`` users (1,000), ``Sizes.concurrency`` at a time, each doing
    ``Sizes.rounds`` rounds of what the Remote Persister does, back to back (closed loop):
    ``GET load`` (with ``If-None-Match``), add a todo, ``POST save`` (the whole list,
    ``Sizes.todos`` todos), ``HEAD load`` (the auto-load poll, 304). The server's throughput
    (requests/s); its latencies are those of a saturated server (Little's law: concurrency ÷
    throughput), not a user's. Measured by the client: ``loadgen/todos_users.mjs`` (Node and
    undici, as the load generator; an httpx client in this process measured its own CPU: 340
    req/s where the server answers 2,500 loads/s).
    Migration configurations start from a ``default-store`` filled by a ``SHARDING=single`` run
    on the same data dir, and migrate (``POST /admin/migrate``; flag: rollout 50 % then 100 %)
    while the users run.
(b) ``rooms``, at the same time: ``Sizes.rooms`` rooms (100) with two real TinyBase clients
    each (``todos_rooms.mjs``, tinybase@10.0.1 from ``tests/todos/js/node_modules``); one client
    of each room makes ``Sizes.edits`` edits back to back; convergence is from ``setRow`` to the
    row in the other client. p50/p95 convergence.
(c) storage per object after (a): ``todos_object_storage_bytes`` from ``/metrics``.
(d) ``fill``: ``single`` against ``user``: ``Sizes.fill_users`` users each save a list of
    ``Sizes.fill_kib`` KiB under ``STORAGE_LIMIT_BYTES = Sizes.limit_bytes`` (128 MiB, the
    Cloudflare limit): the single object answers 507 once it is full, per-user objects never.
(e) ``burst``: ``single`` against ``user``: ``Sizes.burst`` saves of different users sent at
    once; one object queues all of them (``Limits.max_pending_events`` = 1,000: 503 past it),
    per-user objects one each. Statuses and p50/p95.

(f) ``online`` (sharding configurations, after (a)–(c) on the same server): every one of the
    ``Sizes.users`` users online at once for ``Sizes.online_seconds``, as TinyBase's persister
    behaves: a load at login (spread over the first poll period), a ``HEAD`` poll every
    ``Sizes.poll_s`` (``autoLoadIntervalSeconds``, 5 s by default), a save after an edit every
    ``Sizes.edit_s`` on average; with it the ``Sizes.rooms`` rooms, each edit
    ``Sizes.room_pace_ms`` after the last on average. p50/p95 per operation and of convergence.

Goals (issue 14): per-user sharding at 1,000 users with save and load p95 ≤ 50 ms and
convergence p95 ≤ 200 ms, judged on (f): 1,000 users online at once is what "at 1,000 users"
means for a user of this backend; (a)'s closed loop instead finds the server's ceiling and
its latency is queueing at that ceiling. The single store shown hitting its limits (507s in (d)).

Rerun (from the repo root; needs ``make test``'s ``tests/todos/js/node_modules``)::

    .venv/bin/python benchmarks/todos.py            # full sizes, about 10 minutes
    .venv/bin/python benchmarks/todos.py --quick    # 300 users, 30 rooms: a few minutes
    .venv/bin/python benchmarks/todos.py --tiny     # seconds: the smoke test's sizes

Writes ``benchmarks/results/todos.json`` and ``todos.png`` (``--output NAME`` for another name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable and benchmarks

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.gateway import free_port, stop  # noqa: E402
from benchmarks.report import Goal, num, percentile  # noqa: E402

DURABLE = Path(sys.executable).parent / "durable"
CONFIGS: dict[str, dict[str, str]] = {
    "single": {"SHARDING": "single"},
    "user": {"SHARDING": "user"},
    "org": {"SHARDING": "org"},
    "feature": {"SHARDING": "feature"},
    "hybrid": {"SHARDING": "hybrid"},
    "big_bang": {"SHARDING": "user", "MIGRATION": "big_bang"},
    "lazy": {"SHARDING": "user", "MIGRATION": "lazy"},
    "flag": {"SHARDING": "user", "MIGRATION": "flag", "ROLLOUT": "0"},
}
ORG = "bench"
LOADGEN = ROOT / "benchmarks" / "loadgen"


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    rounds: int = 3
    concurrency: int = 32
    todos: int = 20
    rooms: int = 100
    edits: int = 10
    fill_users: int = 800
    fill_kib: int = 200
    limit_bytes: int = 128 * 2**20
    burst: int = 2000
    online_seconds: float = 15.0
    poll_s: float = 5.0
    edit_s: float = 5.0
    room_pace_ms: int = 1000


TINY = Sizes(
    users=12,
    rounds=2,
    concurrency=4,
    todos=5,
    rooms=3,
    edits=2,
    fill_users=12,
    fill_kib=40,
    limit_bytes=256 * 1024,
    burst=40,
    online_seconds=3.0,
    poll_s=1.0,
    edit_s=1.0,
    room_pace_ms=100,
)
# ``durable bench --quick``: every configuration and phase, a third of the users and rooms.
QUICK = Sizes(
    users=300, rounds=2, rooms=30, edits=5, burst=1000, online_seconds=6.0, poll_s=2.0, edit_s=2.0
)


# -- a server ------------------------------------------------------------------------------------
@asynccontextmanager
async def serving(
    data_dir: Path, env: dict[str, str], connections: int = 256
) -> AsyncIterator[httpx.AsyncClient]:
    """``durable serve`` of the todo app on a free port; yields a client once /healthz is 200."""
    port = free_port()
    settings = {
        "RATE_PER_MINUTE": "1e9",
        "RATE_BURST": "1e9",
        "BACKUP_CRON": "0 0 1 1 *",
        "DATABASE_URL": f"sqlite:///{data_dir.parent / 'todos.db'}",
        **env,
    }
    argv = [
        str(DURABLE),
        "serve",
        "examples.todos.app:worker",
        "--in-process",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    # The server's log goes to a file: a pipe nobody reads fills up (64 KiB of access lines) and
    # then blocks the server in the middle of a run.
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = (data_dir.parent / "server.log").open("ab")
    proc = subprocess.Popen(
        argv, env={**os.environ, **settings}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    # Idle connections are dropped by the client before the server's keep-alive timeout (5 s):
    # at httpx's default of 5 s too, a reused connection races the server's close (ReadError).
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as client:
            await _healthy(client, proc, Path(log.name))
            yield client
    finally:
        stop(proc)
        log.close()


async def _healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):  # 60 s at most
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server never became healthy")


# -- (a) users -----------------------------------------------------------------------------------
def body(user: str, todos: int, extra: int = 0) -> bytes:
    rows = {
        f"t{i}": {"text": f"{user} todo {i} " + "x" * extra, "done": i % 3 == 0}
        for i in range(todos)
    }
    return json.dumps([{"todos": rows}, {"owner": user}], separators=(",", ":")).encode()


def failures(statuses: dict[str, int]) -> int:
    """Requests answered 5xx or failed on the network (status 0), from ``{"<op> <status>": n}``."""
    return sum(n for key, n in statuses.items() if int(key.split()[1]) in (0, *range(500, 600)))


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[str] = Counter()

    async def timed(self, op: str, request: Awaitable[httpx.Response]) -> httpx.Response:
        start = time.perf_counter()
        response = await request
        self.latency[op].append(time.perf_counter() - start)
        self.statuses[f"{op} {response.status_code}"] += 1
        return response

    def summary(self, seconds: float) -> dict[str, Any]:
        total = sum(len(v) for v in self.latency.values())
        ops = {
            op: {
                "n": len(v),
                "p50_ms": percentile(sorted(v), 50) * 1e3,
                "p95_ms": percentile(sorted(v), 95) * 1e3,
            }
            for op, v in self.latency.items()
        }
        errors = failures(self.statuses)
        return {
            "requests": total,
            "seconds": seconds,
            "rps": total / seconds,
            "ops": ops,
            "statuses": dict(self.statuses),
            "errors": errors,
        }


async def users_phase(
    client: httpx.AsyncClient, config: str, sizes: Sizes, online: bool = False
) -> dict[str, Any]:
    """(a) with ``online=False``, else (f): ``todos_users.mjs`` in that mode."""
    users = [f"user{i:05d}" for i in range(sizes.users)]
    if config == "org" and not online:  # (f) runs after (a): members already
        await asyncio.gather(*(client.put(f"/api/{ORG}/members/{u}") for u in users))
    prefix = f"/api/{ORG}/users/" if config == "org" else "/api/"
    args = ["--origin", str(client.base_url).rstrip("/"), "--prefix", prefix, "--users",
            str(sizes.users), "--rounds", str(sizes.rounds), "--concurrency",
            str(sizes.concurrency), "--todos", str(sizes.todos),
            "--mode", "online" if online else "capacity", "--seconds", str(sizes.online_seconds),
            "--poll-s", str(sizes.poll_s), "--edit-s", str(sizes.edit_s)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "node", str(LOADGEN / "todos_users.mjs"), *args, cwd=LOADGEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"todos_users.mjs failed: {err.decode()[-2000:]}")
    run = json.loads(out)
    statuses: dict[str, int] = run["statuses"]
    ops = {op: {"n": v["n"], "p50_ms": v["p50"], "p95_ms": v["p95"], "p99_ms": v["p99"]}
           for op, v in run["latencyMs"].items()}  # fmt: skip
    return {
        "requests": run["requests"],
        "seconds": run["seconds"],
        "rps": run["requests"] / run["seconds"],
        "ops": ops,
        "statuses": statuses,
        "errors": failures(statuses),
    }


async def seed_single(data_dir: Path, sizes: Sizes) -> None:
    """The migrations' starting point: every user's list in ``default-store``."""
    async with serving(data_dir, {"SHARDING": "single"}) as client:
        users = [f"user{i:05d}" for i in range(sizes.users)]
        for start in range(0, len(users), 64):
            await asyncio.gather(
                *(
                    client.post(f"/api/{u}/save", content=body(u, sizes.todos))
                    for u in users[start : start + 64]
                )
            )


async def migrate(client: httpx.AsyncClient, config: str) -> dict[str, Any]:
    """Run the configuration's migration to the end while the users keep going."""
    start = time.perf_counter()
    steps = [50, 100] if config == "flag" else [None]
    for percent in steps:
        if percent is not None:
            await client.post("/admin/rollout", json={"percent": percent})
        await client.post("/admin/migrate")
        status = await _until_swept(client)
    return {"seconds": time.perf_counter() - start, **status}


async def _until_swept(client: httpx.AsyncClient) -> dict[str, Any]:
    for _ in range(36_000):  # an hour at most
        status: dict[str, Any] = (await client.get("/admin/migration")).json()
        if status["phase"] != "copying":
            return status
        await asyncio.sleep(0.1)
    raise RuntimeError("the migration did not finish")


# -- (b) rooms, (c) storage ------------------------------------------------------------------------
async def rooms_phase(ws_base: str, sizes: Sizes, pace_ms: int = 0) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "benchmarks" / "todos_rooms.mjs"),
        ws_base,
        str(sizes.rooms),
        str(sizes.edits),
        str(pace_ms),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"todos_rooms.mjs failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    times = sorted(result.pop("convergence_ms"))
    return {
        **result,
        "edits": len(times),
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "max_ms": times[-1] if times else None,
    }


async def storage(client: httpx.AsyncClient, data_dir: Path) -> dict[str, Any]:
    text = (await client.get("/metrics")).text
    sizes = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "todos_object_storage_bytes"
    ]
    on_disk, files = report.dir_bytes(data_dir)
    return {
        "objects": len(sizes),
        "max_object_bytes": max(sizes, default=0),
        "mean_object_bytes": sum(sizes) / len(sizes) if sizes else 0,
        "data_dir_bytes": on_disk,
        "data_dir_files": files,
    }


async def run_config(config: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    data_dir = tmp / config / "data"
    migrating = "MIGRATION" in CONFIGS[config]
    if migrating:
        await seed_single(data_dir, sizes)
    async with serving(data_dir, CONFIGS[config]) as client:
        ws_base = str(client.base_url).replace("http://", "ws://").rstrip("/")
        jobs: list[Awaitable[Any]] = [
            users_phase(client, config, sizes),
            rooms_phase(ws_base, sizes),
        ]
        if migrating:
            jobs.append(migrate(client, config))
        users, rooms, *migration = await asyncio.gather(*jobs)
        stored = await storage(client, data_dir)
        online = None if migrating else await online_phase(client, config, sizes)
    report.console.print(
        f"{config}: {num(users['rps'])} req/s, rooms p95 {num(rooms['p95_ms'], 1)} ms"
    )
    return {
        "config": config,
        "env": CONFIGS[config],
        "users": users,
        "rooms": rooms,
        "storage": stored,
        "migration": migration[0] if migration else None,
        "online": online,
    }


async def online_phase(client: httpx.AsyncClient, config: str, sizes: Sizes) -> dict[str, Any]:
    """(f): every user online at once at TinyBase's pace, with the rooms editing at a person's."""
    ws_base = str(client.base_url).replace("http://", "ws://").rstrip("/")
    users, rooms = await asyncio.gather(
        users_phase(client, config, sizes, online=True),
        rooms_phase(ws_base, sizes, sizes.room_pace_ms),
    )
    return {"users": users, "rooms": rooms}


# -- (d) the single store's storage limit --------------------------------------------------------
async def fill_phase(config: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    env = {**CONFIGS[config], "STORAGE_LIMIT_BYTES": str(sizes.limit_bytes)}
    rec = Recorder()
    first_refusal: int | None = None
    async with serving(tmp / f"fill-{config}" / "data", env) as client:
        for i in range(sizes.fill_users):
            user = f"filler{i:05d}"
            raw = body(user, 10, extra=sizes.fill_kib * 1024 // 10)
            response = await rec.timed("save", client.post(f"/api/{user}/save", content=raw))
            if response.status_code == 507 and first_refusal is None:
                first_refusal = i
                message = response.json()["message"]
    saved = rec.statuses.get("save 200", 0)
    return {
        "config": config,
        "saved": saved,
        "refused_507": rec.statuses.get("save 507", 0),
        "first_507_after_users": first_refusal,
        "list_bytes": len(raw),
        "first_507_message": message if first_refusal is not None else None,
        "save_p95_ms": percentile(sorted(rec.latency["save"]), 95) * 1e3,
    }


# -- (e) a burst: every user saves at once ---------------------------------------------------------
async def burst_phase(config: str, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """``Sizes.burst`` saves of different users sent at once: one object queues them all (503
    ``Overloaded`` past ``Limits.max_pending_events``), per-user objects one each."""
    rec = Recorder()
    async with serving(tmp / f"burst-{config}" / "data", CONFIGS[config], sizes.burst) as client:
        users = [f"burst{i:05d}" for i in range(sizes.burst)]
        start = time.perf_counter()
        await asyncio.gather(
            *(rec.timed("save", client.post(f"/api/{u}/save", content=body(u, 5))) for u in users)
        )
        seconds = time.perf_counter() - start
    ordered = sorted(rec.latency["save"])
    return {
        "config": config,
        "requests": len(users),
        "seconds": seconds,
        "statuses": dict(rec.statuses),
        "p50_ms": percentile(ordered, 50) * 1e3,
        "p95_ms": percentile(ordered, 95) * 1e3,
    }


# -- report --------------------------------------------------------------------------------------
def goals(result: dict[str, Any]) -> list[Goal]:
    by = {r["config"]: r for r in result["configs"]}
    out = []
    if by.get("user", {}).get("online"):
        online = by["user"]["online"]
        ops, users = online["users"]["ops"], result["sizes"]["users"]
        out += [
            Goal(f"user sharding, {users} users online: {op} p95", ops[op]["p95_ms"], 50, "ms",
                 at_least=False)
            for op in ("save", "load")
        ]  # fmt: skip
        out.append(
            Goal("rooms: convergence p95", online["rooms"]["p95_ms"], 200, "ms", at_least=False)
        )
    fills = {f["config"]: f for f in result["fill"]}
    if "single" in fills:
        out.append(
            Goal(
                "single default-store: saves refused with 507 at its limit",
                fills["single"]["refused_507"],
                1,
                "saves",
            )
        )
    return out


LATENCY_COLUMNS = ("save p50/p95 ms", "load p50/p95 ms", "poll p50/p95 ms", "converge p50/p95 ms")


def latencies(ops: dict[str, Any], rooms: dict[str, Any]) -> list[str]:
    """The cells under ``LATENCY_COLUMNS``: p50 / p95 of each operation and of convergence."""
    cells = [
        f"{num(ops[o]['p50_ms'], 1)} / {num(ops[o]['p95_ms'], 1)}" for o in ("save", "load", "poll")
    ]
    return [*cells, f"{num(rooms['p50_ms'], 1)} / {num(rooms['p95_ms'], 1)}"]


def print_tables(result: dict[str, Any]) -> None:
    rows = []
    for r in result["configs"]:
        ops, rooms, stored = r["users"]["ops"], r["rooms"], r["storage"]
        migration = r["migration"]
        rows.append(
            (
                r["config"],
                num(r["users"]["rps"]),
                *latencies(ops, rooms),
                num(stored["max_object_bytes"]),
                num(r["users"]["errors"]),
                "–" if migration is None else f"{num(migration['seconds'], 1)} s",
            )
        )
    report.print_table(
        f"(a)–(c) capacity: {result['sizes']['users']} users × {result['sizes']['rounds']} rounds,"
        f" {result['sizes']['concurrency']} at a time, back to back; {result['sizes']['rooms']} "
        "rooms editing back to back",
        (
            "config",
            "req/s",
            *LATENCY_COLUMNS,
            "max object B",
            "5xx",
            "migration",
        ),
        rows,
    )
    print_online(result)
    print_limits(result)
    report.print_goals(Goal(**{k: v for k, v in g.items() if k != "met"}) for g in result["goals"])


def print_online(result: dict[str, Any]) -> None:
    sizes = result["sizes"]
    rows = []
    for r in (r for r in result["configs"] if r.get("online")):
        users, rooms = r["online"]["users"], r["online"]["rooms"]
        ops = users["ops"]
        rows.append(
            (
                r["config"],
                num(users["rps"]),
                *latencies(ops, rooms),
                num(users["errors"]),
            )
        )
    report.print_table(
        f"(f) {sizes['users']} users online at once for {num(sizes['online_seconds'])} s (poll "
        f"every {num(sizes['poll_s'])} s, an edit every {num(sizes['edit_s'])} s), "
        f"{sizes['rooms']} rooms editing every {sizes['room_pace_ms']} ms",
        (
            "config",
            "req/s",
            *LATENCY_COLUMNS,
            "5xx",
        ),
        rows,
    )


def print_limits(result: dict[str, Any]) -> None:
    report.print_table(
        "(d) filling one object vs one per user",
        ("config", "saved", "507s", "first 507 after", "save p95 ms"),
        [
            (
                f["config"],
                num(f["saved"]),
                num(f["refused_507"]),
                num(f["first_507_after_users"]),
                num(f["save_p95_ms"], 1),
            )
            for f in result["fill"]
        ],
    )
    report.print_table(
        f"(e) {result['sizes']['burst']} saves of different users at once",
        ("config", "statuses", "seconds", "save p50 ms", "save p95 ms"),
        [
            (
                b["config"],
                ", ".join(f"{k}: {v}" for k, v in sorted(b["statuses"].items())),
                num(b["seconds"], 2),
                num(b["p50_ms"], 1),
                num(b["p95_ms"], 1),
            )
            for b in result["burst"]
        ],
    )


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = report.figure(3, 3, "TinyBase todo backend: sharding and migration strategies")
    rows = result["configs"]
    labels = [r["config"] for r in rows]
    report.bars(axes[0], labels, [r["users"]["rps"] for r in rows], "(a) capacity", "req/s")
    online = [r for r in rows if r.get("online")]
    for ax, op in ((axes[1], "save"), (axes[2], "load")):
        p95 = [r["online"]["users"]["ops"][op]["p95_ms"] for r in online]
        report.bars(ax, [r["config"] for r in online], p95, f"(f) {op} p95, every user online",
                    "ms", reference=(50, "goal 50 ms"))  # fmt: skip
    report.bars(
        axes[3],
        [r["config"] for r in online],
        [r["online"]["rooms"]["p95_ms"] for r in online],
        "(f) convergence p95, rooms at a person's pace",
        "ms",
        reference=(200, "goal 200 ms"),
    )
    report.bars(
        axes[4],
        labels,
        [r["storage"]["max_object_bytes"] for r in rows],
        "(c) largest object",
        "bytes",
        log=True,
    )
    fills = result["fill"]
    report.bars(
        axes[5],
        [f"{f['config']} 507s" for f in fills] + [f"{f['config']} saved" for f in fills],
        [f["refused_507"] for f in fills] + [f["saved"] for f in fills],
        f"(d) {result['sizes']['fill_users']} lists of {result['sizes']['fill_kib']} KiB, "
        f"limit {result['sizes']['limit_bytes'] // 2**20} MiB",
        "saves",
        colors=["tab:red"] * len(fills) + ["tab:green"] * len(fills),
    )
    bursts = result["burst"]
    report.bars(
        axes[6],
        [b["config"] for b in bursts],
        [b["p95_ms"] for b in bursts],
        f"(e) {result['sizes']['burst']} saves at once: p95",
        "ms",
    )
    refused = [sum(n for k, n in b["statuses"].items() if not k.endswith(" 200")) for b in bursts]
    report.bars(
        axes[7],
        [b["config"] for b in bursts],
        refused,
        "(e) refused (503)",
        "saves",
        colors=["tab:red"] * len(bursts),
    )
    report.bars(axes[8], labels, [r["users"]["ops"]["save"]["p95_ms"] for r in rows],
                "(a) save p95 at capacity (queueing)", "ms")  # fmt: skip
    report.save(fig, path)


async def run(configs: list[str], sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="durable-todos-") as tmp:
        results = [await run_config(c, sizes, Path(tmp)) for c in configs]
        fill = [await fill_phase(c, sizes, Path(tmp)) for c in ("single", "user")]
        burst = [await burst_phase(c, sizes, Path(tmp)) for c in ("single", "user")]
    return {"configs": results, "fill": fill, "burst": burst}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few users and rooms: seconds")
    parser.add_argument("--quick", action="store_true", help="300 users, 30 rooms: minutes")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configs")
    parser.add_argument("--users", type=int, help="override Sizes.users")
    parser.add_argument("--output", default="todos", help="results file name (without suffix)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else Sizes()
    if args.users:
        sizes = Sizes(**{**asdict(sizes), "users": args.users})
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    result = asyncio.run(run(configs, sizes))
    payload = {"meta": report.machine_meta(args=vars(args)), "sizes": asdict(sizes), **result}
    payload["goals"] = [g.as_dict() for g in goals(payload)]
    print_tables(payload)
    report.write_json(report.RESULTS / f"{args.output}.json", payload)
    plot(payload, report.RESULTS / f"{args.output}.png")


if __name__ == "__main__":
    main()
