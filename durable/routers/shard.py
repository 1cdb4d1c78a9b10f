"""``ShardObject``: the base class of objects that hold many routing keys and can give them away.

An app subclasses it and keeps each routing key's data under ``self.scope(key)``
(``ctx.storage.scoped(key)``, CONTRACTS §10). Every public method the subclass defines takes the
routing key as its first argument and is *fenced*: before it runs, the object checks that it
serves that key. Methods that work on the whole shard (scatter queries) are marked
``@shard_wide`` and are not fenced. The ``route_*`` methods are the move protocol that
``move.Mover`` drives over RPC (``_x`` methods are not callable over RPC, hence the prefix)::

    class Board(ShardObject):
        async def add(self, player: str, points: int) -> int:
            scope = self.scope(player)
            total = await scope.get("points", 0) + points
            await scope.put("points", total)
            return total

Moving one key, source S to destination D (``Mover.move``): ``S.route_export`` freezes the key
(new calls on it wait), waits for its calls in flight, and returns its rows and their digest;
``D.route_import`` writes them, marked *staged*, and returns the digest of what it stored;
``S.route_commit`` deletes the rows and leaves a tombstone naming D, in one commit;
``D.route_activate`` clears the mark. Calls that waited at S then raise ``KeyMoved(D)``.

Guarantees:
- A key is served by one object at a time: a fenced call runs only where the key is neither
  frozen, tombstoned nor staged; the copy is taken after the key's last call finished and its
  rows leave the source in the same commit as the tombstone arrives.
- Every acknowledged write is kept exactly once: writes acknowledged before the freeze are in the
  exported rows (storage reads see buffered writes); calls arriving later wait and run at D.
- Tombstones and staged marks are stored (keys starting ``"\\x00"``), so they survive eviction
  and restarts; a freeze lives in memory only, so a restarted source serves the key again and a
  late ``route_commit`` is refused (the mover then discards the staged copy).
- With a placement stored (``route_configure``), a call for a key the object does not hold and
  that the placement gives to another object raises ``KeyMoved`` to it, so stale routers and
  plain stubs cannot create keys in the wrong place during a reshard.

Does not guarantee: a key's rows must fit in one RPC message (32 MiB). A fenced method may call
the object's other fenced methods for its key directly (``self.write(key)``: same call), but one
that calls its own key *through a router* while the key is being moved waits for the freeze to
time out.
Unscoped keys (no ``"\\x00"``) are the shard's own and are never moved.

On failure: a freeze or staged mark whose mover vanished is released after ``HOLD_SECONDS``;
waiting calls then see the stored state (serve, or ``KeyNotHere`` so the router resolves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from durable import values
from durable.errors import InvalidArgument, InvalidRouteKey
from durable.object import HANDLERS, DurableObject
from durable.routers.base import KeyMoved, KeyNotHere, MoveConflict, ShardRef, str_key
from durable.routers.placement import owner_of
from durable.storage import ScopedStorage

F = TypeVar("F", bound=Callable[..., Any])

HOLD_SECONDS = 30.0  # a freeze or staging with no word from its mover is released after this
META = "\x00"  # stored keys starting with NUL are the router's; routing keys never start with it
KEY_STATE = "\x00route:"  # + routing key -> ("moved" | "staged", binding, name[, previous])
PLACEMENT = "\x00placement"
FIRST_ROUTING_KEY = "\x01"  # every scoped key sorts at or after this
SCAN_PAGE = 256  # rows read per storage list() while enumerating routing keys


class KeyState(Enum):
    """Where one routing key stands in this object."""

    SERVING = "serving"  # held or absent, calls run; -> FROZEN (export), STAGED (import)
    FROZEN = "frozen"  # being exported (memory only): calls wait; -> SERVING (abort), MOVED
    MOVED = "moved"  # tombstone: calls raise KeyMoved(dest); -> STAGED (the key comes back)
    STAGED = "staged"  # imported, not yet activated: calls wait or raise KeyNotHere; -> SERVING


def shard_wide(fn: F) -> F:
    """Mark a ShardObject method as working on the whole shard: it is not fenced by a key."""
    fn.__durable_shard_wide__ = True  # type: ignore[attr-defined]
    return fn


def rows_digest(rows: Mapping[str, Any]) -> str:
    """sha256 over the rows in key order, values as the codec stores them (input → hex)."""
    digest = hashlib.sha256()
    for key in sorted(rows, key=lambda k: k.encode()):
        data = values.encode(rows[key])
        for part in (key.encode(), data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


@dataclass
class _Hold:
    """A freeze (source) or staging (destination) in progress; ``released`` opens the waiters."""

    token: int
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Routing:
    """The in-memory half of routing state (lost on eviction: the stored half decides then)."""

    frozen: dict[str, _Hold] = field(default_factory=dict)
    staging: dict[str, _Hold] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    drained: dict[str, asyncio.Event] = field(default_factory=dict)
    placement: dict[str, Any] | None = None
    placement_loaded: bool = False
    tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


# The keys the running call has entered: a fenced method calling another one of the same key
# (``self.write(key, ...)`` inside ``slow_write``) is part of the same call, not a new one.
# In process an RPC runs in its caller's task, so the object is part of the mark; a task started
# from inside the call (``wait_until``) outlives it, so the task is part of the mark too.
_entered: contextvars.ContextVar[frozenset[tuple[int, int, str]]] = contextvars.ContextVar(
    "durable_routing_keys_entered", default=frozenset()
)


def _fenced(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def method(self: ShardObject, *args: Any, **kwargs: Any) -> Any:
        if not args:
            raise InvalidRouteKey(
                f"{fn.__name__}() of a ShardObject takes the routing key as its first argument; "
                "mark methods that work on the whole shard with @shard_wide."
            )
        key = str_key(args[0], type(self).__name__)
        entered = _entered.get()
        mark = (id(self), id(asyncio.current_task()), key)
        if mark in entered:
            return await _run(fn, self, args, kwargs)
        await self._route_enter(key)
        token = _entered.set(entered | {mark})
        try:
            return await _run(fn, self, args, kwargs)
        finally:
            _entered.reset(token)
            self._route_leave(key)

    method.__durable_fenced__ = True  # type: ignore[attr-defined]
    return method


async def _run(fn: Callable[..., Any], self: ShardObject, args: Any, kwargs: Any) -> Any:
    result = fn(self, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


class ShardObject(DurableObject):
    """A durable object that serves many routing keys and can move them (see module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, attr in list(vars(cls).items()):
            if name.startswith("route_"):
                raise TypeError(f"{cls.__name__}.{name}: the route_ prefix is reserved.")
            if (
                name.startswith("_")
                or name in HANDLERS
                or not inspect.isfunction(attr)
                or getattr(attr, "__durable_shard_wide__", False)
                or getattr(attr, "__durable_fenced__", False)
            ):
                continue
            setattr(cls, name, _fenced(attr))

    # -- for the app ---------------------------------------------------------------------------
    def scope(self, key: str) -> ScopedStorage:
        """This key's storage: ``ctx.storage.scoped(key)``."""
        return self.ctx.storage.scoped(key)

    async def _routing_key_changed(self, key: str) -> None:
        """Called when a move writes or deletes ``key``'s rows here (import, commit, discard).

        Override it to refresh in-memory state derived from the key's rows (read them with
        ``self.scope(key)``); the default does nothing. It runs inside the move's call, before
        any other event sees the change: await nothing but storage in it.
        """

    @property
    def _route(self) -> _Routing:
        state: _Routing | None = self.__dict__.get("_durable_routing")
        if state is None:
            state = self.__dict__["_durable_routing"] = _Routing()
        return state

    def _me(self) -> ShardRef | None:
        name = self.ctx.id.name
        return None if name is None else ShardRef(self.ctx.id.namespace, name)

    def _key_state(self, key: str) -> tuple[KeyState, Any]:
        if key in self._route.frozen:
            return KeyState.FROZEN, None
        stored = self.ctx.storage.kv.get(KEY_STATE + key)
        if stored is None:
            return KeyState.SERVING, None
        return KeyState(stored[0]), stored

    def _holds(self, key: str) -> bool:
        return bool(self.ctx.storage.kv.list(prefix=key + "\x00", limit=1))

    def _placement(self) -> dict[str, Any] | None:
        route = self._route
        if not route.placement_loaded:
            route.placement = self.ctx.storage.kv.get(PLACEMENT)
            route.placement_loaded = True
        return route.placement

    # -- the fence -------------------------------------------------------------------------------
    async def _route_enter(self, key: str) -> None:
        """Wait until this object may serve ``key``, or raise where it is; then count it in."""
        route = self._route
        while True:
            hold = route.frozen.get(key)
            if hold is not None:
                await hold.released.wait()
                continue
            state, stored = self._key_state(key)
            if state is KeyState.MOVED:
                raise KeyMoved(key, ShardRef.of(stored[1:3]))
            if state is KeyState.STAGED:
                hold = route.staging.get(key)
                if hold is None:
                    raise KeyNotHere(key, ShardRef.of(stored[1:3]))
                await hold.released.wait()
                continue
            break
        self._check_placement(key)
        route.inflight[key] = route.inflight.get(key, 0) + 1

    def _check_placement(self, key: str) -> None:
        placement = self._placement()
        me = self._me()
        if placement is None or me is None:
            return
        owner = owner_of(placement, key)
        if owner != me and not self._holds(key):
            raise KeyMoved(key, owner)

    def _route_leave(self, key: str) -> None:
        route = self._route
        left = route.inflight[key] - 1
        if left:
            route.inflight[key] = left
            return
        del route.inflight[key]
        drained = route.drained.pop(key, None)
        if drained is not None:
            drained.set()

    def _hold(self, table: dict[str, _Hold], key: str) -> _Hold:
        hold = _Hold(next(self._route.tokens))
        table[key] = hold
        self.ctx.wait_until(self._expire(table, key, hold))  # also keeps the object resident
        return hold

    async def _expire(self, table: dict[str, _Hold], key: str, hold: _Hold) -> None:
        try:
            await asyncio.wait_for(hold.released.wait(), HOLD_SECONDS)
        except TimeoutError:
            self._release(table, key, hold.token)

    def _release(self, table: dict[str, _Hold], key: str, token: int) -> bool:
        hold = table.get(key)
        if hold is None or hold.token != token:
            return False
        del table[key]
        hold.released.set()
        return True

    # -- the move protocol (called by move.Mover over RPC) ----------------------------------------
    async def route_export(self, key: str) -> tuple[Any, ...]:
        """Freeze ``key`` and return ``("rows", token, rows, digest)``; or where it went:
        ``("moved", binding, name)``, or ``("staged", binding, name)`` if an import from there
        was never activated here."""
        key = str_key(key, "route_export")
        route = self._route
        while True:
            hold = route.frozen.get(key) or route.staging.get(key)
            if hold is not None:
                await hold.released.wait()
                continue
            state, stored = self._key_state(key)
            if state is not KeyState.SERVING:
                return (stored[0], stored[1], stored[2])
            break
        hold = self._hold(route.frozen, key)
        while route.inflight.get(key):
            await route.drained.setdefault(key, asyncio.Event()).wait()
        rows = await self.scope(key).list()
        return ("rows", hold.token, rows, rows_digest(rows))

    async def route_import(
        self, key: str, rows: dict[str, Any], source: tuple[str, str], digest: str
    ) -> str:
        """Store ``rows`` as ``key``'s data, staged; returns the digest of what was stored
        (computed here from the rows as received and encoded for storage, so the mover's
        comparison checks the copy end to end)."""
        key = str_key(key, "route_import")
        me = self._me() or ShardRef(self.ctx.id.namespace, str(self.ctx.id))
        route = self._route
        if key in route.frozen or key in route.staging:
            raise MoveConflict(key, me, "the key is already being moved here or from here")
        state, stored = self._key_state(key)
        if state is KeyState.SERVING and self._holds(key):
            raise MoveConflict(key, me, "the destination already holds data for it")
        previous = stored if state is KeyState.MOVED else (stored[3] if stored else None)
        scope = self.scope(key)
        if state is KeyState.STAGED:
            await scope.delete_all()  # an earlier, unfinished import's copy
        items = list(rows.items())
        for i in range(0, len(items), 100):
            await scope.put(dict(items[i : i + 100]))
        self.ctx.storage.kv.put(KEY_STATE + key, ("staged", source[0], source[1], previous))
        self._hold(route.staging, key)
        await self._routing_key_changed(key)
        return rows_digest(rows)

    async def route_commit(self, key: str, token: int, dest: tuple[str, str]) -> bool:
        """Delete ``key``'s rows and leave a tombstone to ``dest``, if ``token``'s freeze holds."""
        if self._route.frozen.get(key) is None or self._route.frozen[key].token != token:
            return False
        await self.scope(key).delete_all()
        self.ctx.storage.kv.put(KEY_STATE + key, ("moved", dest[0], dest[1]))
        self._release(self._route.frozen, key, token)
        await self._routing_key_changed(key)
        return True

    async def route_abort(self, key: str, token: int) -> None:
        """Unfreeze ``key`` without moving it (its calls run here again)."""
        self._release(self._route.frozen, key, token)

    async def route_activate(self, key: str) -> tuple[Any, ...]:
        """Serve a staged ``key`` from now on: ``("ok",)``, or ``("moved", binding, name)``."""
        state, stored = self._key_state(key)
        if state is KeyState.MOVED:
            return ("moved", stored[1], stored[2])
        if state is KeyState.STAGED:
            self.ctx.storage.kv.delete(KEY_STATE + key)
            hold = self._route.staging.get(key)
            if hold is not None:
                self._release(self._route.staging, key, hold.token)
        return ("ok",)

    async def route_discard(self, key: str) -> None:
        """Drop a staged copy of ``key`` and restore the tombstone it replaced, if any."""
        state, stored = self._key_state(key)
        if state is not KeyState.STAGED:
            return
        await self.scope(key).delete_all()
        previous = stored[3]
        if previous is None:
            self.ctx.storage.kv.delete(KEY_STATE + key)
        else:
            self.ctx.storage.kv.put(KEY_STATE + key, tuple(previous))
        hold = self._route.staging.get(key)
        if hold is not None:
            self._release(self._route.staging, key, hold.token)
        await self._routing_key_changed(key)

    # -- the same, for a batch of keys in one round trip (Mover.move_many) ------------------------
    async def route_export_many(self, keys: list[str]) -> list[tuple[Any, ...]]:
        """``route_export`` of each key, in order."""
        return [await self.route_export(key) for key in keys]

    async def route_import_many(
        self, items: list[tuple[str, dict[str, Any], str]], source: tuple[str, str]
    ) -> list[str | None]:
        """``route_import`` of each ``(key, rows, digest)``; ``None`` where it conflicted."""
        stored: list[str | None] = []
        for key, rows, digest in items:
            try:
                stored.append(await self.route_import(key, rows, source, digest))
            except MoveConflict:
                stored.append(None)
        return stored

    async def route_commit_many(
        self, items: list[tuple[str, int]], dest: tuple[str, str]
    ) -> list[bool]:
        return [await self.route_commit(key, token, dest) for key, token in items]

    async def route_abort_many(self, items: list[tuple[str, int]]) -> None:
        for key, token in items:
            await self.route_abort(key, token)

    async def route_activate_many(self, keys: list[str]) -> list[tuple[Any, ...]]:
        return [await self.route_activate(key) for key in keys]

    async def route_discard_many(self, keys: list[str]) -> None:
        for key in keys:
            await self.route_discard(key)

    async def route_keys(self, after: str | None = None, limit: int = 500) -> list[str]:
        """Routing keys with rows here, in order, after ``after`` (a page of at most ``limit``)."""
        if limit < 1:
            raise InvalidArgument("route_keys() limit must be positive.")
        kv = self.ctx.storage.kv
        found: list[str] = []
        start = FIRST_ROUTING_KEY if after is None else after + "\x01"
        exclusive = False
        while len(found) < limit:
            # Rows in pages (a scan costs about the same for 1 row or 256); a key with more rows
            # than a page is skipped past at once by starting the next page after its scope.
            option = "start_after" if exclusive else "start"
            page = list(kv.list(**{option: start}, limit=SCAN_PAGE))  # type: ignore[arg-type]
            for stored in page:
                key, sep, _ = stored.partition("\x00")
                if sep and (not found or found[-1] != key):
                    found.append(key)
            if len(page) < SCAN_PAGE:
                break
            last = page[-1]
            key, sep, _ = last.partition("\x00")
            start, exclusive = (key + "\x01", False) if sep else (last, True)
        return found[:limit]

    async def route_configure(self, placement: dict[str, Any] | None) -> dict[str, Any] | None:
        """Store the placement that owns keys not held here (``None`` removes it); returns the
        placement it replaces."""
        previous = self._placement()
        if placement is None:
            self.ctx.storage.kv.delete(PLACEMENT)
        else:
            with contextlib.suppress(InvalidRouteKey):  # refuse what this code cannot evaluate
                owner_of(placement, "probe")
            self.ctx.storage.kv.put(PLACEMENT, placement)
        self._route.placement = placement
        self._route.placement_loaded = True
        return previous

    async def route_status(self) -> dict[str, int]:
        """Counts for ``durable inspect``: keys frozen, staged, in flight; tombstones stored."""
        kv = self.ctx.storage.kv
        stored = kv.list(prefix=KEY_STATE)
        states = [v[0] for v in stored.values()]
        route = self._route
        return {
            "frozen": len(route.frozen),
            "staging": len(route.staging),
            "inflight": sum(route.inflight.values()),
            "moved": states.count("moved"),
            "staged": states.count("staged"),
        }
