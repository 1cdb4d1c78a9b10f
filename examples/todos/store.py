"""The todo store objects: each user's TinyBase content as one routing key of a ``ShardObject``.

``TodoStore`` holds ``[tables, values]`` bodies under ``self.scope(user)``: the same class
serves the seed's single ``default-store`` (every user a key), one object per user
(``user-{user}``), per org (``org-{org}-user-{user}``) and the per-feature objects, and
``MigratingRouter`` moves a user's rows between them. ``Org`` keeps an org's members;
``Directory`` remembers every user who ever saved (for backups, pre-warming and the user count).

Storage of one key: ``etag``, ``size`` and the body in chunks ``chunk:00000``… of at most
``CHUNK_BYTES`` (a KV value is limited to 128 KiB); the object's total content bytes are kept
in its own (unscoped) keys ``bytes`` and ``size:{user}``, refreshed when a move adds or removes
a key (``_routing_key_changed``).

Guarantees:
- A save replaces the whole body in one storage transaction: a load sees the old body or the new
  one, never a mix; a save refused by the storage limit (``StorageLimitExceeded``, HTTP 507) or
  the rate limit (``RateLimited``, 429) changes nothing.
- The ETag is a hash of the stored bytes, so it changes exactly when the content changes.
- Every load and save of a user spends one token of that user's bucket (``RATE_PER_MINUTE``,
  ``RATE_BURST`` vars); exports and restores for backups do not.

Does not guarantee: the rate limit lives in the object's memory (a restart or eviction refills
the buckets, as ``RateLimiter`` documents); the byte total ignores the codec's few bytes a row.
"""

from __future__ import annotations

from typing import Any

from durable import DurableObject
from durable.patterns import RateLimiter
from durable.routers import ShardObject, shard_wide
from durable.storage import ScopedTransaction
from examples.todos.content import etag_of

CHUNK_BYTES = 120_000  # under Limits.max_value_bytes (128 KiB) with room for the codec
CHUNK = "chunk:"
TOTAL = "bytes"  # unscoped: content bytes of every key held here
SIZE = "size:"  # unscoped, + user: what TOTAL counts for that key
LOG = "log:"  # + sequence number: the activity feature's events
ACTIVITY_KEPT = 100


def chunks_of(raw: bytes) -> dict[str, bytes]:
    """``chunks_of(b"abc")`` → ``{"chunk:00000": b"abc"}``; empty bodies still get one chunk."""
    pieces = [raw[i : i + CHUNK_BYTES] for i in range(0, len(raw), CHUNK_BYTES)] or [b""]
    return {f"{CHUNK}{i:05d}": piece for i, piece in enumerate(pieces)}


class TodoStore(ShardObject):
    """Users' bodies as routing keys (see module docstring). Every public method takes the user
    first (the ``ShardObject`` fence), except the ``@shard_wide`` ones."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        rate = float(getattr(env, "RATE_PER_MINUTE", 600))
        burst = float(getattr(env, "RATE_BURST", 60))
        self.limiter = RateLimiter(rate=rate, per=60.0, burst=burst, clock=ctx.now)

    async def save(self, user: str, raw: bytes) -> dict[str, Any]:
        """Store ``raw`` (checked by the caller) as ``user``'s content; returns its ETag, its
        size, whether the user is new here, and this object's content bytes."""
        self.limiter.acquire(user)
        return await self._write(user, raw)

    async def load(self, user: str, if_none_match: str | None = None, body: bool = True) -> Any:
        """None if ``user`` has saved nothing here, else ``(etag, raw)``; ``raw`` is None when
        ``if_none_match`` matches or ``body`` is False (HEAD)."""
        self.limiter.acquire(user)
        return await self._read(user, None if not body else if_none_match, body)

    async def peek(self, user: str, if_none_match: str | None = None, body: bool = True) -> Any:
        """``load`` without spending a token (backups, feature-sharded exports)."""
        return await self._read(user, None if not body else if_none_match, body)

    async def export(self, user: str) -> bytes | None:
        """The stored body (backups); not rate limited."""
        found = await self._read(user, None, True)
        return None if found is None else found[1]

    async def restore(self, user: str, raw: bytes) -> dict[str, Any]:
        """Put a backed-up body back (not rate limited)."""
        return await self._write(user, raw)

    async def erase(self, user: str) -> bool:
        """Delete ``user``'s content here; False if there was none."""
        removed = await self.scope(user).delete_all()
        await self._account(self.ctx.storage, user, 0)
        return removed > 0

    async def warm(self, user: str) -> bool:
        """Pre-warm on login: activates this object and reads the user's ETag into its cache."""
        return await self.scope(user).get("etag") is not None

    async def log(self, user: str, event: dict[str, Any]) -> int:
        """Append ``event`` (stamped with the clock) to ``user``'s activity; keeps the last
        ``ACTIVITY_KEPT``. Returns the event's sequence number."""
        scope = self.scope(user)
        seq: int = await scope.get("seq", 0) + 1
        await scope.put({"seq": seq, f"{LOG}{seq:012d}": {**event, "at": self.ctx.now()}})
        if seq > ACTIVITY_KEPT:
            await scope.delete(f"{LOG}{seq - ACTIVITY_KEPT:012d}")
        return seq

    async def activity(self, user: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` activity events of ``user``, newest first."""
        rows = await self.scope(user).list(prefix=LOG, reverse=True, limit=limit)
        return list(rows.values())

    @shard_wide
    async def stored_bytes(self) -> int:
        """Content bytes of every user held here."""
        total: int = await self.ctx.storage.get(TOTAL, 0)
        return total

    @shard_wide
    async def users(self) -> list[str]:
        """The users whose content is here (one scan of this object's keys)."""
        return await self.route_keys()

    async def _write(self, user: str, raw: bytes) -> dict[str, Any]:
        scope = self.scope(user)
        created = await scope.get("etag") is None
        new_chunks = chunks_of(raw)
        stale = [key for key in await scope.list(prefix=CHUNK) if key not in new_chunks]
        etag = etag_of(raw)

        async def replace(txn: Any) -> int:
            own = ScopedTransaction(txn, user)
            if stale:
                await own.delete(stale)
            for key, piece in new_chunks.items():  # one put a chunk: batches cap at 128 keys
                await own.put(key, piece)
            await own.put({"etag": etag, "size": len(raw)})
            return await self._account(txn, user, len(raw))

        total = await self.ctx.storage.transaction(replace)
        return {"etag": etag, "bytes": len(raw), "created": created, "object_bytes": total}

    async def _read(self, user: str, if_none_match: str | None, body: bool) -> Any:
        scope = self.scope(user)
        etag = await scope.get("etag")
        if etag is None:
            return None
        if not body or etag == if_none_match:
            return (etag, None)
        chunks = await scope.list(prefix=CHUNK)
        return (etag, b"".join(chunks.values()))

    async def _account(self, storage: Any, user: str, size: int) -> int:
        """Record ``user``'s bytes here and return the object's new total."""
        old: int = await storage.get(SIZE + user, 0)
        total: int = await storage.get(TOTAL, 0) + size - old
        await storage.put(TOTAL, total)
        if size:
            await storage.put(SIZE + user, size)
        else:
            await storage.delete(SIZE + user)
        return total

    async def _routing_key_changed(self, key: str) -> None:
        await self._account(self.ctx.storage, key, await self.scope(key).get("size", 0))


class Org(DurableObject):
    """An org's members (``org-{org}`` in ``ORGS``): who may read and write its users' lists."""

    async def add_member(self, user: str) -> int:
        await self.ctx.storage.put("member:" + user, True)
        return len(await self.ctx.storage.list(prefix="member:"))

    async def remove_member(self, user: str) -> bool:
        return bool(await self.ctx.storage.delete("member:" + user))

    async def is_member(self, user: str) -> bool:
        return bool(await self.ctx.storage.get("member:" + user, False))


class Directory(DurableObject):
    """Every user who ever saved (``directory`` in ``USERS``), with where their content lives."""

    async def register(self, user: str, where: str) -> int:
        """Remember ``user`` (idempotent); returns how many users there are."""
        storage = self.ctx.storage
        if await storage.get("user:" + user) is None:
            await storage.put({"user:" + user: where, "count": await storage.get("count", 0) + 1})
        count: int = await storage.get("count", 0)
        return count

    async def users(self, after: str = "", limit: int = 1000) -> list[str]:
        """Users in name order, ``limit`` at a time after ``after`` (paging for backups)."""
        start = "user:" + after
        rows = await self.ctx.storage.list(
            start_after=start if after else None, prefix="user:", limit=limit
        )
        return [key[len("user:") :] for key in rows]

    async def count(self) -> int:
        value: int = await self.ctx.storage.get("count", 0)
        return value
