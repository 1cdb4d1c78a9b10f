"""``FeatureRouter``: one object per feature (todos, profiles, analytics), from a fixed set.

``FeatureRouter(env.APP, ["todos", "analytics"])`` maps ``"todos"`` to the object ``todos``;
``FeatureRouter(env.APP, {"todos": "todo-shard", "analytics": "analytics"})`` names them. Two
features may share one object. This is the seeds' "feature-based sharding": specialised objects
with different scaling patterns behind one routing rule.

Guarantees: only the listed features route; any other key raises ``InvalidRouteKey`` listing the
allowed ones, before any stub exists. The set is fixed, so ``scatter`` reaches every object once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from durable.clock import Clock, SystemClock
from durable.errors import InvalidArgument, InvalidRouteKey
from durable.namespace import Namespace
from durable.routers.base import ShardRef, str_key
from durable.routers.keyed import KeyRouterBase


@dataclass(frozen=True, slots=True)
class FeatureRouterStatistics:
    features: int
    objects: int
    lookups: int
    rejected: int


class FeatureRouter(KeyRouterBase):
    """Maps a feature name to its object's name (see module docstring)."""

    def __init__(
        self,
        namespace: Namespace,
        features: Iterable[str] | Mapping[str, str],
        *,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(features, str):
            raise InvalidArgument("FeatureRouter features are a list or a mapping, not one str.")
        table = dict(features) if isinstance(features, Mapping) else {f: f for f in features}
        for feature, name in table.items():
            if not (isinstance(feature, str) and feature and isinstance(name, str) and name):
                raise InvalidArgument(
                    f"FeatureRouter features and object names are non-empty str: "
                    f"{feature!r} -> {name!r}."
                )
        if not table:
            raise InvalidArgument("FeatureRouter needs at least one feature.")
        self.namespace = namespace
        self.features: dict[str, str] = table
        self.clock = clock or SystemClock()
        self._lookups = self._rejected = 0

    def __repr__(self) -> str:
        return f"FeatureRouter({self.namespace!r}, {self.features!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FeatureRouter)
            and self.namespace.binding == other.namespace.binding
            and self.features == other.features
        )

    __hash__ = None  # type: ignore[assignment]

    def name_for(self, feature: Any, /) -> str:
        name = self.features.get(feature) if isinstance(feature, str) else None
        if name is None:
            self._rejected += 1
            raise InvalidRouteKey(
                f"Unknown feature {feature!r}; the allowed features are: "
                f"{', '.join(sorted(self.features))}."
            )
        self._lookups += 1
        return name

    def routing_key(self, key: Any, /) -> str:
        self.name_for(key)
        return str_key(key, "FeatureRouter")

    def names(self) -> list[str]:
        """Each object once, in the order features were given."""
        return list(dict.fromkeys(self.features.values()))

    def shard_refs(self) -> list[ShardRef]:
        return [ShardRef(self.namespace.binding, name) for name in self.names()]

    def placement(self) -> dict[str, Any]:
        return {"kind": "feature", "binding": self.namespace.binding, "names": self.features}

    def statistics(self) -> FeatureRouterStatistics:
        return FeatureRouterStatistics(
            len(self.features), len(self.names()), self._lookups, self._rejected
        )
