"""Limits surfaced to users: the per-object storage limit as 507 JSON naming it, a per-user rate
limit as 429 + Retry-After, and the seed's metrics on ``/metrics``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from durable.testing import VirtualClock
from examples.todos.sharding import Sharding
from tests.todos.conftest import LiveApp, content

SMALL = content({"t1": {"text": "small", "done": False}})
BIG = content({"t1": {"text": "x" * 3000, "done": False}})


async def test_a_save_over_the_storage_limit_gets_507_naming_it_and_changes_nothing(
    live_app: LiveApp,
) -> None:
    async with live_app(storage_limit_bytes=2000) as server:
        client = server.client
        assert (await client.post("/api/alice/save", content=SMALL)).status_code == 200
        refused = await client.post("/api/alice/save", content=BIG)
        assert refused.status_code == 507
        body = refused.json()
        assert body["error"] == "StorageLimitExceeded"
        assert "over its limit of 2000 bytes" in body["message"]
        assert "Limits.max_storage_bytes" in body["message"]
        assert (await client.get("/api/alice/load")).content == SMALL
        assert (await client.post("/api/bob/save", content=BIG)).status_code == 507
        assert (await client.get("/api/bob/load")).status_code == 404


async def test_the_single_default_store_fills_up_where_per_user_objects_do_not(
    live_app: LiveApp,
) -> None:
    body = content({"t": {"text": "y" * 400, "done": False}})
    for mode, refused_from in ((Sharding.SINGLE, 3), (Sharding.USER, None)):
        async with live_app(sharding=mode, storage_limit_bytes=2000) as server:
            statuses = [
                (await server.client.post(f"/api/user{i}/save", content=body)).status_code
                for i in range(8)
            ]
            expected = [200 if refused_from is None or i < refused_from else 507 for i in range(8)]
            assert statuses == expected, mode


async def test_a_user_over_the_rate_limit_gets_429_with_retry_after(
    live_app: LiveApp, clock: VirtualClock
) -> None:
    async with live_app(rate_per_minute=30, rate_burst=3) as server:
        client = server.client
        assert (await client.post("/api/alice/save", content=SMALL)).status_code == 200
        for _ in range(2):
            assert (await client.get("/api/alice/load")).status_code == 200
        refused = await client.post("/api/alice/save", content=BIG)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"  # 30/min: a token every 2 s
        assert refused.json()["error"] == "RateLimited"
        assert refused.json()["retry_after"] == 2.0
        assert (await client.get("/api/bob/load")).status_code == 404  # bob has his own bucket
        await clock.advance(2)
        assert (await client.get("/api/alice/load")).content == SMALL  # the refused save: nothing


async def test_metrics_show_rate_latency_errors_storage_and_users(live_app: LiveApp) -> None:
    async with live_app(storage_limit_bytes=2000) as server:
        client = server.client
        await client.post("/api/alice/save", content=SMALL)
        await client.post("/api/bob/save", content=SMALL)
        await client.post("/api/bob/save", content=BIG)  # 507
        await client.get("/api/alice/load")
        text = (await client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("todos_requests_total", (("op", "save"), ("status", "200")))] == 2
    assert samples[("todos_requests_total", (("op", "save"), ("status", "507")))] == 1
    assert samples[("todos_requests_total", (("op", "load"), ("status", "200")))] == 1
    assert samples[("todos_request_duration_seconds_count", (("op", "save"),))] == 3
    assert samples[("todos_object_storage_bytes", (("object", "user-alice"),))] == len(SMALL)
    assert samples[("todos_users", ())] == 2
    assert (
        "durable_http_requests_total",
        (("method", "POST"), ("route", "/api/{user}/save"), ("status", "507")),
    ) in samples
