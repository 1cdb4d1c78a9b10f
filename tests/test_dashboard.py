"""``deploy/grafana/durable-dashboard.json`` against what a real server exports on ``/metrics``:
every query names exported series (with labels they carry), and every durable series has a
panel, so the dashboard cannot drift from ``durable/metrics.py`` unnoticed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

import durable
from tests.live_server import live

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "durable-dashboard.json"
SERIES = re.compile(r"\b((?:durable|process)_[a-z_]+)\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


class Counter(durable.DurableObject):
    async def fetch(self, request: Request) -> durable.Response:
        n = await self.ctx.storage.get("n", 0) + 1
        await self.ctx.storage.put("n", n)
        return durable.JSONResponse({"n": n})


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel."""
    document = json.loads(DASHBOARD.read_text())
    found = []
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


async def exported(tmp_path: Path) -> dict[str, tuple[str, set[str]]]:
    """Sample name -> (family name, label names) on a live server's ``/metrics``."""
    worker = durable.Worker(objects={"COUNTER": Counter})

    @worker.route("/counter/{name}")
    async def counter(request: Request, env: Any) -> Any:
        return await env.COUNTER.get_by_name(request.path_params["name"]).fetch(request)

    async with live(worker, tmp_path / "data") as server:
        assert (await server.client.get("/counter/a")).status_code == 200
        await server.client.get("/counter/%ff")  # a refusal, so the reason label shows up
        text = (await server.client.get("/metrics")).text
    samples: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = samples.get(sample.name, (family.name, set()))[1]
            samples[sample.name] = (family.name, labels | set(sample.labels))
    return samples


async def test_every_dashboard_query_names_exported_series_and_labels(tmp_path: Path) -> None:
    samples = await exported(tmp_path)
    all_queries = queries()
    assert len(all_queries) >= 25
    for title, expr in all_queries:
        names = SERIES.findall(expr)
        assert names, f"{title}: {expr} names no durable or process series"
        for name in names:
            assert name in samples, f"{title}: {name} is not exported on /metrics"
        grouped = {label.strip() for g in GROUPING.findall(expr) for label in g.split(",")}
        carried = set().union(*(samples[name][1] for name in names))
        assert grouped <= carried | {"le"}, f"{title}: groups by {grouped - carried}"


async def test_every_durable_series_has_a_panel(tmp_path: Path) -> None:
    samples = await exported(tmp_path)
    used = {samples[name][0] for _, expr in queries() for name in SERIES.findall(expr)}
    families = {family for family, _ in samples.values() if family.startswith("durable_")}
    assert families <= used, f"no panel for {sorted(families - used)}"
