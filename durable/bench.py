"""``durable bench``: run the benchmark studies of ``benchmarks/`` and gather them in one report.

Each study is a script in the repository's ``benchmarks/`` folder that measures durable beside its
references in the same run (Starlette hello world, Cloudflare's workerd through Miniflare, the
one-Ray-actor-per-object design) and writes ``<name>.json`` and ``<name>.png``. This module runs
the chosen studies one after another (``--quick`` or full settings), then writes ``REPORT.md``:
the machine, headline ratios (durable / workerd and durable / hello, from the same run), every
goal met or not, the shard-count studies, scaling, and what each workload would cost at
Cloudflare's published Durable Object prices next to the CPU time it used here.

Guarantees:
- Studies never overlap: the two cores are the measuring instrument, so each study has the
  machine to itself (apart from its own load generator).
- A study that fails (non-zero exit, no JSON) is reported with its log's tail and the others still
  run; REPORT.md is always written; the command exits 1 if any study failed.
- Every figure in REPORT.md is read from a JSON written in this run (the ``results`` folder of
  ``--out``); a study not run in this invocation is marked "not run", never filled from an older
  file.

Does not guarantee: stable absolute numbers. This machine is shared and its CPU model changes
between sessions (workerd ran 3x slower on one Intel than on the AMD where the reference was
taken, while Python barely moved): read the ratios, which are taken within one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durable.errors import InvalidArgument

PRICES_URL = "https://developers.cloudflare.com/durable-objects/platform/pricing/"
PRICES_READ = "2026-12-03 (stored copy of the page; Workers Paid plan, beyond included usage)"


@dataclass(frozen=True, slots=True)
class Prices:
    """Cloudflare Durable Objects list prices (USD), SQLite-backed storage, Workers Paid plan."""

    per_million_requests: float = 0.15  # HTTP requests, RPC calls, alarms; WS messages 20:1
    per_million_gb_s: float = 12.50  # duration, billed at 128 MB per active object
    per_million_rows_read: float = 0.001
    per_million_rows_written: float = 1.00
    per_gb_month_stored: float = 0.20
    object_gb: float = 0.128


@dataclass(frozen=True, slots=True)
class Study:
    """One benchmark script and the arguments of its quick and full runs."""

    name: str  # --only NAME; writes <name>.json and <name>.png
    script: str  # benchmarks/<script>
    title: str
    quick: tuple[str, ...] = ("--quick",)
    full: tuple[str, ...] = ()
    timeout_s: float = 1800.0

    def argv(self, root: Path, quick: bool, extra: Sequence[str]) -> list[str]:
        args = self.quick if quick else self.full
        return [sys.executable, str(root / "benchmarks" / self.script), *args, *extra]


STUDIES: tuple[Study, ...] = (
    Study("gateway", "gateway.py",
          "HTTP and WebSockets: durable, workerd, hello, one actor per object",
          quick=("--quick", "--duration", "1.5")),
    Study("core", "core.py", "Core runtime in process: calls, creation, memory"),
    Study("alarms", "alarms.py", "Alarms: lateness at 5,000/s, re-arm after restart",
          quick=("--quick", "--repeat", "1")),
    Study("shards", "shards.py", "HashRouter shard counts and a live reshard"),
    Study("mission_game", "mission_game.py", "Mining game: original vs sharded, 10-1,000 players",
          quick=("--quick", "--configs", "original,hash-4,namespace", "--players", "10,100,500",
                 "--duration", "15", "--deploy-window", "8")),
    Study("todos", "todos.py", "TinyBase todo backend: every sharding strategy"),
    Study("nodes", "nodes.py", "Scaling: one node against three simulated nodes"),
    Study("moves", "moves.py", "Planned moves: move time against size, latency during a drain",
          quick=("--quick", "--objects", "100,1000", "--big-mb", "0")),
)  # fmt: skip


@dataclass
class Outcome:
    study: Study
    seconds: float
    returncode: int
    log: Path
    result: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None


def select(only: str | None, studies: Sequence[Study] = STUDIES) -> list[Study]:
    """The studies named in ``--only`` (comma list), in suite order; all when None."""
    if not only:
        return list(studies)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {s.name for s in studies}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidArgument(
            f"unknown study {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [s for s in studies if s.name in names]


def parse_study_args(pairs: Iterable[str]) -> dict[str, list[str]]:
    """``["core=--seconds 0.2"]`` → ``{"core": ["--seconds", "0.2"]}`` (extra args per study)."""
    extra: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, args = pair.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--study-args takes NAME=ARGS, got {pair!r}")
        extra.setdefault(name, []).extend(args.split())
    return extra


def repository_root(start: Path | None = None) -> Path:
    """The checkout holding ``benchmarks/`` (the current directory or one of its parents)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "benchmarks" / "report.py").is_file():
            return folder
    raise InvalidArgument(
        "durable bench runs the scripts of the repository's benchmarks/ folder: run it from a "
        "checkout of durable"
    )


def run_study(study: Study, root: Path, out: Path, quick: bool, extra: Sequence[str]) -> Outcome:
    """Run one study's script with its results sent to ``out``; never raises for its failure."""
    log = out / f"{study.name}.log"
    json_path = out / f"{study.name}.json"
    json_path.unlink(missing_ok=True)  # a stale file must not pass for this run's
    env = {**os.environ, "DURABLE_BENCH_OUT": str(out), "COLUMNS": "120"}
    started = time.perf_counter()
    with log.open("wb") as sink:
        try:
            code = subprocess.run(
                study.argv(root, quick, extra), cwd=root, env=env, stdout=sink,
                stderr=subprocess.STDOUT, timeout=study.timeout_s, check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = -1
    outcome = Outcome(study, time.perf_counter() - started, code, log)
    if json_path.is_file():
        outcome.result = json.loads(json_path.read_text())
    return outcome


# -- the report ------------------------------------------------------------------------------------
def write_report(outcomes: Sequence[Outcome], out: Path, quick: bool) -> Path:
    sections = [
        _header(outcomes, quick),
        _headlines(outcomes),
        _goals(outcomes),
        _shard_studies(outcomes),
        _scaling(outcomes),
        _costs(outcomes),
        _studies(outcomes),
    ]
    path = out / "REPORT.md"
    path.write_text("\n\n".join(s for s in sections if s) + "\n")
    return path


def _table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:,.{digits}f}"


def _figure(value: float) -> str:
    """Two decimals for small figures (ratios, ms), none for large ones (req/s)."""
    return _num(value, 2 if abs(value) < 100 else 0)


def _find(outcomes: Sequence[Outcome], name: str) -> dict[str, Any] | None:
    return next((o.result for o in outcomes if o.study.name == name and o.result), None)


def _header(outcomes: Sequence[Outcome], quick: bool) -> str:
    meta: dict[str, Any] = next((o.result.get("meta", {}) for o in outcomes if o.result), {})
    total = sum(o.seconds for o in outcomes)
    rows = [
        ("when", meta.get("when", "–")),
        ("CPU", f"{meta.get('cpu_model', '–')} ({meta.get('cpus_usable', '–')} usable)"),
        ("memory", f"{_num(meta.get('mem_total_kib', 0) / 1048576, 1)} GiB"),
        ("Python / SQLite", f"{meta.get('python', '–')} / {meta.get('sqlite', '–')}"),
        ("git commit", meta.get("git_commit", "–")),
        ("settings", "--quick" if quick else "full"),
        ("wall time", f"{total / 60:.1f} min"),
    ]
    runs = [
        (o.study.name, o.study.title, f"{o.seconds:.0f} s", "ok" if o.ok else _failure(o))
        for o in outcomes
    ]
    return "\n\n".join(
        [
            "# durable benchmark report",
            "Every figure below was measured in this run, on this machine, with the reference "
            "beside it: compare the ratios, not the absolute numbers with another report.",
            _table(("", ""), rows),
            _table(("study", "what", "time", "result"), runs),
        ]
    )


def _failure(outcome: Outcome) -> str:
    tail = outcome.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return f"FAILED (exit {outcome.returncode}: {tail[0][:120]}; see {outcome.log.name})"


def _rps(results: dict[str, Any], config: str, scenario: str, c: int) -> float | None:
    for row in results.get(config, {}).get(scenario, []):
        if row["concurrency"] == c:
            return float(row["rps"])
    return None


HEADLINE_SCENARIOS = (("a", 64, "one object"), ("b", 64, "1,000 objects"),
                      ("rpc", 64, "RPC, one object"), ("cold", 16, "new objects"))  # fmt: skip
DURABLE_CONFIGS = ("durable", "ray", "ray-2slots", "ray-dedicated")


def _headlines(outcomes: Sequence[Outcome]) -> str:
    gateway = _find(outcomes, "gateway")
    if gateway is None:
        return "## Headlines\n\nThe gateway study was not run: no durable / workerd ratios."
    results = gateway["results"]
    rows = []
    for scenario, c, what in HEADLINE_SCENARIOS:
        workerd = _rps(results, "workerd", scenario, c)
        hello = _rps(results, "hello", "hello", c)
        for config in DURABLE_CONFIGS:
            mine = _rps(results, config, scenario, c)
            if mine is None:
                continue
            rows.append((
                f"{what} (c={c})", config, _num(mine), _num(workerd),
                _ratio(mine, workerd), _num(hello), _ratio(mine, hello),
            ))  # fmt: skip
    return "\n\n".join([
        "## Headlines: durable / workerd and durable / hello, same run",
        "Each figure beside workerd's and the Starlette hello world's at the same concurrency. "
        "workerd is Cloudflare's runtime (npm `miniflare`, pinned in `benchmarks/reference/`) "
        "serving the same workloads; `ray-dedicated` is the naive design (one Ray actor per "
        "object).",
        _table(("workload", "durable config", "req/s", "workerd req/s", "÷ workerd",
                "hello req/s", "÷ hello"), rows),
    ])  # fmt: skip


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def _goals(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        for goal in (o.result or {}).get("goals", []):
            sign = "≥" if goal.get("at_least", True) else "≤"
            verdict = "**met**" if goal.get("met") else "not met"
            note = " (projected)" if goal.get("projected") else ""
            rows.append((o.study.name, goal["name"],
                         f"{_figure(goal['measured'])} {goal['unit']}{note}",
                         f"{sign} {_figure(goal['target'])}", verdict,
                         goal.get("beside") or "–"))  # fmt: skip
    if not rows:
        return "## Goals\n\nNo study reported goals in this run."
    met = sum(r[4] == "**met**" for r in rows)
    return "\n\n".join([
        f"## Goals ({met} of {len(rows)} met)",
        "Each goal of the issues, with the figure measured in this run and, beside it, the "
        "reference it is judged against from the same run (hello, workerd, the core limit).",
        _table(("study", "goal", "measured", "target", "verdict", "beside it, same run"), rows),
    ])  # fmt: skip


def _shard_studies(outcomes: Sequence[Outcome]) -> str:
    parts = ["## Shard-count studies"]
    for name in ("shards", "mission_game", "todos"):
        result = _find(outcomes, name)
        if result is None:
            parts.append(f"`{name}`: not run in this invocation.")
            continue
        parts.append(f"### {name}\n\n![{name}]({name}.png)")
        verdicts = result.get("verdicts")
        if isinstance(verdicts, dict) and verdicts:
            parts.append(_knees(verdicts))
            if "original" in verdicts:
                parts.append(_game_claims(verdicts["original"]))
    return "\n\n".join(parts)


def _knees(verdicts: dict[str, dict[str, Any]]) -> str:
    """Per configuration: the knee (first N past the p95 target or with errors), where it broke."""
    rows = [(config, _num(v.get("knee_players")), _num(v.get("broke_at_players")),
             _num(v.get("largest_players"))) for config, v in verdicts.items()]  # fmt: skip
    return _table(("configuration", "knee (players)", "broke at (players)", "largest N run"), rows)


MINERS_PER_PLAYER = 10


def _game_claims(original: dict[str, Any]) -> str:
    """The review's verdict on one scheduler object, checked against the measured knee."""
    knee, broke = original.get("knee_players"), original.get("broke_at_players")
    knee_m = None if knee is None else knee * MINERS_PER_PLAYER
    broke_m = None if broke is None else broke * MINERS_PER_PLAYER
    rows = [
        ("works for < 50 miners", f"knee at {_num(knee_m)} miners",
         "yes" if knee_m is None or knee_m > 50 else "no (broke earlier)"),
        ("breaks at ~100 miners", f"knee at {_num(knee_m)} miners",
         "yes" if knee_m is not None and knee_m <= 250 else "no"),
        ("catastrophic at 500+ miners", f"broke at {_num(broke_m)} miners",
         "yes" if broke_m is not None and broke_m <= 1_000 else "no"),
    ]  # fmt: skip
    return "The review's verdict on the original design (10 miners per player):\n\n" + _table(
        ("claim", "measured", "holds"), rows
    )


def _scaling(outcomes: Sequence[Outcome]) -> str:
    gateway = _find(outcomes, "gateway")
    rows = []
    if gateway is not None:
        for scenario, c, what in HEADLINE_SCENARIOS[:2]:
            one = _rps(gateway["results"], "ray", scenario, c)
            two = _rps(gateway["results"], "ray-2slots", scenario, c)
            rows.append((f"{what} (c={c})", _num(one), _num(two), _ratio(two, one)))
    return "\n\n".join([
        "## Scaling: host slots and nodes",
        _table(("workload", "1 slot req/s", "2 slots req/s", "2 ÷ 1"), rows) if rows else
        "The gateway study was not run.",
        _nodes(_find(outcomes, "nodes")),
        _moves(_find(outcomes, "moves")),
        "What 2 cores allow: the load generator, the gateways and the objects share two cores, "
        "so a second host slot, or a second and third simulated node, competes with the load "
        "generator for the same CPU; DESIGN §2 expects no gain here and the figures above are "
        "the check. The three-node rows measure what the hop between nodes costs (a request "
        "served by another node's slot crosses the channel), not what more machines "
        "would add.",
    ])  # fmt: skip


def _nodes(result: dict[str, Any] | None) -> str:
    """The simulated three-node cluster (``benchmarks/nodes.py``) against one node."""
    if result is None:
        return "The simulated three-node cluster (`nodes` study) was not run."
    measured = result["rows"]
    one = next((r["rps"] for r in measured if r["config"] == "one-node"), None)
    rows = [(r["config"], r["gateways"], _num(r["rps"]), _ratio(r["rps"], one),
             _num(r["p99_ms"], 1), _num(r["server_cpu_us_per_request"]))
            for r in measured]  # fmt: skip
    columns = ("configuration (1,000 objects, c=64)", "gateways", "req/s", "÷ one node", "p99 ms",
               "CPU µs/req")  # fmt: skip
    return (
        "A simulated Ray cluster (`ray.cluster_utils`; one slot per node, each node with its own "
        "data directory; a request for another node's partition crosses the channel):\n\n"
        + _table(columns, rows)
    )


def _moves(result: dict[str, Any] | None) -> str:
    """Planned moves between two simulated nodes (``benchmarks/moves.py``)."""
    if result is None:
        return "Planned moves (`moves` study) were not run."
    sizes = [(f"1 SQL object, {r['big_mb']} MB" if "big_mb" in r else _num(r["objects"]),
              f"{r['bytes'] / 2**20:,.1f}", f"{r['move_s']:.2f}", f"{r['end_to_end_s']:.2f}",
              _num(r["longest_call_ms"]))
             for r in result["sizes"]]  # fmt: skip
    drain = result["drain"]
    phases = [(phase, _num(drain[phase]["calls"]), _num(drain[phase]["p50_ms"], 2),
               _num(drain[phase]["p99_ms"], 2), _num(drain[phase]["max_ms"], 1),
               _num(drain[phase]["errors"]))
              for phase in ("before", "during")]  # fmt: skip
    return "\n\n".join([
        "Planned moves between two simulated nodes (a copy with SQLite's backup API streamed over "
        "the channel; the partition's calls wait for the move, then run at the target):",
        _table(("objects in the partition", "MiB on disk", "move s (calls wait)",
                "asked → served s", "longest call ms"), sizes),
        f"A drain of {_num(drain['partitions_moved'])} partitions ({drain['drain_s']:.1f} s) "
        f"under {_num(drain['clients'])} RPC clients:",
        _table(("phase", "calls", "p50 ms", "p99 ms", "max ms", "errors"), phases),
    ])  # fmt: skip


def cost_per_million(rps: float, objects: int, concurrency: int, reads: float, writes: float,
                     prices: Prices = Prices()) -> float:  # fmt: skip
    """USD per million requests on Cloudflare for a closed-loop workload at ``rps``.

    Duration: ``min(objects, concurrency)`` objects are active for the whole run (Cloudflare
    bills an active object's wall time at 128 MB, shared by its concurrent requests), so each
    request costs ``object_gb * min(objects, concurrency) / rps`` GB-s.
    >>> round(cost_per_million(1000, 1, 64, 1, 1), 4)
    1.1526
    """
    gb_s = prices.object_gb * min(objects, concurrency) / rps * 1e6
    rows = reads * prices.per_million_rows_read + writes * prices.per_million_rows_written
    return prices.per_million_requests + gb_s * prices.per_million_gb_s / 1e6 + rows


COST_WORKLOADS = (("a", 64, 1, "one object, get + put"), ("b", 64, 1000, "1,000 objects"),
                  ("rpc", 64, 1, "RPC, get + put"), ("cold", 16, 10**9, "new objects"))  # fmt: skip


def _costs(outcomes: Sequence[Outcome]) -> str:
    gateway = _find(outcomes, "gateway")
    head = (
        "## Cost at Cloudflare's prices\n\n"
        f"Prices from {PRICES_URL}, read {PRICES_READ}: $0.15 per million requests, $12.50 per "
        "million GB-s of duration (128 MB per active object), $0.001 per million rows read, "
        "$1.00 per million rows written, $0.20 per GB-month stored. Each counter request reads "
        "and writes one row. Beside it, the server CPU time one million requests took here "
        "(durable's process, or workerd's) from the same run."
    )
    if gateway is None:
        return head + "\n\nThe gateway study was not run."
    rows = []
    for scenario, c, objects, what in COST_WORKLOADS:
        for config in ("workerd", "durable", "ray"):
            row = next((r for r in gateway["results"].get(config, {}).get(scenario, [])
                        if r["concurrency"] == c), None)  # fmt: skip
            if row is None or not row["rps"]:
                continue
            dollars = cost_per_million(row["rps"], objects, c, 1, 1)
            cpu = row.get("server_cpu_us_per_request")
            rows.append((what, config, _num(row["rps"]), f"${dollars:.2f}",
                         f"{_num(cpu)} µs" if cpu else "–",
                         f"{cpu:.0f} CPU-s" if cpu else "–"))  # fmt: skip
    return head + "\n\n" + _table(
        ("workload", "server", "req/s", "Cloudflare $ / million", "CPU per request here",
         "CPU-s per million here"), rows,
    )  # fmt: skip


def _studies(outcomes: Sequence[Outcome]) -> str:
    parts = ["## Plots"]
    for o in outcomes:
        if o.result is not None and (o.log.parent / f"{o.study.name}.png").is_file():
            parts.append(f"### {o.study.title}\n\n![{o.study.name}]({o.study.name}.png)")
    return "\n\n".join(parts)


# -- the command -----------------------------------------------------------------------------------
def run_suite(
    quick: bool, only: str | None, out: Path | None, study_args: Sequence[str] = ()
) -> tuple[Path, list[Outcome]]:
    """Run the chosen studies one at a time with a progress bar; write and return REPORT.md."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    root = repository_root()
    studies = select(only)
    extra = parse_study_args(study_args)
    unknown = sorted(set(extra) - {s.name for s in studies})
    if unknown:
        raise InvalidArgument(f"--study-args names a study not run: {', '.join(unknown)}")
    out = (out or root / "benchmarks" / "results").resolve()
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns) as progress:
        bar = progress.add_task("benchmarks", total=len(studies))
        for study in studies:
            progress.update(bar, description=f"{study.name}: {study.title}")
            outcome = run_study(study, root, out, quick, extra.get(study.name, ()))
            outcomes.append(outcome)
            status = "ok" if outcome.ok else "[red]failed[/]"
            progress.console.print(f"{study.name}: {status} in {outcome.seconds:.0f} s")
            progress.advance(bar)
    return write_report(outcomes, out, quick), outcomes
