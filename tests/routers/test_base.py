"""The router protocol, run over every router; the package's public names; routed-call errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import durable
import durable.routers as routers
from durable.routers import (
    FeatureRouter,
    HashRouter,
    HybridRouter,
    KeyMoved,
    KeyNotHere,
    MigratingRouter,
    MoveConflict,
    RouteLoop,
    ShardRef,
    TemplateRouter,
)
from tests.routers.apps import ledger_worker

Build = Callable[[Any], Any]
BUILDERS: dict[str, Build] = {
    "hash": lambda env: HashRouter(env.LEDGER, shards=8),
    "template": lambda env: TemplateRouter(env.LEDGER, "user-{user}"),
    "feature": lambda env: FeatureRouter(env.LEDGER, ["alice", "bob"]),
    "migrating": lambda env: MigratingRouter(
        HashRouter(env.LEDGER, shards=1), TemplateRouter(env.NEW, "u-{u}"), "lazy"
    ),
    "hybrid": lambda env: HybridRouter(
        HashRouter(env.LEDGER, shards=2), env.DB, table="t", record=("write",)
    ),
}


def test_all_is_sorted_and_every_name_exists() -> None:
    assert routers.__all__ == sorted(routers.__all__)
    for name in routers.__all__:
        assert hasattr(routers, name), name


@pytest.mark.parametrize("kind", sorted(BUILDERS))
async def test_every_router_follows_the_protocol(run: Any, tmp_path: Any, kind: str) -> None:
    worker = ledger_worker(databases={"DB": f"sqlite:///{tmp_path}/db.sqlite"})
    async with run(worker) as env:
        router, twin = BUILDERS[kind](env), BUILDERS[kind](env)
        name = router.name_for("alice")
        assert isinstance(name, str) and name == twin.name_for("alice")
        stub = router.get("alice")
        assert stub.name == name
        assert router == twin and router != object()
        assert repr(router) == repr(twin) and type(router).__name__ in repr(router)
        assert await router.call("alice", "write", 1) == 1
        assert await router.call("alice", "read") == 1
        stats = router.statistics()
        assert dataclasses.is_dataclass(stats)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(stats, dataclasses.fields(stats)[0].name, None)
        with pytest.raises(TypeError):
            hash(router)  # routers compare by value and may change (reshard): unhashable
        if isinstance(router, HybridRouter):
            await router.close()


def test_shard_refs_print_and_travel_as_pairs() -> None:
    ref = ShardRef("BOARD", "shard-3")
    assert str(ref) == "BOARD/shard-3" and ref.wire() == ("BOARD", "shard-3")
    assert ShardRef.of(["BOARD", "shard-3"]) == ref


def test_routed_call_errors_say_what_to_do() -> None:
    a, b = ShardRef("B", "a"), ShardRef("B", "b")
    moved = KeyMoved("k", b)
    assert (
        str(moved)
        == "Routing key 'k' is served by B/b, not here; send the call there (router.call() follows it)."
    )
    assert moved.retryable and isinstance(moved, durable.DurableError)
    assert "is being moved here from B/a and is not ready" in str(KeyNotHere("k", a))
    assert str(MoveConflict("k", b, "why")).startswith(
        "Cannot move routing key 'k' to B/b: why. Nothing was changed"
    )
    assert str(RouteLoop("k", [a, b, a])) == (
        "Routing key 'k' was redirected 2 times (B/a -> B/b -> B/a); the routers or shard placements "
        "disagree. Finish or restart the migration or reshard."
    )
