"""``MigratingRouter``: move live keys from one router's objects to another's, without downtime.

The seeds' path from one global object to shards (``todos-architecture-scaling-todo.md``:
"big bang", "gradual", "feature flag"), as three strategies over one per-key move
(``move.Mover``: copy, verify, delete, tombstone)::

    old = HashRouter(env.STORE, shards=1)               # the global object, shard-0
    new = TemplateRouter(env.USERS, "user-{user}")
    router = MigratingRouter(old, new, "lazy")
    await router.call("alice", "load")                  # alice's rows move on this first touch
    await router.migrate()                              # sweep the rest (a background task)

``big_bang``: ``migrate()`` copies every key while calls keep going to ``old`` (a moved key's
call follows its tombstone); when a pass finds nothing left, calls switch to ``new`` at once.
``lazy``: calls go to ``new`` from the start; a key is moved on its first touch by this router;
``migrate()`` sweeps the keys nobody touched. ``flag``: ``percent`` of keys (chosen by a stable
hash, so a key stays on its side as the percentage grows) go to ``new``, moved on first touch;
``set_percent`` rolls out further, ``rollback()`` sends every key back.

Guarantees:
- Each key is served by exactly one object at any moment and every acknowledged write is kept
  exactly once, under concurrent calls, whatever the strategy (the per-key fence of ``shard.py``).
- Reads never go backwards: a key's data moves whole, after its last write, and calls that
  arrive meanwhile wait for the move and run at the destination.
- Before sweeping, ``migrate()`` stores ``new``'s placement in ``old``'s objects (not for
  ``flag``), so a key created through a stale router or plain stub goes to ``new``.
- Progress and remaining keys are in ``statistics()`` (``MigrationStatistics.sweep``).

Does not guarantee: routers must map ``str`` keys directly (no ``key=``), and ``old`` must have a
fixed set of objects for ``migrate()`` (hash or feature). During a migration reach ``new``'s
objects only through this router: a key written there directly makes its move fail with
``MoveConflict``. Tombstones stay in ``old``'s objects (a few bytes per key).

On failure: a failed or cancelled ``migrate()`` returns the phase to ``READY``; every key is
served by one side, and calling ``migrate()`` again resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from durable.errors import InvalidArgument
from durable.namespace import Namespace, Stub
from durable.routers.base import KeyRouter, ShardRef
from durable.routers.move import (
    BATCH,
    MoveOutcome,
    MoveProgress,
    Mover,
    MoverStatistics,
    Sweep,
    routed_call,
)

KNOWN_KEYS_CAP = 200_000  # keys remembered as already moved; past it the memory starts afresh


class Strategy(Enum):
    BIG_BANG = "big_bang"  # migrate() copies all, calls stay on old until it switches at once
    LAZY = "lazy"  # calls go to new; first touch moves the key; migrate() sweeps the rest
    FLAG = "flag"  # percent of keys (sticky) go to new, moved on first touch; rollback()


class MigrationPhase(Enum):
    READY = "ready"  # routing per strategy; -> COPYING (migrate)
    COPYING = "copying"  # migrate() is sweeping; -> DONE (clean), READY (failed or partial flag)
    DONE = "done"  # every key is at new, calls go there directly; -> READY (flag rollback)


@dataclass(frozen=True, slots=True)
class MigrationStatistics:
    strategy: Strategy
    phase: MigrationPhase
    percent: float  # flag: share of keys routed to new; others: 100 once DONE, else 0 or 100
    first_touch_moves: int  # keys moved because a call touched them
    redirects: int  # calls that met a tombstone or placement and went elsewhere
    known_keys: int  # keys this router knows to be at new already
    sweep: MoveProgress | None  # the running or last migrate()/rollback() sweep
    mover: MoverStatistics


def flag_bucket(key: str) -> int:
    """A key's rollout bucket in ``[0, 10000)``: stable, and independent of hash sharding."""
    digest = hashlib.sha256(b"durable/flag:" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


class MigratingRouter:
    """Routes keys while they move from ``old``'s objects to ``new``'s (see module docstring)."""

    def __init__(
        self,
        old: KeyRouter,
        new: KeyRouter,
        strategy: Strategy | str,
        *,
        percent: float = 0.0,
        concurrency: int = 8,
        batch: int = BATCH,
    ) -> None:
        try:
            self.strategy = Strategy(strategy)
        except ValueError:
            raise InvalidArgument(
                f"Unknown strategy {strategy!r}: use 'big_bang', 'lazy' or 'flag'."
            ) from None
        for router in (old, new):
            if getattr(router, "key", None) is not None:
                raise InvalidArgument(f"{router!r}: a migration routes str keys; drop key=.")
        self.old, self.new = old, new
        self.percent = _percent(percent) if self.strategy is Strategy.FLAG else 0.0
        self.concurrency = concurrency
        self.batch = batch
        self.phase = MigrationPhase.READY
        self._namespaces = _merge(old.namespaces, new.namespaces)
        self.mover = Mover(self._namespaces)
        self._known: set[str] = set()
        self._moved: dict[str, ShardRef] = {}  # big_bang: tombstones learnt while copying
        self._sweep: Sweep | None = None
        self._first_touch = self._redirects = 0

    def __repr__(self) -> str:
        flag = f", percent={self.percent}" if self.strategy is Strategy.FLAG else ""
        return f"MigratingRouter({self.old!r}, {self.new!r}, {self.strategy.value!r}{flag})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MigratingRouter) and (
            self.old,
            self.new,
            self.strategy,
            self.percent,
        ) == (other.old, other.new, other.strategy, other.percent)

    __hash__ = None  # type: ignore[assignment]

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        return self._namespaces

    # -- the mapping -------------------------------------------------------------------------------
    def wants_new(self, key: str) -> bool:
        """Whether calls for ``key`` go to ``new`` now."""
        if self.phase is MigrationPhase.DONE or self.strategy is Strategy.LAZY:
            return True
        if self.strategy is Strategy.BIG_BANG:
            return False
        return flag_bucket(key) < self.percent * 100

    def ref_for(self, key: str, /) -> ShardRef:
        return self.new.ref_for(key) if self.wants_new(key) else self.old.ref_for(key)

    def name_for(self, key: str, /) -> str:
        return self.ref_for(key).name

    def get(self, key: str, /) -> Stub:
        ref = self.ref_for(key)
        return self._namespaces[ref.binding].get_by_name(ref.name)

    def routing_key(self, key: Any, /) -> str:
        routing = self.old.routing_key(key)
        self.new.routing_key(routing)
        return routing

    # -- routed calls ------------------------------------------------------------------------------
    async def call(self, key: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``method(key, *args, **kwargs)`` where the key lives, moving it first if needed."""
        return await routed_call(self, self.routing_key(key), method, args, kwargs)

    async def route(self, key: str) -> ShardRef:
        if self.phase is MigrationPhase.DONE:
            return self.new.ref_for(key)
        if not self.wants_new(key):
            return self._moved.get(key) or self.old.ref_for(key)
        target = self.new.ref_for(key)
        if key not in self._known:
            outcome = await self.mover.move(key, self.old.ref_for(key), target)
            self._first_touch += outcome is MoveOutcome.MOVED
            self._remember(key)
        return target

    async def redirected(self, key: str, at: ShardRef, to: ShardRef) -> ShardRef:
        self._redirects += 1
        if self.phase is MigrationPhase.DONE:
            return to
        if self.strategy is Strategy.BIG_BANG:
            self._moved[key] = to
            return to
        wanted = self.ref_for(key)
        if at != wanted:
            return to
        await self.mover.move(key, to, wanted)  # the key left where this router wants it
        if self.wants_new(key):
            self._remember(key)
        return wanted

    def _remember(self, key: str) -> None:
        if len(self._known) >= KNOWN_KEYS_CAP:
            self._known.clear()
        self._known.add(key)

    # -- moving everything -------------------------------------------------------------------------
    async def migrate(self) -> MoveProgress:
        """Sweep every key of ``old`` that should be at ``new`` (flag: within ``percent``)."""
        sources = self.old.shard_refs()
        if sources is None:
            raise InvalidArgument(
                f"{self.old!r} has no fixed set of objects to sweep; keys move on first touch."
            )
        if self.phase is MigrationPhase.COPYING:
            raise InvalidArgument(f"{self!r} is already migrating.")
        self.phase = MigrationPhase.COPYING
        sweep = self._sweep = Sweep()
        done = False
        try:
            placement = self.new.placement()
            if self.strategy is not Strategy.FLAG and placement is not None:
                await asyncio.gather(
                    *(self.mover.stub(ref).route_configure(placement) for ref in sources)
                )

            def wanted(key: str) -> ShardRef | None:
                return self.new.ref_for(key) if self._sweeps_to_new(key) else None

            await sweep.run(
                self.mover, sources, wanted, concurrency=self.concurrency, batch=self.batch
            )
            done = self.strategy is not Strategy.FLAG or self.percent >= 100
        finally:
            self.phase = MigrationPhase.DONE if done else MigrationPhase.READY
            if done:
                self._moved.clear()
                self._known.clear()
        return sweep.snapshot()

    def _sweeps_to_new(self, key: str) -> bool:
        return self.strategy is not Strategy.FLAG or flag_bucket(key) < self.percent * 100

    async def set_percent(self, percent: float) -> None:
        """Flag: route ``percent`` of keys to ``new`` from now on (keys move on first touch)."""
        if self.strategy is not Strategy.FLAG:
            raise InvalidArgument(f"set_percent() is for the flag strategy, not {self.strategy}.")
        self.percent = _percent(percent)
        if self.phase is MigrationPhase.DONE and self.percent < 100:
            self.phase = MigrationPhase.READY

    async def rollback(self) -> MoveProgress | None:
        """Flag: send every key back to ``old`` (swept if ``new`` has a fixed set of objects)."""
        await self.set_percent(0.0)
        self._known.clear()
        sources = self.new.shard_refs()
        if sources is None:
            return None  # keys return on their next call (their tombstones in old send them)
        self.phase = MigrationPhase.COPYING
        sweep = self._sweep = Sweep()
        try:
            await sweep.run(
                self.mover,
                sources,
                self.old.ref_for,
                concurrency=self.concurrency,
                batch=self.batch,
            )
        finally:
            self.phase = MigrationPhase.READY
        return sweep.snapshot()

    def statistics(self) -> MigrationStatistics:
        percent = self.percent
        if self.strategy is Strategy.LAZY or self.phase is MigrationPhase.DONE:
            percent = 100.0
        return MigrationStatistics(
            self.strategy,
            self.phase,
            percent,
            self._first_touch,
            self._redirects,
            len(self._known),
            None if self._sweep is None else self._sweep.snapshot(),
            self.mover.statistics(),
        )


def _percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise InvalidArgument(f"percent must be a number from 0 to 100, not {value!r}.")
    return float(value)


def _merge(*tables: Mapping[str, Namespace]) -> dict[str, Namespace]:
    merged: dict[str, Namespace] = {}
    for table in tables:
        for binding, namespace in table.items():
            if merged.setdefault(binding, namespace) is not namespace:
                raise InvalidArgument(f"The two routers bind {binding!r} to different namespaces.")
    return merged
