"""Every sharding mode: the persister protocol works the same, and each list lands in the
object its mode names (``sharding.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from examples.todos.persister import _PERSISTERS
from examples.todos.sharding import Settings, Sharding
from tests.todos.conftest import LiveApp, content

ALICE = content(
    {"t1": {"text": "Buy milk", "done": False}, "t2": {"text": "walk", "done": True}}, theme="dark"
)
BOB = content({"b1": {"text": "buy bread", "done": False}})


def paths(mode: Sharding, user: str) -> tuple[str, str]:
    base = f"/api/acme/users/{user}" if mode is Sharding.ORG else f"/api/{user}"
    return base + "/load", base + "/save"


async def join(server: Any, mode: Sharding, *users: str) -> None:
    for user in users if mode is Sharding.ORG else ():
        assert (await server.client.put(f"/api/acme/members/{user}")).status_code == 200


@pytest.mark.parametrize("mode", list(Sharding))
async def test_every_mode_saves_loads_and_isolates_users(live_app: LiveApp, mode: Sharding) -> None:
    async with live_app(sharding=mode) as server:
        await join(server, mode, "alice", "bob")
        client = server.client
        for user, body in (("alice", ALICE), ("bob", BOB)):
            load, save = paths(mode, user)
            assert (await client.get(load)).status_code == 404
            assert (await client.post(save, content=body)).status_code == 200
        for user, body in (("alice", ALICE), ("bob", BOB)):
            loaded = await client.get(paths(mode, user)[0])
            assert json.loads(loaded.content) == json.loads(body)
            tag = loaded.headers["etag"]
            again = await client.get(paths(mode, user)[0], headers={"If-None-Match": tag})
            assert again.status_code == 304


@pytest.mark.parametrize(
    ("mode", "objects"),
    [
        (Sharding.SINGLE, {"default-store": ["alice", "bob"]}),
        (Sharding.USER, {"user-alice": ["alice"], "user-bob": ["bob"]}),
        (Sharding.HYBRID, {"user-alice": ["alice"], "user-bob": ["bob"]}),
        (Sharding.ORG, {"org-acme-user-alice": ["alice"], "org-acme-user-bob": ["bob"]}),
        (
            Sharding.FEATURE,
            {
                "todos-user-alice": ["alice"],
                "settings-user-alice": ["alice"],
                "activity-user-alice": ["alice"],
                "todos-user-bob": ["bob"],
            },
        ),
    ],
)
async def test_each_mode_puts_a_list_in_the_objects_it_names(
    live_app: LiveApp, mode: Sharding, objects: dict[str, list[str]]
) -> None:
    async with live_app(sharding=mode) as server:
        await join(server, mode, "alice", "bob")
        for user, body in (("alice", ALICE), ("bob", BOB)):
            await server.client.post(paths(mode, user)[1], content=body)
        for name, users in objects.items():
            assert await server.env.STORE.get_by_name(name).users() == users, name
        assert await server.env.STORE.get_by_name("default-store").users() == (
            ["alice", "bob"] if mode is Sharding.SINGLE else []
        )
        assert await server.env.USERS.get_by_name("directory").count() == 2


async def test_org_non_members_get_403_and_nothing_is_written(live_app: LiveApp) -> None:
    async with live_app(sharding=Sharding.ORG) as server:
        client = server.client
        for response in (
            await client.post("/api/acme/users/mallory/save", content=ALICE),
            await client.get("/api/acme/users/mallory/load"),
        ):
            assert response.status_code == 403
            assert response.json()["error"] == "NotAMember"
            assert "'mallory' is not a member of org 'acme'" in response.json()["message"]
        assert await server.env.STORE.get_by_name("org-acme-user-mallory").users() == []
        await client.put("/api/acme/members/mallory")
        assert (await client.post("/api/acme/users/mallory/save", content=ALICE)).status_code == 200
        # membership is per org, and one user's lists in two orgs are two objects
        assert (await client.get("/api/other/users/mallory/load")).status_code == 403
        await client.put("/api/other/members/mallory")
        assert (await client.get("/api/other/users/mallory/load")).status_code == 404
        await client.delete("/api/acme/members/mallory")
        assert (await client.get("/api/acme/users/mallory/load")).status_code == 403


async def test_admin_routes_need_the_token_when_one_is_set(live_app: LiveApp) -> None:
    async with live_app(sharding=Sharding.ORG, admin_token="s3cret") as server:
        refused = await server.client.put("/api/acme/members/alice")
        assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"
        assert not await server.env.ORGS.get_by_name("org-acme").is_member("alice")
        allowed = await server.client.put(
            "/api/acme/members/alice", headers={"Authorization": "Bearer s3cret"}
        )
        assert allowed.status_code == 200 and allowed.json() == {"members": 1}


async def test_feature_mode_splits_tables_and_values_and_logs_activity(live_app: LiveApp) -> None:
    async with live_app(sharding=Sharding.FEATURE) as server:
        client, store = server.client, server.env.STORE
        await client.post("/api/alice/save", content=ALICE)
        tag = (await client.head("/api/alice/load")).headers["etag"]
        assert (
            await store.get_by_name("todos-user-alice").export("alice")
            == json.dumps(json.loads(ALICE)[0], separators=(",", ":")).encode()
        )
        assert await store.get_by_name("settings-user-alice").export("alice") == b'{"theme":"dark"}'
        # only the values change: the combined ETag still changes
        lighter = content(json.loads(ALICE)[0]["todos"], theme="light")
        await client.post("/api/alice/save", content=lighter)
        head = await client.head("/api/alice/load", headers={"If-None-Match": tag})
        assert head.status_code == 200 and head.headers["etag"] != tag
        assert json.loads((await client.get("/api/alice/load")).content) == json.loads(lighter)
        events = (await client.get("/api/alice/activity?limit=5")).json()["events"]
        assert [e["todos"] for e in events] == [2, 2] and events[0]["bytes"] == len(lighter)
        bad = await client.get("/api/alice/activity?limit=0")
        assert bad.status_code == 400 and "limit" in bad.json()["message"]


async def test_hybrid_mode_batches_summaries_into_sql_for_search_and_analytics(
    live_app: LiveApp,
) -> None:
    # no timed flush during the test (it runs on the wall clock): the test flushes itself
    async with live_app(sharding=Sharding.HYBRID, index_flush_seconds=3600) as server:
        client = server.client
        await client.post("/api/alice/save", content=ALICE)
        await client.post("/api/bob/save", content=BOB)
        persister = _PERSISTERS[server.gateway.env]  # the one the routes use
        assert persister.hybrid is not None and persister.hybrid.statistics().buffered == 2
        assert (await client.get("/api/analytics")).json()["users"] == 0  # not flushed yet
        assert await persister.hybrid.flush() == 2
        found = (await client.get("/api/search", params={"q": "BUY"})).json()["results"]
        assert found == [
            {"user": "alice", "todos": ["Buy milk"]},
            {"user": "bob", "todos": ["buy bread"]},
        ]
        assert (await client.get("/api/search", params={"q": "100%"})).json()["results"] == []
        assert (await client.get("/api/analytics")).json() == {
            "users": 2,
            "todos": 3,
            "done": 1,
            "bytes": len(ALICE) + len(BOB),
        }
        empty = await client.get("/api/search?q=")
        assert empty.status_code == 400 and empty.json()["error"] == "BadRequest"


def test_bad_settings_name_the_variable() -> None:
    from durable.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="SHARDING='shards' is not a valid sharding"):
        Settings.from_environ({"SHARDING": "shards"})
    with pytest.raises(InvalidArgument, match="set SHARDING=user, not org"):
        Settings.from_environ({"SHARDING": "org", "MIGRATION": "lazy"})
    with pytest.raises(InvalidArgument, match="ROLLOUT must be a percent"):
        Settings.from_environ({"ROLLOUT": "150"})
    assert Settings.from_environ({"MIGRATION": "flag", "ROLLOUT": "25"}).rollout == 25.0
