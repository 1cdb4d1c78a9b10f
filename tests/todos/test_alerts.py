"""``examples/todos/alerts.rules.yml``: a well-formed Prometheus rules file whose expressions use
only series the app exports, with the seed's four thresholds.

promtool is not installed (Debian's ``prometheus`` package is a 96 MB server), so this test
parses the file strictly and checks each expression's names against a real scrape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from examples.todos.metrics import TodoMetrics

RULES = Path(__file__).parents[2] / "examples" / "todos" / "alerts.rules.yml"
FUNCTIONS = {"max", "sum", "rate", "histogram_quantile", "by"}
SEED = {  # alert -> (severity, threshold text in its expression)
    "TodoObjectStorageCritical": ("critical", "> 100 * 1000 * 1000"),
    "TodoResponseSlow": ("warning", "> 1"),
    "TodoErrorRateCritical": ("critical", "> 0.01"),
    "TodoUsersPlanMigration": ("info", "> 1000"),
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    [group] = document["groups"]
    assert set(group) == {"name", "rules"} and group["name"] == "todos"
    found: list[dict[str, Any]] = group["rules"]
    return found


def exported_names() -> set[str]:
    """Every sample name a scrape of the app's registry shows once each series has a value."""
    metrics = TodoMetrics()
    metrics.observe("save", 200, 0.01)
    metrics.stored({"user-alice": 10})
    metrics.user_count(1)
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_rule_is_well_formed_with_the_seeds_severity_and_threshold() -> None:
    found = rules()
    assert [rule["alert"] for rule in found] == list(SEED)
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        severity, threshold = SEED[rule["alert"]]
        assert rule["labels"] == {"severity": severity}
        assert rule["expr"].rstrip().endswith(threshold), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}
        assert rule.get("for", "5m") in ("5m",)
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_every_expression_names_only_series_the_app_exports() -> None:
    exported = exported_names()
    assert {
        "todos_requests_total",
        "todos_request_duration_seconds_bucket",
        "todos_object_storage_bytes",
        "todos_users",
    } <= exported
    for rule in rules():
        expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", rule["expr"])  # drop matchers, ranges
        words = set(re.findall(r"[a-z_][a-z0-9_]*", expr))
        labels = {"le", "op", "object", "status"}
        unknown = words - exported - FUNCTIONS - labels
        assert not unknown, (rule["alert"], unknown)
        assert words & exported, rule["alert"]
