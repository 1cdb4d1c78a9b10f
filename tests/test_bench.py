"""``durable bench``: studies run one at a time into one folder, REPORT.md gathers what this run
measured (headline ratios against workerd and hello, goals, costs), failures are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from durable.bench import (
    STUDIES,
    Outcome,
    Study,
    cost_per_million,
    parse_study_args,
    run_study,
    select,
    write_report,
)
from durable.errors import InvalidArgument

ROOT = Path(__file__).resolve().parent.parent


def test_quick_core_study_writes_a_report_with_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results"
    tiny = "core=--seconds 0.1 --stored 300 --stored-budget 1"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "durable"), "bench", "--quick", "--only", "core",
         "--out", str(out), "--study-args", tiny],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = (out / "REPORT.md").read_text()
    for heading in ("# durable benchmark report", "## Headlines", "## Goals", "## Shard-count",
                    "## Scaling", "## Cost at Cloudflare's prices", "## Plots"):  # fmt: skip
        assert heading in report
    core = json.loads((out / "core.json").read_text())
    assert core["goals"] and (out / "core.png").is_file()
    assert core["goals"][0]["name"] in report
    assert "`todos`: not run in this invocation." in report  # never filled from older files


def http_result() -> dict[str, object]:
    def rows(rps: float) -> list[dict[str, object]]:
        return [{"concurrency": 64, "rps": rps, "errors": 0, "server_cpu_us_per_request": 100.0}]

    return {
        "meta": {"when": "now", "cpu_model": "test CPU", "mem_total_kib": 1048576},
        "results": {"hello": {"hello": rows(10_000)}, "workerd": {"a": rows(1_000)},
                    "durable": {"a": rows(5_000)}},
        "goals": [{"name": "durable (a) c=64 ≥ workerd (same run)", "measured": 5000,
                   "target": 1000, "unit": "req/s", "at_least": True, "met": True}],
    }  # fmt: skip


def test_report_states_ratios_from_the_same_run_and_costs(tmp_path: Path) -> None:
    log = tmp_path / "http.log"
    log.write_text("")
    outcome = Outcome(select("http")[0], 12.0, 0, log, http_result())
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "| one object (c=64) | durable | 5,000 | 1,000 | 5.00× | 0.50× |" in report
    assert "## Goals (1 of 1 met)" in report and "**met**" in report
    assert f"${cost_per_million(5_000, 1, 64, 1, 1):.2f}" in report
    assert "test CPU" in report


def test_a_failing_study_is_reported_and_leaves_no_stale_result(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"stale": true}')
    study = Study("broken", "does_not_exist.py", "a script that is missing", timeout_s=60)
    outcome = run_study(study, ROOT, tmp_path, quick=True, extra=())
    assert not outcome.ok and outcome.result is None
    assert not (tmp_path / "broken.json").exists()
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "FAILED (exit 2" in report


def test_cost_counts_requests_duration_and_rows() -> None:
    # 1,000 req/s on one object: 128 GB-s per million requests = $0.0016, one row written = $1.
    assert cost_per_million(1_000, 1, 64, 0, 0) == pytest.approx(0.15 + 0.0016)
    assert cost_per_million(1_000, 1, 64, 1, 1) == pytest.approx(0.15 + 0.0016 + 0.001 + 1.0)
    # 64 objects busy at once cost 64 times the duration of one.
    assert cost_per_million(1_000, 1_000, 64, 0, 0) == pytest.approx(0.15 + 64 * 0.0016)


def test_selection_and_study_args_are_validated() -> None:
    assert [s.name for s in select("todos,http")] == ["http", "todos"]  # suite order
    assert len(select(None)) == len(STUDIES)
    with pytest.raises(InvalidArgument, match="unknown study nope"):
        select("http,nope")
    assert parse_study_args(["core=--seconds 0.2", "core=--quick"]) == {
        "core": ["--seconds", "0.2", "--quick"]
    }
    with pytest.raises(InvalidArgument, match="NAME=ARGS"):
        parse_study_args(["--seconds"])


def test_unknown_study_exits_2_with_one_line() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "durable"), "bench", "--only", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("durable: unknown study nope")


def test_shard_study_shows_knees_and_checks_the_reviews_verdict(tmp_path: Path) -> None:
    log = tmp_path / "mission_game.log"
    log.write_text("")
    verdicts = {
        "original": {"knee_players": 10, "broke_at_players": 50, "largest_players": 50},
        "hash-16": {"knee_players": None, "broke_at_players": None, "largest_players": 1000},
    }
    outcome = Outcome(select("mission_game")[0], 1.0, 0, log, {"verdicts": verdicts})
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "| hash-16 | – | – | 1,000 |" in report
    assert "| breaks at ~100 miners | knee at 100 miners | yes |" in report
    assert "| catastrophic at 500+ miners | broke at 500 miners | yes |" in report
