"""``benchmarks/todos.py`` at tiny sizes: it runs every phase against real servers and writes
its JSON and PNG, with the numbers the closing note reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_benchmark_runs_at_tiny_sizes_and_writes_its_results(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "todos.py"),
        "--tiny",
        "--configs",
        "user,single,flag",
        "--output",
        "todos-smoke",
    ]
    env = {**os.environ, "DURABLE_BENCH_OUT": str(tmp_path)}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "todos-smoke.json").read_text())
    assert (tmp_path / "todos-smoke.png").stat().st_size > 10_000
    by = {r["config"]: r for r in result["configs"]}
    assert list(by) == ["user", "single", "flag"]
    sizes = result["sizes"]
    for config in by.values():
        users = config["users"]
        assert users["errors"] == 0
        assert users["requests"] == 3 * sizes["users"] * sizes["rounds"]
        assert users["statuses"].get("poll 304") == sizes["users"] * sizes["rounds"]
        assert config["rooms"]["edits"] == sizes["rooms"] * sizes["edits"]
        assert config["rooms"]["timeouts"] == 0 and config["rooms"]["errors"] == []
    assert by["flag"]["migration"]["phase"] == "done"
    assert by["flag"]["online"] is None  # (f) measures the sharding strategies, not migrations
    for config in (by["user"], by["single"]):  # (f): every user online, each loads at login
        online = config["online"]
        assert online["users"]["errors"] == 0
        assert online["users"]["ops"]["load"]["n"] >= sizes["users"]
        assert online["users"]["ops"]["save"]["n"] > 0 and online["users"]["ops"]["poll"]["n"] > 0
        assert online["rooms"]["edits"] == sizes["rooms"] * sizes["edits"]
        assert online["rooms"]["timeouts"] == 0
    assert any("online" in g["name"] for g in result["goals"])
    assert by["user"]["storage"]["objects"] == sizes["users"]
    assert by["single"]["storage"]["objects"] == 1
    fills = {f["config"]: f for f in result["fill"]}
    assert fills["single"]["refused_507"] > 0 and fills["user"]["refused_507"] == 0
    assert "StorageLimitExceeded" not in (fills["single"]["first_507_message"] or "")
    assert "over its limit of" in fills["single"]["first_507_message"]
    assert {g["name"].split(":")[0] for g in result["goals"]} >= {"rooms"}
    bursts = {b["config"]: b for b in result["burst"]}
    assert bursts["user"]["statuses"] == {"save 200": sizes["burst"]}
    assert sum(bursts["single"]["statuses"].values()) == sizes["burst"]
