"""Sharding routers (DESIGN §5, CONTRACTS §10): which object serves a key, and moving keys.

One module per router behind one protocol (``base.Router``): ``HashRouter`` (jump consistent
hash, ``reshard``), ``TemplateRouter`` (per user/org names), ``FeatureRouter`` (per feature),
``HybridRouter`` (objects + SQL aggregates), ``MigratingRouter`` (big_bang / lazy / flag).
Shard objects that can give keys away subclass ``ShardObject``; ``scatter`` gathers from all.
"""

from __future__ import annotations

from durable.routers.base import (
    KeyMoved,
    KeyNotHere,
    KeyRouter,
    MoveConflict,
    RouteLoop,
    Router,
    ShardRef,
)
from durable.routers.feature import FeatureRouter, FeatureRouterStatistics
from durable.routers.hash import (
    HashRouter,
    HashRouterStatistics,
    ReshardPhase,
    jump_hash,
    shard_index,
)
from durable.routers.hybrid import HybridRouter, HybridStatistics
from durable.routers.migrating import (
    MigratingRouter,
    MigrationPhase,
    MigrationStatistics,
    Strategy,
)
from durable.routers.move import MoveOutcome, MoveProgress, Mover, MoverStatistics
from durable.routers.scatter import ScatterResult, scatter
from durable.routers.shard import KeyState, ShardObject, shard_wide
from durable.routers.template import TemplateRouter, TemplateRouterStatistics

__all__ = [
    "FeatureRouter",
    "FeatureRouterStatistics",
    "HashRouter",
    "HashRouterStatistics",
    "HybridRouter",
    "HybridStatistics",
    "KeyMoved",
    "KeyNotHere",
    "KeyRouter",
    "KeyState",
    "MigratingRouter",
    "MigrationPhase",
    "MigrationStatistics",
    "MoveConflict",
    "MoveOutcome",
    "MoveProgress",
    "Mover",
    "MoverStatistics",
    "ReshardPhase",
    "RouteLoop",
    "Router",
    "ScatterResult",
    "ShardObject",
    "ShardRef",
    "Strategy",
    "TemplateRouter",
    "TemplateRouterStatistics",
    "jump_hash",
    "scatter",
    "shard_index",
    "shard_wide",
]
