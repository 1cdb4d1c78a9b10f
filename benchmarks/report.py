"""Reporting for the benchmark scripts: machine facts, latency summaries, goals, tables, JSON, PNG.

Every script in ``benchmarks/`` writes ``results/<name>.json`` (``{"meta": machine_meta(...),
...}``) and ``results/<name>.png`` and prints its tables with rich. Nothing here measures; the
scripts do. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# ``durable bench --out DIR`` sends every script's JSON and PNG there.
RESULTS = Path(os.environ.get("DURABLE_BENCH_OUT") or Path(__file__).resolve().parent / "results")
console = Console(width=None if sys.stdout.isatty() else 120)


# -- machine and process facts -------------------------------------------------------------------
def machine_meta(**extra: Any) -> dict[str, Any]:
    """Versions, CPUs and load of this machine, plus whatever the script adds (args, loop)."""
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpuinfo("model name"),
        "mem_total_kib": _status_kib("/proc/meminfo", "MemTotal"),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "git_commit": _git_commit(),
        **extra,
    }


def rss_kib() -> int:
    """Resident set size of this process (``VmRSS`` in ``/proc/self/status``), KiB."""
    return _status_kib("/proc/self/status", "VmRSS")


def dir_bytes(path: Path) -> tuple[int, int]:
    """(total bytes, file count) of every regular file under ``path``."""
    total = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
            files += 1
    return total, files


def _status_kib(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None


# -- summaries -------------------------------------------------------------------------------------
def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending values: ``percentile([1, 2, 3, 4], 50) == 2``."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles in microseconds."""

    samples: int
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Latency:
        ordered = sorted(seconds)
        if not ordered:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        us = 1e6
        mean = sum(ordered) / len(ordered)
        return cls(
            len(ordered),
            percentile(ordered, 50) * us,
            percentile(ordered, 99) * us,
            mean * us,
            ordered[-1] * us,
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Goal:
    """A target a figure must reach; ``projected`` marks a figure extrapolated from a small run.

    ``beside`` is the reference measured in the same run, printed next to the figure:
    ``Goal("(a) calls/s", 30_000, 80_000, "calls/s", beside="0.19× limit 160,000")``.
    """

    name: str
    measured: float
    target: float
    unit: str
    at_least: bool = True
    projected: bool = False
    beside: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}

    def line(self) -> str:
        """``'MISS (a) calls/s: 14,392 calls/s (target ≥ 40,000)'``."""
        sign = "≥" if self.at_least else "≤"
        note = ", projected" if self.projected else ""
        return (
            f"{'MET ' if self.met else 'MISS'} {self.name}: {_short(self.measured)} {self.unit}"
            f"{note} (target {sign} {_short(self.target)})"
        )


# -- output --------------------------------------------------------------------------------------
def num(value: float | None, digits: int = 0) -> str:
    """A number for a table cell: ``num(12345.6) == '12,346'``, ``num(None) == '–'``."""
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:,.{digits}f}"


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_goals(goals: Iterable[Goal]) -> None:
    """The goals table; a "same run" column when any goal carries a reference beside it."""
    goals = list(goals)
    rows: list[tuple[str, ...]] = []
    for g in goals:
        sign = "≥" if g.at_least else "≤"
        verdict = "[green]met[/]" if g.met else "[red]not met[/]"
        note = " (projected)" if g.projected else ""
        digits = 2 if abs(g.measured) < 100 else 0
        measured = f"{num(g.measured, digits)} {g.unit}{note}"
        rows.append(
            (g.name, measured, f"{sign} {num(g.target, 2 if g.target < 100 else 0)}", verdict)
        )
    columns: tuple[str, ...] = ("goal", "measured", "target", "verdict")
    if any(g.beside for g in goals):
        columns += ("beside it, same run",)
        rows = [(*row, g.beside or "–") for row, g in zip(rows, goals, strict=True)]
    print_table("Goals", columns, rows)


def ratio(value: float | None, reference: float | None) -> str:
    """A figure as a multiple of its reference: ``ratio(4321, 15152) == '0.29×'``; '–' if none."""
    if value is None or not reference:
        return "–"
    return f"{value / reference:.2f}×"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def figure(rows: int, cols: int, title: str) -> tuple[Figure, list[Axes]]:
    """A grid of axes on the Agg backend, flattened in reading order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    fig.suptitle(title)
    return fig, [ax for row in axes for ax in row]


def bars(
    ax: Axes,
    labels: Sequence[str],
    heights: Sequence[float],
    title: str,
    ylabel: str,
    *,
    reference: tuple[float, str] | None = None,
    log: bool = False,
    colors: Sequence[str] | None = None,
) -> None:
    """One bar per label, each annotated with its value; ``reference`` draws a dashed line."""
    drawn = ax.bar(range(len(labels)), heights, color=colors or "tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.bar_label(drawn, labels=[_short(h) for h in heights], fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if reference is not None:
        ax.axhline(reference[0], color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(reference[1], (0, reference[0]), fontsize=7, color="tab:red", va="bottom")


def text_panel(ax: Axes, title: str, lines: Sequence[str]) -> None:
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace")


def save(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(value: float) -> str:
    if value != value:
        return "–"
    if abs(value) >= 10_000:
        return f"{value / 1000:,.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"
