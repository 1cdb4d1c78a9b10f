"""``durable bench``: studies run one at a time into one folder, REPORT.md gathers what this run
measured (headline ratios against workerd and hello, goals, costs), failures are reported; the
gateway and core studies judge each goal by a reference from the same run and print it beside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import core, gateway
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


def level(rps: float, cpu_us: float, errors: int = 0, c: int = 64) -> dict[str, object]:
    """One measured level of the gateway study, as benchmarks/gateway.py writes it."""
    latency = {"p50": 1.0, "p99": 2.0}
    return {"concurrency": c, "rps": rps, "errors": errors, "latency_ms": latency,
            "server_cpu_us_per_request": cpu_us}  # fmt: skip


def gateway_results() -> dict[str, Any]:
    return {
        "hello": {"hello": [level(10_000, 60.0)]},
        "workerd": {"a": [level(1_000, 500.0)]},
        "durable": {"a": [level(8_000, 80.0)], "b": [level(4_000, 100.0)]},
        "ray": {"a": [level(3_000, 240.0, errors=2)]},
    }


def gateway_result() -> dict[str, Any]:
    results = gateway_results()
    return {
        "meta": {"when": "now", "cpu_model": "test CPU", "mem_total_kib": 1048576},
        "results": results,
        "goals": [g.as_dict() for g in gateway.goals(results)],
    }


def test_gateway_goals_judge_durable_by_hello_of_the_same_run() -> None:
    by_name = {g.name: g for g in gateway.goals(gateway_results())}
    in_process = by_name["durable (in process): one object c=64 ÷ hello"]
    assert (in_process.measured, in_process.target, in_process.met) == (0.8, 0.70, True)
    assert in_process.beside == "8,000 vs hello 10,000 req/s"
    assert not by_name["durable (in process): 1,000 objects c=64 ÷ hello"].met  # 0.40 < 0.50
    cpu = by_name["durable (in process): server CPU/req c=64 ÷ hello"]
    assert cpu.measured == pytest.approx(80 / 60) and cpu.met
    assert cpu.beside == "80 vs hello 60 µs"
    on_ray = by_name["ray (durable serve): one object c=64 ÷ hello"]
    assert on_ray.measured == pytest.approx(0.3) and not on_ray.met
    assert not by_name["ray (durable serve): server CPU/req c=64 ÷ hello"].met
    assert by_name["ray (durable serve): errors at c=64"].measured == 2
    assert "ray (durable serve): 1,000 objects c=64 ÷ hello" not in by_name  # (b) did not run
    assert by_name["ray (a) one object c=64 ≥ workerd (same run)"].beside == "3.00× workerd"
    # Without hello in the run there is nothing to judge by: no goal, rather than a guess.
    without_hello = {k: v for k, v in gateway_results().items() if k != "hello"}
    assert not any("÷ hello" in g.name for g in gateway.goals(without_hello))


def test_gateway_tables_print_hello_and_workerd_beside_each_figure() -> None:
    rows = {row[0]: row for row in gateway.throughput_rows(gateway_results())}
    assert rows["durable (a) c=64"] == ("durable (a) c=64", "8,000", "10,000", "0.80×", "1,000",
                                        "8.00×", "0")  # fmt: skip
    assert rows["durable (b) c=64"][1:6] == ("4,000", "10,000", "0.40×", "–", "–")  # no workerd
    assert rows["hello (hello) c=64"][2:4] == ("–", "–")  # its own reference
    costs = {row[0]: row for row in gateway.cost_rows(gateway_results())}
    assert costs["ray (a) c=64"][3:] == ("240", "60", "4.00×")


def core_result() -> dict[str, Any]:
    def loop(calls: int, p99_us: float) -> dict[str, Any]:
        return {"calls_per_s": calls, "latency": {"p50_us": p99_us / 4, "p99_us": p99_us}}

    return {
        "limit": {"64": loop(160_000, 900.0)},
        "one_object": {"64": loop(48_000, 12_000.0)},
        "round_robin": {"objects": 1_000, **loop(56_000, 5_000.0)},
        "ratios_to_limit": {"a_64": 0.3, "b_64": 0.35},
        "creation": {
            "us_per_object": 45.0,
            "sequential": {"latency": {"p50_us": 70.0}},
            "rss_kib": {"empty_runtime": 102_400, "resident": 110_000},
            "rss_kib_projected_at_100k": 600 * 1024,
            "kib_per_resident_object": 5.0,
        },
    }


def test_core_goals_stand_beside_the_limit_of_the_same_run() -> None:
    goals = {g.name: g for g in core.goals(core_result(), core.QUICK)}
    calls = goals["(a) one object, 64 in flight"]
    assert (calls.target, calls.met, calls.beside) == (80_000, False, "0.30× limit 160,000")
    assert goals["(a) the same, at the very least"].met  # 48,000 ≥ 40,000
    p99 = goals["(a) p99, 64 in flight"]
    assert (p99.measured, p99.met, p99.beside) == (12.0, False, "limit p99 0.90 ms")
    rr = goals["(b) 1,000 objects round robin"]
    assert rr.met and rr.beside == "0.35× limit 160,000 (1 object)"
    create = goals["(c) µs per new object, 64 in flight"]
    assert create.met and create.beside == "1 at a time: p50 70 µs"
    rss = goals["(d) RSS, 100,000 resident"]
    assert (rss.measured, rss.projected, rss.met) == (600, True, True)  # QUICK creates 5,000


def test_report_states_ratios_from_the_same_run_and_costs(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text("")
    outcome = Outcome(select("gateway")[0], 12.0, 0, log, gateway_result())
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "| one object (c=64) | durable | 8,000 | 1,000 | 8.00× | 10,000 | 0.80× |" in report
    assert f"${cost_per_million(8_000, 1, 64, 1, 1):.2f}" in report
    assert "test CPU" in report


def test_report_counts_goals_met_with_the_reference_beside_each(tmp_path: Path) -> None:
    outcomes = []
    for name, result in (("gateway", gateway_result()), ("core", {"goals": [
        g.as_dict() for g in core.goals(core_result(), core.QUICK)]})):  # fmt: skip
        log = tmp_path / f"{name}.log"
        log.write_text("")
        outcomes.append(Outcome(select(name)[0], 1.0, 0, log, result))
    report = write_report(outcomes, tmp_path, quick=True).read_text()
    # gateway: 5 of 9 (durable in process: share, CPU, errors; both ≥ workerd); core: 5 of 7.
    assert "## Goals (10 of 16 met)" in report
    assert ("| gateway | durable (in process): one object c=64 ÷ hello | 0.80 × | ≥ 0.70 | **met** "
            "| 8,000 vs hello 10,000 req/s |") in report  # fmt: skip
    assert ("| core | (a) one object, 64 in flight | 48,000 calls/s | ≥ 80,000 | not met "
            "| 0.30× limit 160,000 |") in report  # fmt: skip
    assert "| 600 MiB (projected) | ≤ 1,024 | **met** |" in report


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
    assert [s.name for s in select("todos,gateway")] == ["gateway", "todos"]  # suite order
    assert len(select(None)) == len(STUDIES)
    with pytest.raises(InvalidArgument, match="unknown study nope"):
        select("gateway,nope")
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


def test_scaling_shows_three_simulated_nodes_against_one(tmp_path: Path) -> None:
    rows = [
        {"config": "one-node", "gateways": 1, "rps": 4_000.0, "p99_ms": 20.0,
         "server_cpu_us_per_request": 200.0},
        {"config": "three-nodes-spread", "gateways": 3, "rps": 3_000.0, "p99_ms": 40.0,
         "server_cpu_us_per_request": 300.0},
    ]  # fmt: skip
    log = tmp_path / "nodes.log"
    log.write_text("")
    outcome = Outcome(select("nodes")[0], 1.0, 0, log, {"rows": rows, "goals": []})
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "| three-nodes-spread | 3 | 3,000 | 0.75× | 40.0 | 300 |" in report
    assert "The gateway study was not run." in report


def test_scaling_shows_move_time_by_size_and_the_drain(tmp_path: Path) -> None:
    phase = {"calls": 1_000, "p50_ms": 1.5, "p99_ms": 8.0, "max_ms": 40.0, "errors": 0}
    result = {
        "sizes": [
            {"objects": 1000, "bytes": 2**20, "move_s": 0.04, "end_to_end_s": 0.9,
             "longest_call_ms": 30.0},
            {"objects": 1, "bytes": 110 * 2**20, "move_s": 1.5, "end_to_end_s": 3.5,
             "longest_call_ms": 1_650.0, "big_mb": 110},
        ],
        "drain": {"clients": 16, "partitions_moved": 3, "drain_s": 4.1, "before": phase,
                  "during": {**phase, "p99_ms": 9.5, "errors": 2}},
        "goals": [],
    }  # fmt: skip
    log = tmp_path / "moves.log"
    log.write_text("")
    outcome = Outcome(select("moves")[0], 1.0, 0, log, result)
    report = write_report([outcome], tmp_path, quick=True).read_text()
    assert "| 1,000 | 1.0 | 0.04 | 0.90 | 30 |" in report
    assert "| 1 SQL object, 110 MB | 110.0 | 1.50 | 3.50 | 1,650 |" in report
    assert "A drain of 3 partitions (4.1 s) under 16 RPC clients:" in report
    assert "| during | 1,000 | 1.50 | 9.50 | 40.0 | 2 |" in report
