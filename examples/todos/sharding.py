"""Which object serves a user's todos: the app's settings and its routers (``durable.routers``).

``Settings.from_environ(os.environ)`` reads ``SHARDING`` (``single`` | ``user`` | ``org`` |
``feature`` | ``hybrid``), ``MIGRATION`` (``none`` | ``big_bang`` | ``lazy`` | ``flag``),
``ROLLOUT`` (flag: percent of users on per-user objects), ``RATE_PER_MINUTE``/``RATE_BURST``,
``STORAGE_LIMIT_BYTES``, ``DATABASE_URL``, ``BACKUP_CRON``, ``INDEX_FLUSH_SECONDS`` (hybrid)
and ``ADMIN_TOKEN``.

The names, all in the one ``STORE`` binding:

- single: ``default-store`` for everyone (the seed's starting point, ``SingleRouter``);
- user: ``user-{user}`` (``TemplateRouter``); also the target of every migration;
- org: ``org-{org}-user-{user}``, after a membership check in ``ORGS``/``org-{org}``;
- feature: ``todos-user-{user}`` (tables), ``settings-user-{user}`` (values) and
  ``activity-user-{user}`` (a log of saves), the feature chosen by ``FeatureRouter``;
- hybrid: ``user-{user}`` objects, each save's summary batched into ``env.DB`` by
  ``HybridRouter`` for cross-user search and analytics.

With ``MIGRATION`` other than ``none`` the app routes through ``MigratingRouter`` from
``default-store`` to ``user-{user}`` (``SHARDING`` must then be ``user``).

Guarantees: a bad setting raises ``InvalidArgument`` naming the variable when the worker is
built, not on the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from durable.clock import Clock, SystemClock
from durable.errors import InvalidArgument
from durable.namespace import Namespace
from durable.routers import FeatureRouter, MigratingRouter, ShardRef, TemplateRouter
from durable.routers.base import str_key
from durable.routers.keyed import KeyRouterBase

DEFAULT_STORE = "default-store"
FEATURES = {"todos": "todos", "settings": "settings", "activity": "activity"}


class Sharding(Enum):
    SINGLE = "single"
    USER = "user"
    ORG = "org"
    FEATURE = "feature"
    HYBRID = "hybrid"


class Migration(Enum):
    NONE = "none"
    BIG_BANG = "big_bang"
    LAZY = "lazy"
    FLAG = "flag"


@dataclass(frozen=True)
class Settings:
    sharding: Sharding = Sharding.USER
    migration: Migration = Migration.NONE
    rollout: float = 0.0
    rate_per_minute: float = 600.0
    rate_burst: float = 60.0
    storage_limit_bytes: int = 128 * 2**20
    database_url: str = "sqlite:///.durable/todos.db"
    backup_cron: str = "*/5 * * * *"
    index_flush_seconds: float = 1.0
    admin_token: str = ""

    def __post_init__(self) -> None:
        if self.migration is not Migration.NONE and self.sharding is not Sharding.USER:
            raise InvalidArgument(
                f"MIGRATION={self.migration.value} moves users to per-user objects: "
                f"set SHARDING=user, not {self.sharding.value}."
            )
        if not 0 <= self.rollout <= 100:
            raise InvalidArgument(f"ROLLOUT must be a percent from 0 to 100, not {self.rollout}.")
        if not self.index_flush_seconds > 0:
            raise InvalidArgument("INDEX_FLUSH_SECONDS must be a positive number of seconds.")
        if self.rate_per_minute <= 0 or self.rate_burst < 1 or self.storage_limit_bytes < 1:
            raise InvalidArgument(
                "RATE_PER_MINUTE, RATE_BURST and STORAGE_LIMIT_BYTES must be "
                "positive (RATE_BURST at least 1)."
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from environment variables; unset ones keep their defaults."""
        fields: dict[str, Any] = {}
        readers = {
            "SHARDING": ("sharding", Sharding),
            "MIGRATION": ("migration", Migration),
            "ROLLOUT": ("rollout", float),
            "RATE_PER_MINUTE": ("rate_per_minute", float),
            "RATE_BURST": ("rate_burst", float),
            "STORAGE_LIMIT_BYTES": ("storage_limit_bytes", int),
            "DATABASE_URL": ("database_url", str),
            "BACKUP_CRON": ("backup_cron", str),
            "INDEX_FLUSH_SECONDS": ("index_flush_seconds", float),
            "ADMIN_TOKEN": ("admin_token", str),
        }
        for variable, (name, kind) in readers.items():
            if variable in environ:
                try:
                    fields[name] = kind(environ[variable])
                except ValueError:
                    raise InvalidArgument(
                        f"{variable}={environ[variable]!r} is not a valid {name}."
                    ) from None
        return cls(**fields)

    def vars(self) -> dict[str, Any]:
        """What objects read from ``env`` (``Worker(vars=...)``)."""
        return {
            "RATE_PER_MINUTE": self.rate_per_minute,
            "RATE_BURST": self.rate_burst,
            "SHARDING": self.sharding.value,
            "MIGRATION": self.migration.value,
        }


class SingleRouter(KeyRouterBase):
    """Every user to one object, ``default-store`` (the seed's starting point)."""

    def __init__(
        self, namespace: Namespace, name: str = DEFAULT_STORE, *, clock: Clock | None = None
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"SingleRouter({self.namespace!r}, {self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SingleRouter) and (self.namespace.binding, self.name) == (
            other.namespace.binding,
            other.name,
        )

    __hash__ = None  # type: ignore[assignment]

    def name_for(self, key: Any, /) -> str:
        str_key(key, "SingleRouter")
        return self.name

    def routing_key(self, key: Any, /) -> str:
        return str_key(key, "SingleRouter")

    def shard_refs(self) -> list[ShardRef]:
        return [ShardRef(self.namespace.binding, self.name)]

    def statistics(self) -> dict[str, Any]:
        return {"object": self.name}


def user_router(store: Namespace) -> TemplateRouter:
    return TemplateRouter(store, "user-{user}")


def org_router(store: Namespace) -> TemplateRouter:
    return TemplateRouter(store, "org-{org}-user-{user}")


def feature_routers(store: Namespace) -> dict[str, TemplateRouter]:
    """Per feature, the router of its per-user objects (``todos-user-{user}`` …)."""
    features = FeatureRouter(store, FEATURES)
    return {f: TemplateRouter(store, features.name_for(f) + "-user-{user}") for f in FEATURES}


def migrating_router(store: Namespace, settings: Settings) -> MigratingRouter:
    """From ``default-store`` to ``user-{user}`` with the configured strategy."""
    return MigratingRouter(
        SingleRouter(store),
        user_router(store),
        settings.migration.value,
        percent=settings.rollout,
    )
