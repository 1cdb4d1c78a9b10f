"""Moving routing keys between ``ShardObject``s: one key (``Mover.move``), many (``sweep``), and
the call path that follows moves (``routed_call``).

``Mover.move(key, src, dst)`` drives the protocol of ``shard.py`` over RPC: export (freeze, drain,
rows + digest) → import at ``dst`` (staged) → compare digests → commit at ``src`` (rows deleted,
tombstone to ``dst``, in one commit) → activate at ``dst``. It follows tombstones (the key may
have moved on), finishes an import that a dead mover left staged, and treats "already there" as
success, so moving the same key twice, or from two routers at once, is safe. ``move_many`` runs
the same four steps for a batch of keys with one source and destination (4 RPCs per batch, the
``route_*_many`` methods); sweeps move ``BATCH`` keys at a time that way.

Guarantees:
- The protocol step that deletes the source's rows runs only after the destination stored them
  and their digests matched; if any step before it fails, the source is unfrozen and the staged
  copy discarded, and the error is raised: the key is still served by the source.
- A move, once started, is not cancelled with its caller (it runs shielded to the end), so a
  cancelled sweep or request never leaves a key half moved by its own doing.
- ``routed_call`` runs the method once, at the object that holds the key: redirects are
  followed before the method runs (``KeyMoved``/``KeyNotHere`` are raised before it). A move
  to a binding the router does not know is raised to the caller as ``KeyMoved``.

Does not guarantee: ``sweep`` converges only if nothing keeps creating keys at the sources; with
a placement stored in them (``route_configure``) they refuse new keys, and one pass suffices.

On failure: ``RouteLoop`` after ``MAX_HOPS`` redirects; a sweep records failed keys, moves the
rest, and raises the first failure at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from durable.namespace import Namespace, Stub
from durable.routers.base import (
    MAX_HOPS,
    KeyMoved,
    KeyNotHere,
    MoveConflict,
    RoutedCalls,
    RouteLoop,
    ShardRef,
)

log = logging.getLogger("durable.routers")
T = TypeVar("T")
PAGE = 500
BATCH = 32  # keys per move_many in a sweep


class MoveOutcome(Enum):
    MOVED = "moved"  # rows copied, verified and deleted at the source
    ALREADY = "already"  # the key was at the destination already (activated if it was staged)


@dataclass(frozen=True, slots=True)
class MoverStatistics:
    moves: int  # keys moved by this mover
    rows: int  # rows those keys carried
    already: int  # moves that found the key at its destination
    retries: int  # commits refused (the source forgot its freeze) and redone
    failures: int  # moves that raised
    in_progress: int


class Mover:
    """Moves routing keys between objects of the given bindings."""

    def __init__(self, namespaces: Mapping[str, Namespace]) -> None:
        self.namespaces = dict(namespaces)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._moves = self._rows = self._already = self._retries = self._failures = 0

    def stub(self, ref: ShardRef) -> Stub:
        namespace = self.namespaces.get(ref.binding)
        if namespace is None:
            raise KeyError(f"{ref}: binding {ref.binding!r} is not one of this router's")
        return namespace.get_by_name(ref.name)

    async def move(self, key: str, src: ShardRef, dst: ShardRef) -> MoveOutcome:
        """Make ``dst`` the holder of ``key``, wherever it is now (the search starts at ``src``)."""
        return await self._shielded(self._counted(key, src, dst))

    async def move_many(
        self, keys: Sequence[str], src: ShardRef, dst: ShardRef
    ) -> dict[str, MoveOutcome | Exception]:
        """Move ``keys`` from ``src`` to ``dst`` in one round of the protocol (4 RPCs for the
        batch, not per key); a key that needs more (a tombstone to follow, a refused commit)
        is then moved on its own. Returns each key's outcome, or the error that stopped it."""
        return await self._shielded(self._move_many(list(keys), src, dst))

    async def _shielded(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a shielded move whose caller left may fail unseen

    async def _counted(self, key: str, src: ShardRef, dst: ShardRef) -> MoveOutcome:
        try:
            outcome = await self._move(key, src, dst, depth=0)
        except BaseException:
            self._failures += 1
            raise
        self._already += outcome is MoveOutcome.ALREADY
        return outcome

    async def _outcome(self, key: str, src: ShardRef, dst: ShardRef) -> MoveOutcome | Exception:
        try:
            return await self._counted(key, src, dst)
        except Exception as error:
            return error

    async def _move_many(
        self, keys: list[str], src: ShardRef, dst: ShardRef
    ) -> dict[str, MoveOutcome | Exception]:
        if src == dst or len(keys) < 2:
            return {key: await self._outcome(key, src, dst) for key in keys}
        replies = await self.stub(src).route_export_many(keys)
        ready = [(k, *r[1:]) for k, r in zip(keys, replies, strict=True) if r[0] == "rows"]
        results = await self._transfer_many(ready, src, dst) if ready else {}
        for key in keys:
            if results.get(key) is None:  # not exported (moved, staged) or commit refused
                results[key] = await self._outcome(key, src, dst)
        return {key: results[key] for key in keys}  # type: ignore[misc]  # none left None

    async def _move(self, key: str, src: ShardRef, dst: ShardRef, depth: int) -> MoveOutcome:
        path = [src]
        for _ in range(MAX_HOPS):
            if src == dst:
                reply = await self.stub(dst).route_activate(key)
                if reply[0] != "moved":
                    return MoveOutcome.ALREADY
                src = ShardRef.of(reply[1:3])
            else:
                reply = await self.stub(src).route_export(key)
                if reply[0] == "rows":
                    _, token, rows, digest = reply
                    if await self._transfer(key, src, dst, token, rows, digest):
                        return MoveOutcome.MOVED
                    self._retries += 1
                    continue
                if reply[0] == "staged":
                    if depth >= 2:
                        raise RouteLoop(key, [*path, ShardRef.of(reply[1:3])])
                    # src holds an import nobody activated: finish that move first.
                    await self._move(key, ShardRef.of(reply[1:3]), src, depth + 1)
                    continue
                src = ShardRef.of(reply[1:3])  # "moved": follow the tombstone
            path.append(src)
        raise RouteLoop(key, path)

    async def _transfer(
        self, key: str, src: ShardRef, dst: ShardRef, token: int, rows: dict[str, Any], digest: str
    ) -> bool:
        source, target = self.stub(src), self.stub(dst)
        imported = False
        try:
            stored = await target.route_import(key, rows, src.wire(), digest)
            imported = True
            if stored != digest:
                raise MoveConflict(key, dst, "the stored copy does not match the source's digest")
            committed = await source.route_commit(key, token, dst.wire())
        except BaseException:
            await self._undo(key, source, target, token, imported)
            raise
        if not committed:
            await target.route_discard(key)
            return False
        self._moves += 1
        self._rows += len(rows)
        await target.route_activate(key)
        return True

    async def _transfer_many(
        self, ready: list[tuple[str, int, dict[str, Any], str]], src: ShardRef, dst: ShardRef
    ) -> dict[str, MoveOutcome | Exception | None]:
        """Import, verify, commit and activate a batch of exported keys; ``None``: redo alone."""
        source, target = self.stub(src), self.stub(dst)
        results: dict[str, MoveOutcome | Exception | None] = {}
        frozen = [(key, token) for key, token, _, _ in ready]
        imported: list[str] = []
        try:
            items = [(key, rows, digest) for key, _, rows, digest in ready]
            stored = await target.route_import_many(items, src.wire())
            imported = [key for (key, *_), got in zip(ready, stored, strict=True) if got]
            good = []
            for (key, token, rows, digest), got in zip(ready, stored, strict=True):
                if got == digest:
                    good.append((key, token, len(rows)))
                    continue
                detail = "the destination already holds data for it"
                if got is not None:
                    detail = "the stored copy does not match the source's digest"
                results[key] = MoveConflict(key, dst, detail)
            bad = list(results)
            if bad:
                await target.route_discard_many([k for k in bad if k in imported])
                await source.route_abort_many([(k, t) for k, t in frozen if k in results])
                self._failures += len(bad)
            committed = await source.route_commit_many([(k, t) for k, t, _ in good], dst.wire())
        except BaseException:
            await self._undo_many(source, target, frozen, imported)
            raise
        done = [(key, n) for (key, _, n), ok in zip(good, committed, strict=True) if ok]
        refused = [key for (key, _, _), ok in zip(good, committed, strict=True) if not ok]
        if refused:
            await target.route_discard_many(refused)
            self._retries += len(refused)
        if done:
            await target.route_activate_many([key for key, _ in done])
        self._moves += len(done)
        self._rows += sum(n for _, n in done)
        results.update({key: MoveOutcome.MOVED for key, _ in done})
        results.update({key: None for key in refused})
        return results

    async def _undo_many(
        self, source: Stub, target: Stub, frozen: list[tuple[str, int]], imported: list[str]
    ) -> None:
        try:
            if imported:
                await target.route_discard_many(imported)
            await source.route_abort_many(frozen)
        except Exception:
            log.exception("undoing a batch move failed; its freezes expire on their own")

    async def _undo(self, key: str, source: Stub, target: Stub, token: int, imported: bool) -> None:
        try:
            if imported:
                await target.route_discard(key)
            await source.route_abort(key, token)
        except Exception:
            log.exception("undoing the move of %r failed; its freeze expires on its own", key)

    def statistics(self) -> MoverStatistics:
        return MoverStatistics(
            self._moves, self._rows, self._already, self._retries, self._failures, len(self._tasks)
        )


async def routed_call(
    router: RoutedCalls, key: str, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """``method(key, *args, **kwargs)`` at the object holding ``key``, following moves."""
    at = await router.route(key)
    path = [at]
    for _ in range(MAX_HOPS):
        stub = router.namespaces[at.binding].get_by_name(at.name)
        try:
            return await getattr(stub, method)(key, *args, **kwargs)
        except KeyMoved as moved:
            if moved.key != key or moved.to.binding not in router.namespaces:
                raise  # another key's, or moved to a binding this router cannot reach
            at = await router.redirected(key, at, moved.to)
        except KeyNotHere as missing:
            if missing.key != key:
                raise
            await router.mover.move(key, missing.source, at)
        path.append(at)
    raise RouteLoop(key, path)


# -- sweeping many keys --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MoveProgress:
    """Progress of a sweep (a reshard or a migration)."""

    running: bool
    passes: int  # enumerations of the sources done
    found: int  # keys found in the wrong place, over all passes
    moved: int  # of those, moved (or found already moved)
    failed: int
    remaining: int  # found - moved - failed in the current pass (0 when done)


@dataclass
class Sweep:
    """A sweep's live counters; ``snapshot()`` gives the frozen ``MoveProgress``."""

    running: bool = False
    passes: int = 0
    found: int = 0
    moved: int = 0
    failed: int = 0
    remaining: int = 0
    errors: dict[str, BaseException] = field(default_factory=dict)

    def snapshot(self) -> MoveProgress:
        return MoveProgress(
            self.running, self.passes, self.found, self.moved, self.failed, self.remaining
        )

    async def run(
        self,
        mover: Mover,
        sources: Sequence[ShardRef],
        wanted: Callable[[str], ShardRef | None],
        *,
        concurrency: int = 8,
        batch: int = BATCH,
        max_passes: int = 4,
    ) -> None:
        """Move every key of ``sources`` whose ``wanted(key)`` is another object, ``batch`` keys
        per ``move_many``, ``concurrency`` batches at once; repeat the enumeration until a pass
        finds nothing (at most ``max_passes``)."""
        self.running = True
        try:
            for _ in range(max_passes):
                todo = [
                    (key, src, dst)
                    for src in sources
                    for key in await keys_of(mover, src)
                    if (dst := wanted(key)) is not None and dst != src
                ]
                self.passes += 1
                self.found += len(todo)
                self.remaining = len(todo)
                if not todo:
                    break
                await self._drain(mover, _batches(todo, batch), concurrency)
                if self.errors:
                    raise next(iter(self.errors.values()))
        finally:
            self.running = False

    async def _drain(
        self, mover: Mover, todo: list[tuple[list[str], ShardRef, ShardRef]], concurrency: int
    ) -> None:
        items = iter(todo)

        async def worker() -> None:
            for keys, src, dst in items:
                try:
                    outcomes = await mover.move_many(keys, src, dst)
                except Exception as error:
                    outcomes = dict.fromkeys(keys, error)
                for key, outcome in outcomes.items():
                    if isinstance(outcome, Exception):
                        self.failed += 1
                        if len(self.errors) < 100:
                            self.errors[key] = outcome
                    else:
                        self.moved += 1
                    self.remaining -= 1

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, concurrency)):
                group.create_task(worker())


def _batches(
    todo: list[tuple[str, ShardRef, ShardRef]], size: int
) -> list[tuple[list[str], ShardRef, ShardRef]]:
    """Group moves by (source, destination), at most ``size`` keys a group, in key order."""
    groups: dict[tuple[ShardRef, ShardRef], list[str]] = {}
    for key, src, dst in todo:
        groups.setdefault((src, dst), []).append(key)
    return [
        (keys[i : i + size], src, dst)
        for (src, dst), keys in groups.items()
        for i in range(0, len(keys), max(1, size))
    ]


async def keys_of(mover: Mover, ref: ShardRef) -> list[str]:
    """Every routing key with rows at ``ref``, paged through ``route_keys``."""
    stub = mover.stub(ref)
    found: list[str] = []
    after: str | None = None
    while True:
        page: list[str] = await stub.route_keys(after, PAGE)
        found.extend(page)
        if len(page) < PAGE:
            return found
        after = page[-1]
