"""HTTP and WebSocket gateway benchmark: servers in their own process, Node clients beside them.

Each server configuration is one function ``(port, data_dir) -> Server`` in ``CONFIGS``; the
driver starts it, polls ``/healthz`` (bounded), runs the scenarios it supports, and stops it. The
Ray issue adds its configurations the same way. Today:

``durable``  the in-process runtime: uvicorn (uvloop, httptools, ``DurableWebSocketProtocol``) and
             the Host in one process, ``durable.collector.Collector`` once serving (young
             generations only): ``durable dev --in-process`` with uvloop (the CLI runs asyncio's
             default loop). Results before 2026-11-23 19:00 ran ``gc.freeze()`` instead.
``hello``    a plain Starlette hello world under the same uvicorn settings: the reference point.
``workerd``  Cloudflare's runtime serving the same workloads (``reference/worker.mjs`` through the
             pinned npm ``miniflare``, SQLite-backed objects): measured in the same run, because
             a figure copied from another machine does not travel (workerd ran 3x slower on this
             Intel than on the AMD where ``workerd-bench.md`` was taken; Python barely moved).

Scenarios (closed loop, ``loadgen/loadgen.mjs``, one keep-alive connection per request in flight,
the method of ``../shared/reference/workerd-bench.md``):

(a) one object: ``GET /counter/c`` (``examples/counter.py``: get + put, reply after the commit) at
    1/16/64 connections. Goal: at or above workerd's req/s at each level, from the same run.
(b) 1,000 objects round robin: ``GET /counter/{r}``, r = request index mod 1,000, at 1/16/64.
(rpc) one object through a route that calls ``stub.increment()`` (RPC, not ``fetch``), 1/16/64.
(cold) new objects: ``GET /counter/cold-<run>-{i}``, every request a name never seen, 16 in
    flight, no warm-up (workerd-bench.md (c)): objects created per second.
(c) WebSockets: ``loadgen/ws_idle.mjs`` opens 9,000 sockets over 9 rooms (objects), then
    ``loadgen/ws_fanout.mjs`` opens 1,000 more to one room: 10,000 open on one gateway. Client 0
    sends ``B:<seq>``, the room object's ``websocket_message`` sends it to every socket of the room
    (one push to the gateway, which fans out): time until the last of the 1,000 has it (p50/p99,
    ``--rounds`` rounds after 5 warm-up), then broadcasts/s with 1 and 16 in flight. RSS per idle
    socket: (server RSS with the 10,000 open and every room object hibernated - RSS before any
    socket) / 10,000. Goal: p99 ≤ 50 ms.
hello: (a)'s concurrencies against ``GET /hello``.

Every durable figure is printed beside hello's and workerd's at the same concurrency from the same
run (``÷ hello``, ``÷ workerd``). Goals (issue #15), for ``ray`` (``durable serve`` on Ray) and
for ``durable`` (in process), each labelled: at 64 connections one object ≥ 0.70× hello's req/s,
1,000 objects ≥ 0.50×, server CPU per request ≤ 1.5× hello's, no errors. A goal whose reference
did not run (``--configs`` without hello) is left out, not guessed.

Micro-batching many calls per channel write is the channel's (Ray issue), not measured here.
The clients share the 2 cores with the server (as in the reference runs): compare ratios within
one run rather than absolute numbers across runs.

Rerun (from the repo root; ``npm ci`` once in ``benchmarks/loadgen`` and ``benchmarks/reference``)::

    .venv/bin/python benchmarks/gateway.py           # full, ~3 minutes
    .venv/bin/python benchmarks/gateway.py --quick   # 2 s per level, 1,000 sockets
    .venv/bin/python benchmarks/gateway.py --configs hello --scenarios a

Writes ``benchmarks/results/gateway.json`` and ``gateway.png`` and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable, examples and benchmarks

from benchmarks import report  # noqa: E402
from benchmarks.report import Goal, num, ratio  # noqa: E402

LOADGEN = ROOT / "benchmarks" / "loadgen"
REFERENCE = ROOT / "benchmarks" / "reference"
GOAL_WS_P99_MS = 50.0
CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True, slots=True)
class Sizes:
    duration: float  # seconds per concurrency level
    warmup: float
    idle_sockets: int  # held open beside the room
    room_sockets: int  # receive each broadcast
    rounds: int
    sustained: float  # seconds per broadcast window


FULL = Sizes(6.0, 1.0, 9_000, 1_000, 100, 5.0)
QUICK = Sizes(2.0, 0.5, 900, 100, 30, 2.0)


# -- server configurations -----------------------------------------------------------------------
@dataclass
class Server:
    """How to start one server configuration and which scenarios it serves."""

    name: str
    argv: list[str]
    scenarios: tuple[str, ...]
    describe: str
    env: dict[str, str] = field(default_factory=dict)
    pids: Callable[[subprocess.Popen[bytes]], list[int]] = lambda proc: [proc.pid]
    startup_s: float = 0.0  # process start to the first 200 from /healthz


def durable_in_process(port: int, data_dir: Path) -> Server:
    argv = [sys.executable, __file__, "serve", "durable", "--port", str(port),
            "--data-dir", str(data_dir)]  # fmt: skip
    return Server("durable", argv, ("a", "b", "rpc", "cold", "c"),
                  "in-process Host + gateway, uvloop")  # fmt: skip


def starlette_hello(port: int, data_dir: Path) -> Server:
    argv = [sys.executable, __file__, "serve", "hello", "--port", str(port)]
    return Server("hello", argv, ("hello",), "plain Starlette hello world, same uvicorn")


def workerd_miniflare(port: int, data_dir: Path) -> Server:
    argv = ["node", str(REFERENCE / "serve.mjs"), "--port", str(port), "--persist", str(data_dir)]
    return Server("workerd", argv, ("hello", "a", "b", "rpc", "cold", "c"),
                  "Cloudflare workerd via Miniflare (npm, pinned), SQLite-backed objects",
                  pids=workerd_pids)  # fmt: skip


def workerd_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The workerd process Miniflare started (the server's CPU is there, not in Node)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == proc.pid and b"workerd" in (entry / "cmdline").read_bytes():
                return [int(entry.name)]
    return [proc.pid]


def durable_on_ray(
    target: str, scenarios: tuple[str, ...], describe: str, slots: int = 1
) -> Callable[[int, Path], Server]:
    """``durable serve`` on a new local Ray: the gateway runs in the host actor's process."""

    def make(port: int, data_dir: Path) -> Server:
        argv = [str(Path(sys.executable).parent / "durable"), "serve", target, "--port",
                str(port), "--data-dir", str(data_dir), "--slots", str(slots)]  # fmt: skip
        return Server(target.rpartition(":")[2], argv, scenarios, describe, pids=ray_actor_pids)

    return make


def ray_actor_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The Ray workers running durable's actors (their CPU is the server's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"ray::HostActor" in cmdline or b"ray::ObjectActor" in cmdline:
                pids.append(int(entry.name))
    return pids or [proc.pid]


CONFIGS: dict[str, Callable[[int, Path], Server]] = {
    "hello": starlette_hello,
    "workerd": workerd_miniflare,
    "durable": durable_in_process,
    "ray": durable_on_ray("benchmarks.apps:worker", ("a", "b", "rpc", "cold"),
                          "durable serve: Ray host actor with its gateway in-process"),
    "ray-2slots": durable_on_ray("benchmarks.apps:worker", ("a", "b"),
                                 "durable serve, 2 host slots (SO_REUSEPORT gateways)", slots=2),
    "ray-dedicated": durable_on_ray("benchmarks.apps:dedicated", ("a",),
                                    "placement=dedicated: one Ray actor per object, Ray calls"),
}  # fmt: skip


# -- the served apps (run in the server process) ---------------------------------------------------
def bench_worker() -> Any:
    """The counter of examples/counter.py and a broadcast room, for (a), (b) and (c)."""
    from benchmarks.apps import worker

    return worker


async def serve_durable(port: int, data_dir: Path) -> None:
    import uvicorn

    from durable import connect
    from durable.collector import Collector
    from durable.gateway import Health, build_app, server_config
    from durable.host import host_of

    worker = bench_worker()
    async with connect(worker, data_dir=data_dir) as env:
        gateway = build_app(worker, env, Health(), host=host_of(env), sole_holder=True)
        server = uvicorn.Server(server_config(gateway, "127.0.0.1", port, backlog=4096))
        gateway.health.ready = True
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        collector = Collector()  # as ``durable dev --in-process``
        collector.start()
        try:
            await task
        finally:
            collector.stop()
            gateway.close()


async def serve_hello(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def healthz(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hello", hello), Route("/healthz", healthz)])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", lifespan="off",
                            http="httptools", log_level="warning", backlog=4096)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    gc.freeze()
    await task


def serve(config: str, port: int, data_dir: Path | None, profile: Path | None = None) -> None:
    import uvloop

    if profile is not None:  # a cProfile of the whole server run, written when it stops
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            serve(config, port, data_dir)
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
        return

    with (
        contextlib.suppress(KeyboardInterrupt),  # uvicorn re-raises the SIGINT it handled
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        if config == "hello":
            runner.run(serve_hello(port))
        else:
            assert data_dir is not None
            runner.run(serve_durable(port, data_dir))


# -- the driver ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(make: Callable[[int, Path], Server]) -> Iterator[tuple[Server, int, list[int]]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="durable-http-") as tmp:
        server = make(port, Path(tmp) / "data")
        started = time.perf_counter()
        proc = subprocess.Popen(server.argv, env={**os.environ, **server.env}, cwd=ROOT)
        try:
            wait_healthy(port, proc)
            server.startup_s = time.perf_counter() - started
            yield server, port, server.pids(proc)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a server's clean stop), then SIGKILL if it has not exited within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], polls: int = 600) -> None:
    import urllib.request

    for _ in range(polls):  # 60 s at most
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server never became healthy")


def node(script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run(["node", str(LOADGEN / script), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=LOADGEN)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def http_load(port: int, path: str, pids: list[int], sizes: Sizes, **extra: str) -> list[Any]:
    options = {"concurrency": ",".join(map(str, CONCURRENCY)), **extra}
    args = ["--url", f"http://127.0.0.1:{port}{path}", "--duration", str(sizes.duration),
            "--warmup", str(sizes.warmup), "--pids", ",".join(map(str, pids))]  # fmt: skip
    for key, value in options.items():
        args += [f"--{key}", value]
    runs: list[dict[str, Any]] = node("loadgen.mjs", *args)["runs"]
    return [
        {
            "concurrency": r["concurrency"],
            "rps": r["rps"],
            "errors": r["errors"],
            "latency_ms": r["latencyMs"],
            "server_cpu_us_per_request": r.get("serverCpuUsPerRequest"),
        }
        for r in runs
    ]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def websockets(port: int, pids: list[int], sizes: Sizes) -> dict[str, Any]:
    """(c): idle sockets over 9 rooms, then the fan-out room; RSS per idle socket."""
    pid = pids[0]
    before = rss_kib(pid)
    idle = subprocess.Popen(
        ["node", str(LOADGEN / "ws_idle.mjs"), "--url", f"ws://127.0.0.1:{port}/ws/idle-{{r}}",
         "--clients", str(sizes.idle_sockets), "--rooms", "9", "--batch", "100"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=LOADGEN,
    )  # fmt: skip
    try:
        assert idle.stdout is not None
        opened = json.loads(idle.stdout.readline())
        fanout = node("ws_fanout.mjs", "--url", f"ws://127.0.0.1:{port}/ws/bench",
                      "--clients", str(sizes.room_sockets), "--rounds", str(sizes.rounds),
                      "--duration", str(sizes.sustained), "--window", "1,16")  # fmt: skip
        # ws_fanout closed its sockets; measure memory with the idle ones only, all rooms asleep.
        time.sleep(3.0)  # > idle_timeout (2 s): every room object is evicted
        held = rss_kib(pid)
    finally:
        if idle.stdin is not None:
            idle.stdin.close()
        idle.wait(60)
    total_open = opened["opened"]
    return {
        "idle_opened": opened["opened"],
        "idle_failed": opened["failed"],
        "idle_connect_ms": opened["connectMs"],
        "room_sockets": sizes.room_sockets,
        "open_during_broadcast": total_open + sizes.room_sockets,
        "fanout": fanout,
        "rss_kib_before": before,
        "rss_kib_idle_open": held,
        "rss_kib_per_idle_socket": (held - before) / max(1, total_open),
    }


def run(configs: list[str], scenarios: list[str], sizes: Sizes) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in configs:
        with running(CONFIGS[name]) as (server, port, pids):
            report.console.print(f"[bold]{name}[/]: {server.describe} (pid {pids})")
            out: dict[str, Any] = {"describe": server.describe, "startup_s": server.startup_s}
            if "ray" in name:  # a dedicated actor starts on first use: warm the one object up
                http_load(port, "/counter/c", pids, replace(sizes, duration=1.0, warmup=0.5))
            wanted = [s for s in scenarios if s in server.scenarios]
            if "hello" in wanted:
                out["hello"] = http_load(port, "/hello", pids, sizes)
            if "a" in wanted:
                out["a"] = http_load(port, "/counter/c", pids, sizes)
            if "b" in wanted:
                out["b"] = http_load(port, "/counter/{r}", pids, sizes, distinct="1000")
            if "rpc" in wanted:
                out["rpc"] = http_load(port, "/rpc/c", pids, sizes)
            if "cold" in wanted:
                out["cold"] = http_load(port, f"/counter/cold-{name}-{{i}}", pids,
                                        replace(sizes, warmup=0.0), concurrency="16")  # fmt: skip
            if "c" in wanted:
                out["c"] = websockets(port, pids, sizes)
            results[name] = out
    return results


# -- summary -------------------------------------------------------------------------------------
SERVED_BY = {"durable": "durable (in process)", "ray": "ray (durable serve)"}
HELLO_SHARES = (("a", "one object", 0.70), ("b", "1,000 objects", 0.50))
GOAL_CPU_SHARE = 1.5  # server CPU per request, as a multiple of hello's


def row_at(results: dict[str, Any], config: str, scenario: str, c: int) -> dict[str, Any] | None:
    """One measured level of a configuration's scenario in this run, or None if it did not run."""
    rows = results.get(config, {}).get(scenario, [])
    return next((r for r in rows if r["concurrency"] == c), None)


def references(
    results: dict[str, Any], config: str, scenario: str, c: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Hello's and workerd's rows at the same concurrency in this run (None for a config's own)."""
    hello = None if config == "hello" else row_at(results, "hello", "hello", c)
    workerd = None if config == "workerd" else row_at(results, "workerd", scenario, c)
    return hello, workerd


def hello_goals(results: dict[str, Any], config: str) -> list[Goal]:
    """Issue #15 at 64 connections: one object ≥ 0.70× and 1,000 objects ≥ 0.50× the req/s of
    the same run's hello world, server CPU per request ≤ 1.5× hello's, and no errors."""
    hello = row_at(results, "hello", "hello", 64)
    if hello is None:
        return []
    label = SERVED_BY[config]
    out: list[Goal] = []
    errors: list[int] = []
    for scenario, what, share in HELLO_SHARES:
        row = row_at(results, config, scenario, 64)
        if row is not None:
            beside = f"{num(row['rps'])} vs hello {num(hello['rps'])} req/s"
            out.append(Goal(f"{label}: {what} c=64 ÷ hello", row["rps"] / hello["rps"], share,
                            "×", beside=beside))  # fmt: skip
            errors.append(row["errors"])
    one = row_at(results, config, "a", 64)
    cpu = one["server_cpu_us_per_request"] if one else None
    hello_cpu = hello["server_cpu_us_per_request"]
    if cpu and hello_cpu:
        beside = f"{num(cpu)} vs hello {num(hello_cpu)} µs"
        name = f"{label}: server CPU/req c=64 ÷ hello"
        out.append(Goal(name, cpu / hello_cpu, GOAL_CPU_SHARE, "×", at_least=False, beside=beside))
    if errors:
        out.append(Goal(f"{label}: errors at c=64", sum(errors), 0, "", at_least=False))
    return out


def workerd_goals(results: dict[str, Any], config: str) -> list[Goal]:
    """(a) one object: at or above workerd's req/s at each level, from the same run."""
    out = []
    for row in results.get(config, {}).get("a", []):
        c = row["concurrency"]
        workerd = row_at(results, "workerd", "a", c)
        if workerd is not None:
            name = f"{config} (a) one object c={c} ≥ workerd (same run)"
            out.append(Goal(name, row["rps"], workerd["rps"], "req/s",
                            beside=f"{ratio(row['rps'], workerd['rps'])} workerd"))  # fmt: skip
    return out


def goals(results: dict[str, Any]) -> list[Goal]:
    out = [g for config in SERVED_BY for g in hello_goals(results, config)]
    out += [g for config in SERVED_BY for g in workerd_goals(results, config)]
    c_ = results.get("durable", {}).get("c")
    if c_:
        p99 = c_["fanout"]["latencyMs"]["p99"]
        name = f"(c) broadcast to {c_['room_sockets']:,} of {c_['open_during_broadcast']:,} p99"
        out.append(Goal(name, p99, GOAL_WS_P99_MS, "ms", at_least=False))
    return out


def measured(results: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(config, scenario, row) for every HTTP level measured, in run order."""
    for config, out in results.items():
        for scenario in ("hello", "a", "b", "rpc", "cold"):
            for row in out.get(scenario, []):
                yield config, scenario, row


def throughput_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """req/s of each level beside hello's and workerd's at the same concurrency, same run."""
    rows: list[tuple[str, ...]] = []
    for config, scenario, r in measured(results):
        hello, workerd = references(results, config, scenario, r["concurrency"])
        hello_rps = hello["rps"] if hello else None
        workerd_rps = workerd["rps"] if workerd else None
        rows.append((f"{config} ({scenario}) c={r['concurrency']}", num(r["rps"]), num(hello_rps),
                     ratio(r["rps"], hello_rps), num(workerd_rps), ratio(r["rps"], workerd_rps),
                     str(r["errors"])))  # fmt: skip
    return rows


def cost_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Latency and server CPU per request of each level, CPU beside hello's (same concurrency)."""
    rows: list[tuple[str, ...]] = []
    for config, scenario, r in measured(results):
        hello, _ = references(results, config, scenario, r["concurrency"])
        cpu = r["server_cpu_us_per_request"]
        hello_cpu = hello["server_cpu_us_per_request"] if hello else None
        lat = r["latency_ms"]
        test = f"{config} ({scenario}) c={r['concurrency']}"
        rows.append((test, f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", num(cpu), num(hello_cpu),
                     ratio(cpu, hello_cpu)))  # fmt: skip
    return rows


def print_tables(result: dict[str, Any]) -> None:
    results = result["results"]
    if any(measured(results)):
        report.print_table(
            "HTTP req/s, closed loop, beside hello and workerd (same c, same run)",
            ("test", "req/s", "hello", "÷ hello", "workerd", "÷ workerd", "errors"),
            throughput_rows(results),
        )
        report.print_table(
            "HTTP latency and server CPU beside hello's (same c, same run)",
            ("test", "p50 ms", "p99 ms", "server µs/req", "hello µs/req", "÷ hello"),
            cost_rows(results),
        )
    startups = [(c, f"{out['startup_s']:.2f} s") for c, out in results.items()]
    report.print_table("start-up", ("config", "to /healthz 200"), startups)
    for config in ("durable", "workerd"):
        ws = results.get(config, {}).get("c")
        if ws:
            report.print_table(f"(c) WebSockets: {config}", ("measure", "value"), _ws_rows(ws))
    report.print_goals(goals(results))


def _ws_rows(ws: dict[str, Any]) -> list[tuple[str, str]]:
    lat = ws["fanout"]["latencyMs"]
    rows = [
        ("sockets open during the broadcasts", num(ws["open_during_broadcast"])),
        ("idle sockets: connect time", f"{num(ws['idle_connect_ms'])} ms"),
        (
            f"broadcast to {ws['room_sockets']:,}: p50 / p99 / max",
            f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} ms",
        ),
    ]
    for s in ws["fanout"]["sustained"]:
        rows.append(
            (
                f"broadcasts/s with {s['window']} in flight",
                f"{num(s['broadcastsPerS'], 1)} ({num(s['deliveriesPerS'])} deliveries/s)",
            )
        )
    before, held = ws["rss_kib_before"] / 1024, ws["rss_kib_idle_open"] / 1024
    rows.append(
        ("server RSS before sockets / with the idle ones", f"{before:.1f} / {held:.1f} MiB")
    )
    rows.append(
        ("RSS per idle socket (rooms hibernated)", f"{ws['rss_kib_per_idle_socket']:.1f} KiB")
    )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = report.figure(1, 3, f"durable gateway benchmark ({result['meta']['when']})")
    labels, heights, colors = [], [], []
    palette = {"hello": "tab:gray", "a": "tab:blue", "b": "tab:green", "rpc": "tab:purple",
               "cold": "tab:orange"}  # fmt: skip
    for config, out in result["results"].items():
        for scenario in palette:
            for r in out.get(scenario, []):
                labels.append(f"{config} {scenario} c={r['concurrency']}")
                heights.append(r["rps"])
                colors.append("tab:red" if config == "workerd" else palette[scenario])
    report.bars(ax[0], labels, heights, "HTTP req/s (closed loop)", "req/s", colors=colors)
    ws = result["results"].get("durable", {}).get("c")
    if ws:
        lat = ws["fanout"]["latencyMs"]
        report.bars(ax[1], ["p50", "p90", "p99", "max"], [lat["p50"], lat["p90"], lat["p99"],
                    lat["max"]], f"(c) broadcast to {ws['room_sockets']:,} of "
                    f"{ws['open_during_broadcast']:,} open", "ms",
                    reference=(GOAL_WS_P99_MS, "p99 goal"))  # fmt: skip
    report.text_panel(ax[2], "goals", [g.line() for g in goals(result["results"])])
    report.save(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="(internal) run one server configuration")
    srv.add_argument("config", choices=("durable", "hello"))
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--data-dir", type=Path)
    srv.add_argument("--profile", type=Path, help="write a cProfile of the server here")
    parser.add_argument("--quick", action="store_true", help="short levels, 1,000 sockets")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of CONFIGS")
    parser.add_argument("--scenarios", default="hello,a,b,rpc,cold,c",
                        help="comma list: hello,a,b,rpc,cold,c")  # fmt: skip
    parser.add_argument("--duration", type=float, help="seconds per concurrency level")
    parser.add_argument("--sockets", type=int, help="sockets open in (c), a tenth in the room")
    parser.add_argument("--output", default="gateway", help="results/<OUTPUT>.json and .png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "serve":
        serve(args.config, args.port, args.data_dir, args.profile)
        return
    sizes = QUICK if args.quick else FULL
    if args.duration is not None:
        sizes = replace(sizes, duration=args.duration)
    if args.sockets is not None:
        room = max(2, args.sockets // 10)
        sizes = replace(sizes, idle_sockets=args.sockets - room, room_sockets=room)
    configs, scenarios = args.configs.split(","), args.scenarios.split(",")
    results = run(configs, scenarios, sizes)
    result = {
        "meta": report.machine_meta(args={k: v for k, v in vars(args).items() if k != "command"},
                                    sizes=asdict(sizes), loop="uvloop"),
        "results": results,
    }  # fmt: skip
    result["goals"] = [g.as_dict() for g in goals(results)]
    report.write_json(report.RESULTS / f"{args.output}.json", result)
    plot(result, report.RESULTS / f"{args.output}.png")
    print_tables(result)


if __name__ == "__main__":
    main()
