"""The Remote Persister endpoints (protocol §1): over HTTP with httpx, then with the real
TinyBase client from Node (``js/persister_client.mjs``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from durable.testing import VirtualClock
from examples.todos.content import etag_of
from tests.todos.conftest import LiveApp, content, node

MILK = content({"t1": {"text": "buy milk", "done": False}}, owner="alice")


async def test_save_then_load_returns_the_same_bytes_with_an_etag(live_app: LiveApp) -> None:
    async with live_app() as server:
        saved = await server.client.post("/api/alice/save", content=MILK)
        assert saved.status_code == 200 and saved.json() == {"etag": etag_of(MILK)}
        loaded = await server.client.get("/api/alice/load")
        assert loaded.status_code == 200 and loaded.content == MILK
        assert loaded.headers["etag"] == etag_of(MILK)
        assert loaded.headers["content-type"] == "application/json"
        assert "ETag" in loaded.headers["access-control-expose-headers"]


async def test_etag_changes_with_the_content_and_matches_give_304(live_app: LiveApp) -> None:
    async with live_app() as server:
        client = server.client
        await client.post("/api/alice/save", content=MILK)
        tag = (await client.head("/api/alice/load")).headers["etag"]
        assert (
            await client.get("/api/alice/load", headers={"If-None-Match": tag})
        ).status_code == 304
        head = await client.head("/api/alice/load", headers={"If-None-Match": tag})
        assert head.status_code == 304 and head.headers["etag"] == tag
        changed = content({"t1": {"text": "buy milk", "done": True}}, owner="alice")
        await client.post("/api/alice/save", content=changed)
        head = await client.head("/api/alice/load", headers={"If-None-Match": tag})
        assert head.status_code == 200 and head.headers["etag"] == etag_of(changed) != tag
        assert head.content == b""
        await client.post("/api/alice/save", content=changed)  # same bytes, same tag
        assert (await client.head("/api/alice/load")).headers["etag"] == etag_of(changed)


async def test_a_user_with_nothing_saved_gets_404_json(live_app: LiveApp) -> None:
    async with live_app() as server:
        response = await server.client.get("/api/nobody/load")
        assert response.status_code == 404
        assert response.json()["error"] == "NoContent" and "nobody" in response.json()["message"]
        assert (await server.client.head("/api/nobody/load")).status_code == 404


async def test_users_are_isolated(live_app: LiveApp) -> None:
    async with live_app() as server:
        bob = content({"b": {"text": "bob's", "done": False}})
        await server.client.post("/api/alice/save", content=MILK)
        await server.client.post("/api/bob/save", content=bob)
        assert (await server.client.get("/api/alice/load")).content == MILK
        assert (await server.client.get("/api/bob/load")).content == bob


BAD_BODIES = [
    (b"", "is not JSON"),
    (b"{not json", "is not JSON"),
    (b"\xff\xfe", "is not UTF-8"),
    (b"{}", "must be a 2-element array"),
    (b"[{}, {}, 1]", "must be a 2-element array"),
    (b"[[], {}]", "tables must be an object, not list"),
    (b'[{"todos": []}, {}]', "tables.todos must be an object"),
    (b'[{"todos": {"t1": {"text": {"a": 1}}}}, {}]', "tables.todos.t1.text is not a cell value"),
    (b'[{}, {"v": [1]}]', "values.v is not a cell value"),
    (b'[{}, {"v": NaN}]', "is not JSON"),
    (b'[{}, {"v": 1e999}]', "values.v is not a cell value"),
    (b'[{"": {}}, {}]', "tables has an empty id"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_BODIES)
async def test_bad_content_is_refused_with_400_and_nothing_changes(
    live_app: LiveApp, body: bytes, problem: str
) -> None:
    async with live_app() as server:
        await server.client.post("/api/alice/save", content=MILK)
        response = await server.client.post("/api/alice/save", content=body)
        assert response.status_code == 400
        assert response.json()["error"] == "InvalidContent"
        assert problem in response.json()["message"]
        assert (await server.client.get("/api/alice/load")).content == MILK
        assert (await server.client.post("/api/carol/save", content=body)).status_code == 400
        assert (await server.client.get("/api/carol/load")).status_code == 404


async def test_a_large_body_is_stored_in_chunks_and_returned_whole(live_app: LiveApp) -> None:
    rows = {f"t{i}": {"text": "x" * 1000 + str(i), "done": i % 2 == 0} for i in range(600)}
    body = content(rows)
    assert len(body) > 500_000  # several 120 kB chunks, each under the 128 KiB value limit
    async with live_app() as server:
        assert (await server.client.post("/api/big/save", content=body)).status_code == 200
        assert (await server.client.get("/api/big/load")).content == body
        await server.client.post("/api/big/save", content=MILK)  # shrinking drops old chunks
        assert (await server.client.get("/api/big/load")).content == MILK


# -- the real TinyBase client -----------------------------------------------------------------
async def run_client(live_app: LiveApp, scenario: str) -> dict[str, Any]:
    """The scenario's report, plus ``http``: the server's request counts by method and status."""
    async with live_app(real_clock=True, rate_burst=1000, rate_per_minute=60_000) as server:
        report = await node("persister_client.mjs", scenario, server.http + "/api")
        text = (await server.client.get("/metrics")).text
    report["http"] = {
        f"{s.labels['method']} {s.labels['status']}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "durable_http_requests_total" and s.labels["route"] == "/api/{user}/load"
    }
    return report


async def test_tinybase_saves_and_a_fresh_store_loads_the_same_content(live_app: LiveApp) -> None:
    report = await run_client(live_app, "save_load")
    assert report["errors"] == []
    assert report["loaded"] == report["saved"]
    assert report["loaded"][0]["todos"]["t1"]["text"] == "buy milk"
    assert report["loaded"][0]["todos"]["t1"]["meta"] == {"tags": ["x"]}  # an object cell
    assert report["loaded"][1] == {"owner": "alice"}


async def test_tinybase_overwrite_replaces_the_saved_content(live_app: LiveApp) -> None:
    report = await run_client(live_app, "overwrite")
    assert report["errors"] == []
    assert report["loaded"] == report["saved"]
    assert sorted(report["loaded"][0]["todos"]) == ["t2", "t3"]
    assert report["loaded"][0]["todos"]["t2"]["done"] is True


async def test_tinybase_users_are_isolated_and_an_unknown_user_loads_nothing(
    live_app: LiveApp,
) -> None:
    report = await run_client(live_app, "isolated")
    assert report["alice"][0] == {"todos": {"a1": {"text": "alice only", "done": False}}}
    assert report["bob"][0] == {"todos": {"b1": {"text": "bob only", "done": True}}}
    # 404: the persister reports it and applies the initial content instead
    assert report["carol_errors"] == ["HTTP 404"]
    assert report["carol"][0] == {"todos": {"c0": {"text": "initial", "done": False}}}
    assert [e["user"] for e in report["errors"]] == ["carol"]


async def test_tinybase_auto_load_picks_up_another_clients_save(live_app: LiveApp) -> None:
    report = await run_client(live_app, "autoload")
    assert report["errors"] == []
    assert report["first"][0] == {"todos": {"t1": {"text": "first", "done": False}}}
    assert report["seen"] is True
    assert report["loaded"] == report["saved"]
    # the poll is HEAD + If-None-Match: 304 while unchanged, then one GET for the change
    assert report["polled"] is True
    assert report["http"]["HEAD 304"] >= 1 and report["http"]["HEAD 200"] >= 1
    assert report["http"]["GET 200"] == 2  # b's first load and its one reload
    print(json.dumps({"autoload_ms": report["millis"]}))


async def test_warm_wakes_the_users_object_before_the_first_load(
    live_app: LiveApp, clock: VirtualClock
) -> None:
    async with live_app() as server:
        assert (await server.client.post("/api/alice/warm")).json() == {"saved": False}
        await server.client.post("/api/alice/save", content=MILK)
        await clock.advance(60)  # idle: the object is evicted (hibernates)
        evicted = server.host.statistics()
        assert evicted.evictions >= 1
        assert (await server.client.post("/api/alice/warm")).json() == {"saved": True}
        assert server.host.statistics().activations == evicted.activations + 1  # woken by warm
        assert (await server.client.get("/api/alice/load")).content == MILK
        assert server.host.statistics().activations == evicted.activations + 1  # already warm


async def test_a_user_name_no_object_can_hold_is_refused_with_400(live_app: LiveApp) -> None:
    async with live_app() as server:
        for response in (
            await server.client.post("/api/%00/save", content=MILK),
            await server.client.get("/api/a%00b/load"),
        ):
            assert response.status_code == 400
            assert response.json()["error"] == "InvalidRouteKey"
        assert await server.env.USERS.get_by_name("directory").count() == 0
