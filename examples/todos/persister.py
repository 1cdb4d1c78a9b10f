"""The Remote Persister backend: load and save a user's ``[tables, values]`` through the routers.

``Persister(env, settings)`` is built once per ``env`` (``persister_for``) because some routers
hold state: ``MigratingRouter`` (its phase and the users it knows are moved) and
``HybridRouter`` (rows buffered for ``env.DB``). A ``Who`` names a list: a user, and in org
sharding the org too.

Guarantees:
- Every load and save of one ``Who`` reaches the one object that holds it under the configured
  sharding (``sharding.py``), and under a migration follows the user's move (never two copies).
- Org sharding refuses a non-member with ``NotAMember`` (HTTP 403) before any object is called.
- Feature sharding splits a save into the ``todos`` object (tables) and the ``settings`` object
  (values) and logs it in ``activity``; its ETag combines the two objects' ETags, so it changes
  when either part does.
- A list is registered in the ``Directory`` on its first save (backups, user count).

Does not guarantee: the two writes of a feature-sharded save are not atomic together (a crash
between them leaves the tables newer than the values until the next save); hybrid search lags
saves by up to the ``HybridRouter`` flush interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from dataclasses import dataclass
from typing import Any

from durable.errors import DurableError
from durable.routers import HybridRouter, MigratingRouter
from durable.routers.base import KeyRouter
from examples.todos.content import Content, parse_content
from examples.todos.sharding import (
    Migration,
    Settings,
    Sharding,
    SingleRouter,
    feature_routers,
    migrating_router,
    org_router,
    user_router,
)

DIRECTORY = "directory"
INDEX_COLUMNS = ("etag", "todos", "done", "search", "bytes")


class NotAMember(DurableError):
    """Org sharding: the user is not a member of the org (HTTP 403)."""

    def __init__(self, org: str, user: str) -> None:
        super().__init__(
            f"User {user!r} is not a member of org {org!r}; an admin adds members with "
            f"PUT /api/{org}/members/{user}."
        )


@dataclass(frozen=True, slots=True)
class Who:
    """Whose list: ``Who("alice")`` or, in org sharding, ``Who("alice", org="acme")``."""

    user: str
    org: str | None = None

    @property
    def key(self) -> str:
        """The list's name in the directory and in backups (``/`` cannot occur in a segment)."""
        return self.user if self.org is None else f"{self.org}/{self.user}"

    @classmethod
    def of_key(cls, key: str) -> Who:
        org, _, user = key.rpartition("/")
        return cls(user, org or None)


@dataclass(frozen=True, slots=True)
class Saved:
    etag: str
    created: bool
    objects: dict[str, int]  # object name -> its content bytes after this save
    users: int | None = None  # lists in the directory, when this save registered a new one


def _joined_etag(*etags: str) -> str:
    return '"' + hashlib.sha256("".join(etags).encode()).hexdigest()[:32] + '"'


def _dumps(data: Any) -> bytes:
    """JSON as JavaScript's ``JSON.stringify`` writes it (no spaces, UTF-8 kept)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class Persister:
    """Load and save through the configured routers (see module docstring)."""

    def __init__(self, env: Any, settings: Settings) -> None:
        self.env = env
        self.settings = settings
        self.sharding = settings.sharding
        store = env.STORE
        self.router: KeyRouter | MigratingRouter = user_router(store)
        if self.sharding is Sharding.SINGLE:
            self.router = SingleRouter(store)
        elif settings.migration is not Migration.NONE:
            self.router = migrating_router(store, settings)
        self.orgs = org_router(store)
        self.features = feature_routers(store)
        self.hybrid: HybridRouter | None = None
        if self.sharding is Sharding.HYBRID:
            self.hybrid = HybridRouter(
                user_router(store),
                env.DB,
                table="todo_index",
                columns=INDEX_COLUMNS,
                flush_seconds=settings.index_flush_seconds,
            )
        self.migration: asyncio.Task[Any] | None = None

    # -- where a list lives ------------------------------------------------------------------------
    def object_name(self, who: Who, feature: str = "todos") -> str:
        if self.sharding is Sharding.ORG:
            return self.orgs.name_for(org=who.org, user=who.user)
        if self.sharding is Sharding.FEATURE:
            return self.features[feature].name_for(who.user)
        return self.router.name_for(who.user)

    async def _call(self, who: Who, method: str, *args: Any, feature: str = "todos") -> Any:
        if self.sharding is Sharding.ORG:
            stub = self.orgs.get(org=who.org, user=who.user)
            return await getattr(stub, method)(who.user, *args)
        router = self.features[feature] if self.sharding is Sharding.FEATURE else self.router
        return await router.call(who.user, method, *args)

    async def admit(self, who: Who) -> None:
        """Org sharding: raise ``NotAMember`` unless the user belongs to the org."""
        if self.sharding is Sharding.ORG:
            assert who.org is not None  # org routes always carry one
            if not await self.env.ORGS.get_by_name(f"org-{who.org}").is_member(who.user):
                raise NotAMember(who.org, who.user)

    # -- the persister protocol --------------------------------------------------------------------
    async def save(self, who: Who, raw: bytes, *, limited: bool = True) -> Saved:
        """Check and store ``raw``; ``limited=False`` (restores) skips the rate limit."""
        content = parse_content(raw)
        await self.admit(who)
        method = "save" if limited else "restore"
        if self.sharding is Sharding.FEATURE:
            saved = await self._save_features(who, content, method)
        else:
            result = await self._call(who, method, raw)
            saved = Saved(
                result["etag"], result["created"], {self.object_name(who): result["object_bytes"]}
            )
        if self.hybrid is not None:
            await self.hybrid.record(who.key, self._index_row(content))
        if not saved.created:
            return saved
        directory = self.env.USERS.get_by_name(DIRECTORY)
        users = await directory.register(who.key, self.object_name(who))
        return Saved(saved.etag, True, saved.objects, users)

    async def _save_features(self, who: Who, content: Content, method: str) -> Saved:
        todos, settings = await asyncio.gather(
            self._call(who, method, _dumps(content.tables), feature="todos"),
            self._call(who, method, _dumps(content.values), feature="settings"),
        )
        event = {"todos": len(content.tables.get("todos", {})), "bytes": len(content.raw)}
        await self._call(who, "log", event, feature="activity")
        objects = {
            self.object_name(who, f): r["object_bytes"]
            for f, r in (("todos", todos), ("settings", settings))
        }
        etag = _joined_etag(todos["etag"], settings["etag"])
        return Saved(etag, todos["created"] or settings["created"], objects)

    def _index_row(self, content: Content) -> dict[str, Any]:
        texts = content.todo_texts()
        return {
            "etag": content.etag,
            "todos": len(texts),
            "done": content.done_count(),
            "search": "\n".join(texts),
            "bytes": len(content.raw),
        }

    async def index(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Hybrid: ``sql`` over the ``todo_index`` table (empty, not missing, before a flush)."""
        assert self.hybrid is not None  # only hybrid routes call it
        columns = ", ".join(INDEX_COLUMNS)
        await self.env.DB.exec(
            f"CREATE TABLE IF NOT EXISTS todo_index (key TEXT PRIMARY KEY, {columns}, updated REAL)"
        )
        return await self.hybrid.query(sql, *params)

    async def load(
        self, who: Who, if_none_match: str | None, *, body: bool = True, limited: bool = True
    ) -> tuple[str, bytes | None] | None:
        """None if nothing is saved, else ``(etag, raw)``; ``raw`` is None when ``If-None-Match``
        matched or ``body`` is False."""
        await self.admit(who)
        method = "load" if limited else "peek"
        if self.sharding is not Sharding.FEATURE:
            found: tuple[str, bytes | None] | None = await self._call(
                who, method, if_none_match, body
            )
            return found
        parts = await asyncio.gather(
            self._call(who, method, None, body, feature="todos"),
            self._call(who, method, None, body, feature="settings"),
        )
        if parts[0] is None and parts[1] is None:
            return None
        tables, values = [(p[0], p[1]) if p else ("", b"{}") for p in parts]
        etag = _joined_etag(tables[0], values[0])
        if not body or etag == if_none_match:
            return (etag, None)
        return (etag, b"[" + (tables[1] or b"{}") + b"," + (values[1] or b"{}") + b"]")

    async def export(self, who: Who) -> bytes | None:
        """The stored content for a backup (no rate limit, no membership check)."""
        if self.sharding is Sharding.FEATURE:
            loaded = await self.load(who, None, limited=False)
            return None if loaded is None else loaded[1]
        raw: bytes | None = await self._call(who, "export")
        return raw

    async def erase(self, who: Who) -> None:
        features = ("todos", "settings") if self.sharding is Sharding.FEATURE else ("todos",)
        for feature in features:
            await self._call(who, "erase", feature=feature)

    async def warm(self, who: Who) -> bool:
        """Pre-warm on login: wake the user's object(s) before the first load."""
        await self.admit(who)
        return bool(await self._call(who, "warm"))

    async def activity(self, who: Who, limit: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self._call(who, "activity", limit, feature="activity")
        return entries


_PERSISTERS: weakref.WeakKeyDictionary[Any, Persister] = weakref.WeakKeyDictionary()


def persister_for(env: Any, settings: Settings) -> Persister:
    """The one ``Persister`` of ``env`` (built on first use)."""
    persister = _PERSISTERS.get(env)
    if persister is None:
        persister = _PERSISTERS[env] = Persister(env, settings)
    return persister
