"""``HashRouter``: spread one hot namespace over N objects by a stable hash of the key.

``HashRouter(env.BOARD, shards=8)`` maps a key to ``shard-<k>``, ``k = jump(h, 8)`` where ``h`` is
the first 8 bytes (big-endian) of ``sha256(key)`` and ``jump`` is Lamping and Veach's jump
consistent hash (arXiv:1406.2294)::

    >>> shard_index("alice", 8), shard_index("alice", 9)   # alice lands in the new shard
    (4, 8)

Guarantees:
- Stable across processes, machines and versions: sha256 and jump use only integer and IEEE
  double arithmetic. Python's ``hash()`` is never used: it is salted per process
  (PYTHONHASHSEED), so two gateways would disagree. Test vectors pin the mapping.
- Growing N to N+1 moves only the keys that land in the new shard, about 1/(N+1) of them, and
  never moves a key between two old shards; the spread over shards is even.
- ``reshard(n)`` is online: keys move one at a time (``move.Mover``) while calls continue; each
  key is served by exactly one shard at any moment and every acknowledged write is kept once.
  During it, ``call`` goes to the key's old shard and follows tombstones (remembering them);
  every shard stores the new placement first, so a key created meanwhile goes straight to its
  new shard. When the sweep finds nothing left, the router switches to ``n`` shards.

Does not guarantee: ``get(key)`` is a plain stub of the key's shard under the current count; it
does not follow moves (its caller sees ``KeyMoved``). Other router instances learn a new count
only from tombstones and stored placements until they are built with it.

On failure: an interrupted ``reshard`` (error, cancellation, restart) leaves every key served
by one shard, old or new; calling ``reshard(n)`` again finishes it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from durable.clock import Clock, SystemClock
from durable.errors import InvalidArgument
from durable.namespace import Namespace
from durable.routers.base import ShardRef, str_key
from durable.routers.keyed import KeyRouterBase
from durable.routers.move import BATCH, MoveProgress, MoverStatistics, Sweep

_MULTIPLIER = 2862933555777941757  # the 64-bit LCG of the jump hash paper
_MASK = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``[0, buckets)``: ``jump_hash(0, 10) == 0``."""
    if buckets < 1:
        raise InvalidArgument(f"jump_hash needs at least one bucket, not {buckets}.")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _MULTIPLIER + 1) & _MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def key_hash(key: str) -> int:
    """The 64-bit hash a key is placed by: the first 8 bytes of sha256(UTF-8), big-endian."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def shard_index(key: str, shards: int) -> int:
    """The shard of ``key`` among ``shards``: ``jump_hash(key_hash(key), shards)``."""
    return jump_hash(key_hash(key), shards)


class ReshardPhase(Enum):
    SERVING = "serving"  # one shard count; -> RESHARDING (reshard called)
    RESHARDING = "resharding"  # keys moving to the target count; -> SERVING (done or failed)


@dataclass(frozen=True, slots=True)
class HashRouterStatistics:
    shards: int
    target_shards: int | None  # set while resharding
    phase: ReshardPhase
    lookups: int  # name_for/get/call mappings computed
    redirects: int  # calls that followed a tombstone or placement to another shard
    reshard: MoveProgress | None  # the running or last reshard
    mover: MoverStatistics


class HashRouter(KeyRouterBase):
    """Maps a key to ``{prefix}{k}`` with ``k`` in ``[0, shards)`` (see module docstring)."""

    def __init__(
        self,
        namespace: Namespace,
        *,
        shards: int,
        prefix: str = "shard-",
        key: Callable[[Any], str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_count(shards)
        if not isinstance(prefix, str):
            raise InvalidArgument(f"HashRouter prefix must be a str, not {type(prefix).__name__}.")
        self.namespace = namespace
        self.shards = shards
        self.prefix = prefix
        self.key = key
        self.clock = clock or SystemClock()
        self.phase = ReshardPhase.SERVING
        self._target: int | None = None
        self._moved: dict[str, ShardRef] = {}  # tombstones learnt during a reshard
        self._sweep: Sweep | None = None
        self._lookups = self._redirects = 0

    def __repr__(self) -> str:
        key = "" if self.key is None else f", key={self.key!r}"
        return f"HashRouter({self.namespace!r}, shards={self.shards}, prefix={self.prefix!r}{key})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HashRouter)
            and self.namespace.binding == other.namespace.binding
            and (self.shards, self.prefix, self.key) == (other.shards, other.prefix, other.key)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: reshard changes the count

    def routing_key(self, key: Any, /) -> str:
        return str_key(key if self.key is None else self.key(key), "HashRouter")

    def shard_for(self, key: Any, /) -> int:
        self._lookups += 1
        return shard_index(self.routing_key(key), self.shards)

    def name_for(self, key: Any, /) -> str:
        return f"{self.prefix}{self.shard_for(key)}"

    def names(self) -> list[str]:
        """Every shard name, ``shard-0`` first (both counts' while resharding)."""
        count = max(self.shards, self._target or 0)
        return [f"{self.prefix}{i}" for i in range(count)]

    def shard_refs(self) -> list[ShardRef]:
        return [ShardRef(self.namespace.binding, name) for name in self.names()]

    def placement(self) -> dict[str, Any]:
        return _placement(self.namespace.binding, self.prefix, self.shards)

    # -- routed calls ------------------------------------------------------------------------------
    async def route(self, key: str) -> ShardRef:
        moved = self._moved.get(key) if self._moved else None
        return moved if moved is not None else self.ref_for(key)

    async def redirected(self, key: str, at: ShardRef, to: ShardRef) -> ShardRef:
        self._redirects += 1
        if self.phase is ReshardPhase.RESHARDING:
            self._moved[key] = to
        return to

    # -- resharding -------------------------------------------------------------------------------
    async def reshard(
        self, shards: int, *, concurrency: int = 8, batch: int = BATCH
    ) -> MoveProgress:
        """Move keys online until the router has ``shards`` shards (see module docstring):
        ``batch`` keys per protocol round, ``concurrency`` rounds at once."""
        _check_count(shards)
        if self.phase is ReshardPhase.RESHARDING:
            raise InvalidArgument(f"{self!r} is already resharding to {self._target} shards.")
        binding, prefix = self.namespace.binding, self.prefix
        placement = _placement(binding, prefix, shards)
        self.phase, self._target = ReshardPhase.RESHARDING, shards
        sweep = self._sweep = Sweep()
        try:
            previous = await asyncio.gather(
                *(
                    self.mover.stub(ShardRef(binding, f"{prefix}{i}")).route_configure(placement)
                    for i in range(max(self.shards, shards))
                )
            )
            # A reshard interrupted earlier may have moved keys to shards beyond both counts.
            count = max([self.shards, shards] + [p["shards"] for p in previous if p])
            sources = [ShardRef(binding, f"{prefix}{i}") for i in range(count)]

            def wanted(key: str) -> ShardRef:
                return ShardRef(binding, f"{prefix}{shard_index(key, shards)}")

            await sweep.run(self.mover, sources, wanted, concurrency=concurrency, batch=batch)
            if sweep.remaining:
                raise InvalidArgument(
                    f"reshard to {shards} did not converge: {sweep.remaining} keys keep arriving "
                    "at old shards; call reshard() again."
                )
            self.shards = shards
        finally:
            self.phase, self._target = ReshardPhase.SERVING, None
            self._moved.clear()
        return sweep.snapshot()

    def statistics(self) -> HashRouterStatistics:
        return HashRouterStatistics(
            self.shards,
            self._target,
            self.phase,
            self._lookups,
            self._redirects,
            None if self._sweep is None else self._sweep.snapshot(),
            self.mover.statistics(),
        )


def _placement(binding: str, prefix: str, shards: int) -> dict[str, Any]:
    return {"kind": "hash", "binding": binding, "prefix": prefix, "shards": shards}


def _check_count(shards: object) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidArgument(f"shards must be a positive int, not {shards!r}.")
