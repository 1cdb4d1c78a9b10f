"""FeatureRouter: one object per feature from a fixed set; unknown features are refused."""

from __future__ import annotations

import re
from typing import Any

import pytest

import durable
from durable.routers import FeatureRouter
from tests.conftest import host_of
from tests.routers.apps import ledger_worker


def test_a_list_names_each_object_after_its_feature(run: Any) -> None:
    router = FeatureRouter(_ns(), ["todos", "profile", "analytics"])
    assert [router.name_for(f) for f in ("todos", "profile", "analytics")] == [
        "todos", "profile", "analytics",
    ]  # fmt: skip
    assert router.names() == ["todos", "profile", "analytics"]


def test_a_mapping_may_share_one_object_between_features() -> None:
    router = FeatureRouter(
        _ns(), {"todos": "todo-shard", "lists": "todo-shard", "stats": "analytics"}
    )
    assert router.name_for("lists") == "todo-shard"
    assert router.names() == ["todo-shard", "analytics"]
    assert router.placement()["names"] == router.features


@pytest.mark.parametrize("feature", ["billing", "", 3, None])
def test_unknown_features_raise_with_the_allowed_list(feature: object) -> None:
    router = FeatureRouter(_ns(), ["todos", "analytics"])
    message = f"Unknown feature {feature!r}; the allowed features are: analytics, todos."
    with pytest.raises(durable.InvalidRouteKey, match=re.escape(message)):
        router.get(feature)
    assert router.statistics().rejected == 1


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("todos", "a list or a mapping, not one str"),
        ([], "needs at least one feature"),
        ({"todos": ""}, "non-empty str: 'todos' -> ''"),
        ([3], "non-empty str: 3 -> 3"),
    ],
)
def test_bad_feature_tables_are_refused(features: Any, message: str) -> None:
    with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
        FeatureRouter(_ns(), features)


def test_repr_and_eq() -> None:
    router = FeatureRouter(_ns(), ["a"])
    assert repr(router) == "FeatureRouter(Namespace('APP'), {'a': 'a'})"
    assert router == FeatureRouter(_ns(), {"a": "a"}) and router != FeatureRouter(_ns(), ["b"])


async def test_calls_and_scatter_reach_each_feature_object_once(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = FeatureRouter(
            env.LEDGER, {"todos": "todo-shard", "lists": "todo-shard", "stats": "stats"}
        )
        await router.call("todos", "write", 1)
        await router.call("lists", "write", 2)
        result = await router.scatter(lambda stub: stub.whoami(), timeout=5)
        assert result.results == {"todo-shard": "todo-shard", "stats": "stats"}
        assert await router.get("todos").keys() == ["lists", "todos"]
        assert host_of(env).statistics().activations == 2


def _ns() -> Any:
    from durable.limits import Limits
    from durable.namespace import Namespace

    return Namespace("APP", transport=None, limits=Limits())  # type: ignore[arg-type]
