"""The mission game's load study (``benchmarks/mission_game.py``) keeps working.

A tiny sweep against a real server (3 players, one configuration, a few seconds, 500 ms cycles)
checks that the script starts the game, plays it over HTTP and WebSockets, measures what it
claims and writes its JSON and PNG; the verdict logic (knee, broke, goals, where a sweep stops)
is checked on made-up rows. The numbers of a real study are the lead's full run, not these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import mission_game
from benchmarks.gateway import LOADGEN

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (LOADGEN / "node_modules" / "ws").is_dir(),
    reason="needs node and `npm ci` in benchmarks/loadgen",
)


@pytest.mark.slow
@needs_node
def test_tiny_sweep_measures_every_player_miner_and_update(tmp_path: Path) -> None:
    result = mission_game.main(
        ["--configs", "hash-4", "--players", "3", "--duration", "8", "--deploy-window", "2",
         "--cycle-ms", "500", "--out-dir", str(tmp_path), "--server-log",
         str(tmp_path / "server.log")]
    )  # fmt: skip

    (row,) = result["rows"]
    assert (row["config"], row["players"], row["joined"]) == ("hash-4", 3, 3)
    assert row["deployed"] == row["miners_target"] == 30
    assert row["errors"] == 0, row["raw"]["errorKinds"]
    assert row["raw"]["ws"]["opened"] == 3
    assert row["delay_samples"] > 0
    # An offset or unit mistake shows as a delay of hours (clamped to 120 s) or below zero.
    assert 0 <= row["delay_p50_ms"] <= row["delay_p95_ms"] < 5_000
    assert row["raw"]["updateDelayMs"]["negative"] == 0
    assert row["bytes_per_s_per_client"] > 0
    assert row["server_cpu_percent"] > 0
    saved = json.loads((tmp_path / "mission_game.json").read_text())
    assert saved["rows"][0]["action_p95_ms"] == row["action_p95_ms"]
    assert saved["meta"]["cpu_model"] and "git_commit" in saved["meta"]
    assert saved["settings"]["cycle_ms"] == 500
    assert (tmp_path / "mission_game.png").read_bytes()[:4] == b"\x89PNG"


def made_up(config: str, players: int, p95: float | None, errors: int = 0) -> dict[str, Any]:
    """A row of the real shape (a failed run's, filled in) with these figures, of 100 requests."""
    row = mission_game.failed(config, players, "")
    del row["failed"]
    return {**row, "action_p95_ms": p95, "errors": errors, "error_rate": errors / 100,
            "delay_p95_ms": 50.0, "deployed": players * 10, "server_cpu_percent": 50.0}  # fmt: skip


def test_knee_is_where_p95_passes_100_ms_or_errors_start() -> None:
    rows = [made_up("a", 10, 20.0), made_up("a", 50, 90.0, errors=1), made_up("a", 100, 150.0),
            made_up("b", 10, 20.0), made_up("b", 50, 101.0)]  # fmt: skip

    found = mission_game.verdicts(rows)

    assert found["a"] == {"knee_players": 50, "broke_at_players": None, "largest_players": 100}
    assert found["b"]["knee_players"] == 50


def test_broken_is_p95_past_1_s_or_over_5_percent_errors_or_no_answer() -> None:
    assert not mission_game.broken(made_up("a", 10, 1_000.0, errors=5))
    assert mission_game.broken(made_up("a", 10, 1_000.1))
    assert mission_game.broken(made_up("a", 10, 20.0, errors=6))
    assert mission_game.broken(made_up("a", 10, None))


def test_sweep_stops_a_configuration_at_the_first_broken_n(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p95 = {("original", 10): 50.0, ("original", 50): 2_000.0, ("hash-16", 10): 5.0,
           ("hash-16", 50): 6.0, ("hash-16", 100): 7.0}  # fmt: skip
    ran: list[tuple[str, int]] = []

    def fake_run(design: Any, players: int, sizes: Any, options: Any) -> dict[str, Any]:
        ran.append((design.name, players))
        return made_up(design.name, players, p95[design.name, players])

    monkeypatch.setattr(mission_game, "run_one", fake_run)
    sizes = mission_game.Sizes((10, 50, 100), 1.0, 1.0, 1.0, 20)
    options = mission_game.Options(4000, False, tmp_path / "log", None)

    rows = mission_game.sweep(["original", "hash-16"], sizes, options)

    assert ran == [("original", 10), ("original", 50), ("hash-16", 10), ("hash-16", 50),
                   ("hash-16", 100)]  # fmt: skip
    assert [r["players"] for r in rows] == [10, 50, 10, 50, 100]


def test_a_run_that_fails_counts_as_broken_and_the_sweep_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_run(design: Any, players: int, sizes: Any, options: Any) -> dict[str, Any]:
        if design.name == "original":
            raise RuntimeError("original N=10: server exited with 1")
        return made_up(design.name, players, 5.0)

    monkeypatch.setattr(mission_game, "run_one", fake_run)
    sizes = mission_game.Sizes((10, 50), 1.0, 1.0, 1.0, 20)
    options = mission_game.Options(4000, False, tmp_path / "log", None)

    rows = mission_game.sweep(["original", "namespace"], sizes, options)

    assert [(r["config"], r["players"]) for r in rows] == [
        ("original", 10),
        ("namespace", 10),
        ("namespace", 50),
    ]
    assert rows[0]["failed"] == "original N=10: server exited with 1"
    assert mission_game.verdicts(rows)["original"]["broke_at_players"] == 10
    mission_game.print_tables(rows, mission_game.verdicts(rows))  # prints the failed row's dashes


def test_goals_judge_sharded_configs_at_their_largest_n_and_original_by_its_knee() -> None:
    rows = [made_up("original", 10, 150.0), made_up("original", 50, 3_000.0),
            made_up("hash-16", 10, 5.0), made_up("hash-16", 1_000, 120.0)]  # fmt: skip

    met = {g.name: g.met for g in mission_game.goals(rows)}

    assert met == {
        "original: knee at ≤ 100 miners": True,
        "original: broke at ≤ 1,000 miners": True,
        "hash-16 N=1000: miners deployed": True,
        "hash-16 N=1000: action p95": False,
        "hash-16 N=1000: update delay p95": True,
        "hash-16 N=1000: errors": True,
    }


def test_server_cpu_counts_the_whole_process_tree() -> None:
    # A parent that only waits, and a child that spins: the tree's CPU is the child's.
    spin = "import time\nend = time.monotonic() + 10\nwhile time.monotonic() < end: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    tree = [proc.pid]
    try:
        deadline = time.monotonic() + 10
        while mission_game.cpu_seconds(tree) < 0.5 and time.monotonic() < deadline:
            tree = mission_game.process_tree(proc)
            time.sleep(0.05)
        assert tree[0] == proc.pid and len(tree) == 2
        assert mission_game.cpu_seconds(tree[1:]) >= 0.4
    finally:
        for pid in reversed(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
