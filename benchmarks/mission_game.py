"""Load study of the mining mission game (issue 13): the reviewed design against the sharded one.

For each configuration and each N players, a fresh server (``durable serve
examples.mission_game.app:worker --in-process``, or on a new local Ray with ``--ray``) and N
simulated players in one Node process beside it (``loadgen/mission_players.mjs``, real HTTP and
WebSockets): each player joins, opens its mission's socket, deploys 10 miners at random times in
the deploy window (waiting out 429 Retry-After), and watches, reading its totals and the
leaderboard every 10 s. ``original`` players also poll their mission's tasks every 500 ms, as the
reviewed page does. Players are grouped 20 to a mission (``--mission-size``).

Configurations (environment variables of the app): ``original`` (DESIGN=original: one scheduler
object), ``hash-1/4/16/64`` (DESIGN=sharded, STRATEGY=hash, SHARDS=n), ``namespace``
(DESIGN=sharded, STRATEGY=namespace: one scheduler per mission).

Per run: action latency p50/p95/p99 over every HTTP request a player makes (join, deploy, reads,
polls; per kind in the JSON), update delay (a task's ``last_cycle_at`` to the moment a player first
has that state, corrected by the clock offset measured from ``server_time``), WebSocket bytes and
frames per second per client, errors (HTTP answers other than 2xx and 429, network failures,
sockets failing or dropping; 429s counted apart), and the server's CPU (utime + stime of its
process tree, or of the Ray actors). A configuration's sweep stops at the first N where action p95
passes 1 s or more than 5 % of requests fail ("broke at N"); its knee is the first N where p95
passes 100 ms or errors start.

Goals (issue 13): ``original`` shows the review's verdict (works for < 50 miners, breaks at ~100,
catastrophic at 500+); every sharded configuration holds 1,000 players × 10 miners at action p95
≤ 100 ms, update delay p95 ≤ 250 ms and zero errors.

Not measured: a browser's rendering; requests still in flight when a run ends (dropped). The
players share the machine's 2 cores with the server: the players' own CPU is in the table, and
past about one core it, not the server, may be what limits a run.

Rerun (from the repo root; ``cd benchmarks/loadgen && npm ci`` once)::

    .venv/bin/python benchmarks/mission_game.py            # full sweep, about 17 minutes
    .venv/bin/python benchmarks/mission_game.py --quick    # N in 10, 100, 1,000; 30 s runs
    .venv/bin/python benchmarks/mission_game.py --configs original,hash-16 --players 10,50
    .venv/bin/python benchmarks/mission_game.py --configs hash-16 --players 1000 --profile /tmp/p

Writes ``benchmarks/results/mission_game.json`` and ``mission_game.png`` and prints the tables.
On failure (the server does not become healthy or dies, the players' process fails) the run is
recorded as failed (every request an error, so that configuration's sweep stops there) with the
tail of the server's log (``--server-log``), and the sweep goes on with the next configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find durable, examples and benchmarks

from benchmarks import report  # noqa: E402
from benchmarks.gateway import LOADGEN, Server, ray_actor_pids, running  # noqa: E402
from benchmarks.report import Goal, num  # noqa: E402

APP = "examples.mission_game.app:worker"
PLAYERS = (10, 50, 100, 250, 500, 1_000)
MINERS_PER_PLAYER = 10
KNEE_P95_MS = 100.0  # the knee: action p95 above this, or any error
BROKEN_P95_MS = 1_000.0  # a configuration's sweep stops here, or at BROKEN_ERROR_RATE
BROKEN_ERROR_RATE = 0.05
GOAL_ACTION_P95_MS = 100.0
GOAL_DELAY_P95_MS = 250.0
ORIGINAL_POLL_MS = 500  # the reviewed page polls the mission's tasks this often


@dataclass(frozen=True, slots=True)
class Design:
    """One server configuration: the app's environment and how its page behaves."""

    name: str
    env: dict[str, str]
    describe: str
    poll_ms: int = 0  # the page's polling period; 0: WebSocket only (polls after 5 s without)


def _hash(shards: int) -> Design:
    env = {"DESIGN": "sharded", "STRATEGY": "hash", "SHARDS": str(shards)}
    return Design(f"hash-{shards}", env, f"sharded, HashRouter over {shards} scheduler shards")


DESIGNS: dict[str, Design] = {
    "original": Design(
        "original",
        {"DESIGN": "original"},
        "the review's design: one scheduler object, full-state broadcasts, 500 ms polling",
        poll_ms=ORIGINAL_POLL_MS,
    ),
    **{f"hash-{s}": _hash(s) for s in (1, 4, 16, 64)},
    "namespace": Design(
        "namespace",
        {"DESIGN": "sharded", "STRATEGY": "namespace"},
        "sharded, TemplateRouter: one scheduler per mission",
    ),
}


@dataclass(frozen=True, slots=True)
class Sizes:
    players: tuple[int, ...]
    duration: float  # seconds of play per run
    deploy_window: float  # every miner is deployed before this many seconds
    ramp: float  # joins spread over this many seconds
    mission_size: int  # players per mission


FULL = Sizes(PLAYERS, 28.0, 14.0, 3.0, 20)  # every miner live (4 s × 10 cycles) from 14 to 28 s
QUICK = Sizes((10, 100, 1_000), 30.0, 15.0, 3.0, 20)
SERVER_OVERHEAD_S = 5.0  # start to healthy, stop: for the time estimate only
PROFILED = (
    "import cProfile, sys; from durable.cli import main; sys.argv = {argv!r}; "
    "cProfile.run('main()', {path!r})"
)


# -- the server -----------------------------------------------------------------------------------
def game_server(
    design: Design, cycle_ms: int, ray: bool, log: Path, profile: Path | None
) -> Callable[[int, Path], Server]:
    """``running()``'s server factory: ``durable serve`` the game with ``design``'s environment.

    Its output is appended to ``log`` (uvicorn logs every request at ``durable serve``'s level;
    on a console that would bury the tables); ``exec`` keeps the pid the server's own.
    """

    def make(port: int, data_dir: Path) -> Server:
        serve = ["serve", APP, "--port", str(port), "--data-dir", str(data_dir)]
        serve += ["--slots", "1"] if ray else ["--in-process"]
        if profile is None:
            command = [str(Path(sys.executable).parent / "durable"), *serve]
        else:  # cProfile writes the file when the server exits (SIGINT ends it normally)
            code = PROFILED.format(argv=["durable", *serve], path=str(profile))
            command = [sys.executable, "-c", code]
        argv = ["sh", "-c", 'exec "$@" >>"$SERVER_LOG" 2>&1', "sh", *command]
        # The leaderboard's SQL database defaults to ./.durable: keep each run's beside its data.
        database = f"sqlite:///{data_dir.parent / 'mission_game.db'}"
        env = {**design.env, "CYCLE_MS": str(cycle_ms), "MISSION_DB": database,
               "SERVER_LOG": str(log)}  # fmt: skip
        pids = ray_actor_pids if ray else process_tree
        return Server(design.name, argv, ("mission",), design.describe, env=env, pids=pids)

    return make


def process_tree(proc: subprocess.Popen[bytes]) -> list[int]:
    """``proc`` and every process descended from it (found through /proc/*/stat's ppid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (a process gone meanwhile counts 0)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


def log_tail(log: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no server log)"


# -- one run --------------------------------------------------------------------------------------
def play(port: int, players: int, sizes: Sizes, design: Design) -> dict[str, Any]:
    """The Node players against the server on ``port``; their JSON summary.

    Their progress lines (stderr) pass through to the console.
    """
    argv = ["node", str(LOADGEN / "mission_players.mjs"), "--base", f"http://127.0.0.1:{port}",
            "--players", str(players), "--duration", str(sizes.duration),
            "--deploy-window", str(sizes.deploy_window), "--ramp", str(sizes.ramp),
            "--miners", str(MINERS_PER_PLAYER), "--mission-size", str(sizes.mission_size),
            "--poll-ms", str(design.poll_ms)]  # fmt: skip
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, cwd=LOADGEN,
                         timeout=sizes.duration + 120)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"mission_players.mjs exited with {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass(frozen=True, slots=True)
class Options:
    cycle_ms: int
    ray: bool
    log: Path
    profile_dir: Path | None


def run_one(design: Design, players: int, sizes: Sizes, options: Options) -> dict[str, Any]:
    """A fresh server (new data dir) for one (configuration, N); the row of measurements."""
    profile = None
    if options.profile_dir is not None:
        profile = options.profile_dir / f"{design.name}-{players}.prof"
    with options.log.open("a") as log:
        log.write(f"\n==== {design.name} N={players} {time.strftime('%H:%M:%S')}\n")
    make = game_server(design, options.cycle_ms, options.ray, options.log, profile)
    try:
        with running(make) as (server, port, pids):
            cpu0, t0 = cpu_seconds(pids), time.perf_counter()
            result = play(port, players, sizes, design)
            cpu1, t1 = cpu_seconds(pids), time.perf_counter()
    except (RuntimeError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{design.name} N={players}: {error}\n{log_tail(options.log)}") from None
    return summarise(design.name, players, result, (cpu1 - cpu0) / (t1 - t0), server.startup_s)


def summarise(
    config: str, players: int, result: dict[str, Any], server_cores: float, startup_s: float
) -> dict[str, Any]:
    """The table's figures of one run, and the players' raw summary under ``raw``."""
    latency, delay, ws = result["http"]["latencyMs"], result["updateDelayMs"], result["ws"]
    deploy = result["http"]["kinds"].get("deploy", {})
    return {
        "config": config,
        "players": players,
        "miners_target": players * MINERS_PER_PLAYER,
        "deployed": result["deployed"],
        "joined": result["joined"],
        "actions": latency["n"],
        "action_p50_ms": latency["p50"],
        "action_p95_ms": latency["p95"],
        "action_p99_ms": latency["p99"],
        "deploy_p95_ms": deploy.get("p95"),
        "delay_p50_ms": delay["p50"],
        "delay_p95_ms": delay["p95"],
        "delay_p99_ms": delay["p99"],
        "delay_samples": delay["n"],
        "bytes_per_s_per_client": ws["bytesPerSPerClient"],
        "frames_per_s_per_client": ws["framesPerSPerClient"],
        "errors": result["errors"],
        "error_rate": result["errorRate"],
        "rate_limited": result["http"]["rateLimited"],
        "ws_disconnects": ws["disconnects"],
        "server_cpu_percent": round(server_cores * 100, 1),
        "client_cpu_percent": round(result["clientCpuS"] / result["elapsedS"] * 100, 1),
        "startup_s": round(startup_s, 2),
        "raw": result,
    }


def failed(config: str, players: int, error: str) -> dict[str, Any]:
    """The row of a run that produced no measurements: every request counts as failed."""
    unmeasured = ("action_p50_ms", "action_p95_ms", "action_p99_ms", "deploy_p95_ms",
                  "delay_p50_ms", "delay_p95_ms", "delay_p99_ms", "server_cpu_percent",
                  "client_cpu_percent", "startup_s")  # fmt: skip
    return {
        "config": config, "players": players, "miners_target": players * MINERS_PER_PLAYER,
        "deployed": 0, "joined": 0, "actions": 0, "delay_samples": 0,
        "bytes_per_s_per_client": 0.0, "frames_per_s_per_client": 0.0, "errors": 1,
        "error_rate": 1.0, "rate_limited": 0, "ws_disconnects": 0,
        **dict.fromkeys(unmeasured), "failed": error,
    }  # fmt: skip


# -- verdicts -------------------------------------------------------------------------------------
def _p95(row: dict[str, Any]) -> float:
    p95 = row["action_p95_ms"]
    return math.inf if p95 is None else float(p95)  # no answer at all: as slow as can be


def broken(row: dict[str, Any]) -> bool:
    """Past saving: action p95 above 1 s, or more than 5 % of requests and sockets failed."""
    return _p95(row) > BROKEN_P95_MS or row["error_rate"] > BROKEN_ERROR_RATE


def past_knee(row: dict[str, Any]) -> bool:
    return _p95(row) > KNEE_P95_MS or row["errors"] > 0


def verdicts(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int | None]]:
    """Per configuration, in the order first met: the knee and where the sweep broke (N or None).

    >>> verdicts([{"config": "c", "players": 10, "action_p95_ms": 20, "errors": 0,
    ...            "error_rate": 0.0}, {"config": "c", "players": 50, "action_p95_ms": 1500,
    ...            "errors": 0, "error_rate": 0.0}])
    {'c': {'knee_players': 50, 'broke_at_players': 50, 'largest_players': 50}}
    """
    out: dict[str, dict[str, int | None]] = {}
    for row in sorted(rows, key=lambda r: r["players"]):
        v = out.setdefault(
            row["config"], {"knee_players": None, "broke_at_players": None, "largest_players": 0}
        )
        v["largest_players"] = row["players"]
        if v["knee_players"] is None and past_knee(row):
            v["knee_players"] = row["players"]
        if v["broke_at_players"] is None and broken(row):
            v["broke_at_players"] = row["players"]
    return out


def goals(rows: Sequence[dict[str, Any]]) -> list[Goal]:
    """Issue 13's goals, on the largest N each configuration reached."""
    out = []
    for config, v in verdicts(rows).items():
        if config == "original":
            out += original_goals(v)
        else:
            out += sharded_goals(max((r for r in rows if r["config"] == config),
                                     key=lambda r: r["players"]))  # fmt: skip
    return out


def original_goals(v: dict[str, int | None]) -> list[Goal]:
    """The review's verdict: breaks at ~100 miners, catastrophic at 500+ (never: infinite)."""
    out = []
    for what, players, target in (("knee", v["knee_players"], 100),
                                  ("broke", v["broke_at_players"], 1_000)):  # fmt: skip
        miners = math.inf if players is None else players * MINERS_PER_PLAYER
        name = f"original: {what} at ≤ {target:,} miners"
        out.append(Goal(name, miners, target, "miners", at_least=False))
    return out


def sharded_goals(top: dict[str, Any]) -> list[Goal]:
    """Every miner deployed, action p95 ≤ 100 ms, update delay p95 ≤ 250 ms, no errors."""
    name = f"{top['config']} N={top['players']}:"
    delay = math.inf if top["delay_p95_ms"] is None else top["delay_p95_ms"]
    return [
        Goal(f"{name} miners deployed", top["deployed"], top["miners_target"], ""),
        Goal(f"{name} action p95", _p95(top), GOAL_ACTION_P95_MS, "ms", at_least=False),
        Goal(f"{name} update delay p95", delay, GOAL_DELAY_P95_MS, "ms", at_least=False),
        Goal(f"{name} errors", top["errors"], 0, "", at_least=False),
    ]


# -- the sweep ------------------------------------------------------------------------------------
def sweep(configs: Sequence[str], sizes: Sizes, options: Options) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        design = DESIGNS[config]
        report.console.print(f"[bold]{config}[/]: {design.describe}")
        for players in sizes.players:
            try:
                row = run_one(design, players, sizes, options)
            except (RuntimeError, ValueError) as error:  # the server or the players died
                report.console.print(f"  [red]N={players:,} failed[/]: {error}")
                row = failed(config, players, str(error))
            rows.append(row)
            report.console.print(
                f"  N={players:,}: action p95 {num(row['action_p95_ms'], 1)} ms, update delay "
                f"p95 {num(row['delay_p95_ms'], 1)} ms, errors {row['errors']} "
                f"({row['error_rate']:.1%}), server CPU {num(row['server_cpu_percent'])} %"
            )
            if broken(row):
                report.console.print(f"  [red]broke at N={players:,}[/]: sweep stops")
                break
    return rows


# -- output ---------------------------------------------------------------------------------------
def print_tables(rows: Sequence[dict[str, Any]], found: dict[str, dict[str, int | None]]) -> None:
    report.print_table(
        "Mission game: N players × 10 miners (latency over every HTTP request; CPU: % of a core)",
        ("config", "N", "miners", "p50 / p95 / p99 ms", "deploy p95", "delay p50 / p95 / p99",
         "KB/s/client", "errors", "429s", "CPU server / players"),
        [
            (r["config"], num(r["players"]), num(r["deployed"]),
             _triple(r, "action", 1), num(r["deploy_p95_ms"], 1), _triple(r, "delay", 0),
             num(r["bytes_per_s_per_client"] / 1024, 1), f"{r['errors']} ({r['error_rate']:.1%})",
             num(r["rate_limited"]),
             f"{num(r['server_cpu_percent'])} / {num(r['client_cpu_percent'])}")
            for r in rows
        ],
    )  # fmt: skip
    report.print_table(
        "Knees: p95 > 100 ms or errors start; broke: p95 > 1 s or errors > 5 %",
        ("config", "knee (players)", "knee (miners)", "broke at", "largest N run"),
        [(c, _n(v["knee_players"]), _n(v["knee_players"], MINERS_PER_PLAYER),
          _n(v["broke_at_players"]), num(v["largest_players"])) for c, v in found.items()],
    )  # fmt: skip


def _triple(row: dict[str, Any], measure: str, digits: int) -> str:
    """``'3.7 / 20.3 / 34.9'``: a measure's p50, p95 and p99 (ms) in one cell."""
    return " / ".join(num(row[f"{measure}_{q}_ms"], digits) for q in ("p50", "p95", "p99"))


def _n(players: int | None, scale: int = 1) -> str:
    return "none" if players is None else num(players * scale)


def plot(result: dict[str, Any], path: Path) -> None:
    rows, found = result["rows"], result["verdicts"]
    fig, axes = report.figure(
        2,
        2,
        f"mission game: N players × 10 miners, load beside the server ({result['meta']['when']})",
    )
    panels = (
        ("action_p95_ms", "HTTP action p95 (ms); x: broke", (KNEE_P95_MS, BROKEN_P95_MS), True),
        ("delay_p95_ms", "update delay p95 (ms)", (GOAL_DELAY_P95_MS,), True),
        ("error_percent", "errors (% of requests + sockets)", (BROKEN_ERROR_RATE * 100,), False),
        ("server_cpu_percent", "server CPU (% of one core)", (), False),
    )
    ticks = sorted({r["players"] for r in rows})
    for ax, (key, title, references, log_y) in zip(axes, panels, strict=True):
        for config in found:
            mine = [{**r, "error_percent": r["error_rate"] * 100} for r in rows
                    if r["config"] == config]  # fmt: skip
            # a log axis cannot show 0 (an update seen within the millisecond)
            mine = [r for r in mine if _plottable(r[key], log_y)]
            ax.plot([r["players"] for r in mine], [r[key] for r in mine], "o-", label=config)
            cut = [r for r in mine if broken(r)]
            ax.plot([r["players"] for r in cut], [r[key] for r in cut], "kx", markersize=10)
        for y in references:
            ax.axhline(y, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{n:,}" for n in ticks])
        ax.minorticks_off()
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("players (× 10 miners each)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    report.save(fig, path)


def _plottable(value: float | None, log_y: bool) -> bool:
    return value is not None and (value > 0 or not log_y)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N in 10, 100, 1,000; 30 s runs")
    parser.add_argument("--configs", default=",".join(DESIGNS), help="comma list of "
                        + ", ".join(DESIGNS))  # fmt: skip
    parser.add_argument("--players", help="comma list of N (default 10,50,100,250,500,1000)")
    parser.add_argument("--duration", type=float, help="seconds of play per run")
    parser.add_argument("--deploy-window", type=float, help="seconds in which miners deploy")
    parser.add_argument("--mission-size", type=int, help="players per mission (default 20)")
    parser.add_argument("--cycle-ms", type=int, default=4_000, help="mining cycle (CYCLE_MS)")
    parser.add_argument("--ray", action="store_true", help="durable serve on a new local Ray")
    parser.add_argument("--profile", type=Path, help="write a cProfile per run into this folder")
    log = Path(tempfile.gettempdir()) / "durable-mission-game-server.log"
    parser.add_argument("--server-log", type=Path, default=log, help="server output, appended")
    parser.add_argument("--out-dir", type=Path, default=report.RESULTS, help="for the JSON and PNG")
    parser.add_argument("--output", default="mission_game", help="<OUT-DIR>/<OUTPUT>.json, .png")
    args = parser.parse_args(argv)
    unknown = set(args.configs.split(",")) - set(DESIGNS)
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(sorted(unknown))}")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.players:
        sizes = replace(sizes, players=tuple(int(n) for n in args.players.split(",")))
    if args.duration is not None:  # keep the deploy window's share of the run unless given
        window = sizes.deploy_window * args.duration / sizes.duration
        sizes = replace(sizes, duration=args.duration, deploy_window=window,
                        ramp=min(sizes.ramp, args.duration / 6))  # fmt: skip
    if args.deploy_window is not None:
        sizes = replace(sizes, deploy_window=args.deploy_window)
    if args.mission_size is not None:
        sizes = replace(sizes, mission_size=args.mission_size)
    return sizes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sizes, configs = sizes_of(args), args.configs.split(",")
    runs = len(configs) * len(sizes.players)
    report.console.print(
        f"{runs} runs at most, {sizes.duration:.0f} s each: about "
        f"{runs * (sizes.duration + SERVER_OVERHEAD_S) / 60:.1f} minutes (less where a sweep "
        f"breaks early). Server log: {args.server_log}"
    )
    args.server_log.write_text("")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    options = Options(args.cycle_ms, args.ray, args.server_log, args.profile)
    rows = sweep(configs, sizes, options)
    found = verdicts(rows)
    settings = {**asdict(sizes), "cycle_ms": args.cycle_ms, "miners_per_player": MINERS_PER_PLAYER,
                "ray": args.ray, "configs": {c: asdict(DESIGNS[c]) for c in configs}}  # fmt: skip
    result: dict[str, Any] = {
        "meta": report.machine_meta(args=sys.argv[1:] if argv is None else list(argv)),
        "settings": settings,
        "rows": rows,
        "verdicts": found,
    }
    result["goals"] = [g.as_dict() for g in goals(rows)]
    report.write_json(args.out_dir / f"{args.output}.json", result)
    plot(result, args.out_dir / f"{args.output}.png")
    print_tables(rows, found)
    report.print_goals(goals(rows))
    return result


if __name__ == "__main__":
    main()
