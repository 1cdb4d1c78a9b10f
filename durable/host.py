"""A Host runs many objects of the partitions it owns, in one asyncio event loop.

Guarantees:
- One activation per object at a time; it is built on the object's first event and dropped
  after its namespace's idle timeout without events (hibernation: one timer at the earliest due
  time, one last-activity order per distinct timeout; a sweep takes the objects due in the next
  20 ms with it, never more than 1 % of the timeout early), or at once, least recently used first,
  when the host holds more than ``max_active_objects`` (memory budget); never while an event,
  ``wait_until`` work or ``block_concurrency_while`` runs, nor while it has uncommitted writes.
- Group commit: every object's writes of one event-loop turn commit in one transaction per
  database, in a callback scheduled with ``call_soon`` on the first write of the turn; replies wait
  for it (output gate). A failing object is isolated (retried alone) and reset.
- Deferred commit: writes made while an object runs only alarm events (no caller waits on an
  alarm) commit within ``DEFERRED_COMMIT`` (50 ms), batched, one partition per loop turn; the
  alarm's clearing is in the same commit, so a crash before it runs the alarm again
  (at-least-once). A reply, outgoing call or WebSocket send of the object commits them first.
  A failed deferred commit resets the object and schedules its stored alarm again.
- Promotion to an object file (first ``sql.exec``) is crash-safe: copy to ``.tmp``, fsync,
  rename, fsync the folder, then flip the ``objects`` row in one partition transaction.
- Open object files stay under an fd budget (``RLIMIT_NOFILE`` soft limit minus a reserve for
  sockets, 3 fds per WAL database): the least recently used idle file is closed first.
- ``close()`` flushes, cancels timers, closes every database and releases every lock.

Does not guarantee: fairness between objects beyond the event loop's FIFO scheduling.

On failure: a failed commit resets only the objects whose writes failed; their callers get
``ObjectReset``, or ``StorageFull`` when the disk under the data directory has less than
``FULL_FLOOR`` bytes free (logged once when the episode starts and once when commits succeed
again). A ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``)
raised by an object (in any handler: a method, ``fetch``, ``alarm``, a WebSocket handler) resets
that object and reaches its caller as ``RemoteError`` (an alarm retries); a malformed RPC
payload is refused with ``InvalidArgument`` before anything runs. An error in a ``wait_until``
task is logged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import resource
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from starlette.requests import Request

from durable import values
from durable.activation import Activation
from durable.alarms import AlarmOutcome, AlarmScheduler
from durable.cache import ObjectCache
from durable.checkpoint import Checkpointer
from durable.clock import Clock, Timer
from durable.errors import (
    DurableError,
    InvalidArgument,
    MessageTooLarge,
    ObjectReset,
    Overloaded,
    RemoteError,
    RpcError,
    StorageFull,
)
from durable.faults import faults
from durable.gates import CommitRound, CpuGuard, wait_durable
from durable.hibernation import SocketRegistry, handler_call
from durable.ids import ObjectId
from durable.limits import Limits
from durable.logs import Episode
from durable.namespace import FetchResponse, materialize
from durable.object import AlarmInfo, DurableObject, rpc_method
from durable.partition import ObjectRecord, Partition, StorageKind
from durable.sockets import SocketSink, SocketState
from durable.sql import ObjectFile
from durable.storage import Storage, StorageContext
from durable.worker import Worker

T = TypeVar("T")
log = logging.getLogger("durable.host")
FDS_PER_FILE = 3
BUSY_RECHECK = 1.0  # seconds before the sweep looks again at a due object that was busy
EVICTION_BATCH = 0.02  # seconds: a sweep evicts the objects due this soon after it, too
DEFERRED_COMMIT = 0.05  # seconds that writes only alarms could see may wait for a batch commit
FULL_FLOOR = 256 * 1024  # bytes free below which a failed commit is blamed on a full disk


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    cls: type[DurableObject]
    limits: Limits


@dataclass(frozen=True, slots=True)
class HostStatistics:
    partitions: int
    active_objects: int
    open_files: int
    max_open_files: int
    commits: int
    activations: int
    evictions: int
    resets: int
    pending_alarms: int


class Host:
    """Owns partitions and runs their objects."""

    def __init__(
        self,
        data_dir: Path,
        partitions: list[int],
        partition_count: int,
        namespaces: Mapping[str, NamespaceConfig],
        clock: Clock,
        idle_timeout: float = 10.0,
        max_open_files: int | None = None,
        idle_timeouts: Mapping[str, float] | None = None,
        max_active_objects: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.partition_count = partition_count
        self.namespaces = dict(namespaces)
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.idle_timeouts = dict(idle_timeouts or {})  # per namespace; others: idle_timeout
        self.max_active_objects = max_active_objects
        self.env: Any = None
        full = any(c.limits.synchronous == "full" for c in self.namespaces.values())
        self.synchronous = "full" if full else "normal"
        self.checkpointer = Checkpointer()
        self.partitions = {i: self._partition(i) for i in partitions}
        self.max_open_files = max_open_files or _file_budget()
        self.guard = CpuGuard()
        self.alarms = AlarmScheduler(clock, self._fire_alarm, self._drop_alarm)
        self._active: OrderedDict[ObjectId, Activation] = OrderedDict()
        self._files: OrderedDict[ObjectCache, None] = OrderedDict()
        self._dirty: dict[ObjectCache, None] = {}
        self._round: CommitRound | None = None
        self._deferred: dict[ObjectCache, None] = {}  # writes no one can observe yet
        self._deferred_timer: Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_timer: Timer | None = None
        self._sweep_at: float | None = None
        # Per distinct idle timeout, activations in order of last activity (front = idle longest).
        self._idle: dict[float, OrderedDict[ObjectId, Activation]] = {}
        self._commits = self._activations = self._evictions = self._resets = 0
        self.disk_full = Episode(
            log,
            "commits fail: the disk holding %s is full; writes get StorageFull (507) until "
            "space is freed",
            "commits succeed again; %d commits failed while the disk was full",
        )

    @classmethod
    def for_worker(
        cls, worker: Worker, data_dir: Path, partitions: list[int], count: int, clock: Clock
    ) -> Host:
        """A host for ``worker``'s bindings with its limits, idle timeouts and memory budget."""
        namespaces = {
            b: NamespaceConfig(c, worker.limits_for(b)) for b, c in worker.objects.items()
        }
        return cls(data_dir, partitions, count, namespaces, clock,
                   idle_timeout=worker.idle_timeout, idle_timeouts=worker.idle_timeouts,
                   max_active_objects=worker.max_active_objects)  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        opened = []
        try:
            for partition in self.partitions.values():
                partition.open()
                opened.append(partition)
        except BaseException:
            for partition in opened:
                partition.close()
            raise
        self.guard.start()
        self.checkpointer.start()
        for partition in self.partitions.values():
            self._rearm_alarms(partition, on=True)

    def _partition(self, index: int) -> Partition:
        return Partition(self.data_dir, index, self.synchronous, self.checkpointer)

    def _rearm_alarms(self, partition: Partition, on: bool) -> None:
        """Schedule (or, for a partition leaving, unschedule) its alarms from its index."""
        for ns, raw, name, alarm, kind in partition.pending_alarms():
            if ns in self.namespaces:
                oid = ObjectId(bytes(raw), ns, name)
                self.alarms.schedule(oid, alarm if on else None, StorageKind(kind))

    async def close(self) -> None:
        self.flush()
        await self.alarms.close()
        for timer in (self._sweep_timer, self._deferred_timer):
            if timer is not None:
                timer.cancel()
        tasks = [t for a in self._active.values() for t in a.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.flush()
        for cache in list(self._files):
            self._close_file(cache)
        self._active.clear()
        self.checkpointer.stop()
        for partition in self.partitions.values():
            partition.close()
        self.guard.stop()

    # -- ownership: partitions granted to and taken from a Ray host --------------------------------
    def add_partition(self, index: int) -> None:
        """Open a newly granted partition; ``DataDirInUse`` while its previous owner holds it."""
        if index in self.partitions:
            return
        partition = self._partition(index)
        partition.open()
        self.partitions[index] = partition
        self._rearm_alarms(partition, on=True)

    def remove_partition(self, index: int) -> None:
        """Stop serving a partition: commit, reset its objects, close it, release its lock."""
        partition = self.partitions.get(index)
        if partition is None:
            return
        self.flush()
        for activation in list(self._active.values()):
            if activation.cache.partition is partition:
                activation.reset(ObjectReset("its partition moved to another host; retry"))
        self._rearm_alarms(partition, on=False)
        del self.partitions[index]
        partition.close()

    # -- activation ------------------------------------------------------------------------------
    def activate(self, oid: ObjectId, record: ObjectRecord | None = None) -> Activation:
        """The object's live activation, made if needed; ``record``: its objects row when the
        caller knows it exactly (the alarm scheduler), to skip the lookup."""
        activation = self._active.get(oid)
        if activation is not None:
            return activation
        config = self.namespaces[oid.namespace]
        partition = self.partitions[oid.partition(self.partition_count)]
        if record is None:
            record = partition.record(oid.namespace, oid.raw)
        cache = ObjectCache(self, partition, oid, record, config.limits.max_storage_bytes)
        if cache.kind is StorageKind.FILE:
            cache.alarm = self.open_file(cache).alarm()  # the file decides; the index is a hint
            if record is not None and cache.alarm != record.alarm:
                self.alarms.schedule(oid, cache.alarm, StorageKind.FILE)
        shared = StorageContext(cache, config.limits, callable(getattr(config.cls, "alarm", None)))
        activation = Activation(self, config.cls, oid, cache, Storage(shared), config.limits)
        self._active[oid] = activation
        self._activations += 1
        self.touched(activation)
        return activation

    def admit(self, activation: Activation) -> None:
        limit = activation.limits.max_pending_events
        if activation.pending >= limit:
            raise Overloaded(f"Durable Object {activation.oid}", limit)

    def touched(self, activation: Activation) -> None:
        """The activation was created or finished some work: it is the most recently used."""
        oid = activation.oid
        if self._active.get(oid) is not activation:
            return  # reset or evicted meanwhile
        self._active.move_to_end(oid)
        timeout = self.idle_timeout_of(oid.namespace)
        group = self._idle.get(timeout)
        if group is None:
            group = self._idle[timeout] = OrderedDict()
        group[oid] = activation
        group.move_to_end(oid)
        due = activation.last_active + timeout
        if self._sweep_at is None or due < self._sweep_at:
            self._arm_sweep(due)
        if self.max_active_objects is not None and len(self._active) > self.max_active_objects:
            self.shed(keep=activation)

    def forget(self, activation: Activation) -> None:
        """Drop a reset activation: its cache (and buffered writes) are discarded."""
        if self._active.get(activation.oid) is activation:
            del self._active[activation.oid]
        self._resets += 1
        self._dirty.pop(activation.cache, None)
        self._deferred.pop(activation.cache, None)
        cache = activation.cache
        if cache.file is not None:
            cache.file.rollback()
            self._close_file(cache)

    def log_background_error(self, activation: Activation, error: BaseException | None) -> None:
        log.error("wait_until task of %s failed", activation.oid, exc_info=error)

    # -- idle eviction -----------------------------------------------------------------------------
    # One timer for the whole host, at the earliest due time over the groups (one group per
    # distinct idle timeout, each ordered by last activity, so each group's front is due first).
    # Entries of activations reset since (``forget``) are dropped when the sweep reaches them.
    # A sweep also takes the objects due within EVICTION_BATCH after it: at thousands of
    # evictions a second that is one timer per batch, not one per object.
    def idle_timeout_of(self, namespace: str) -> float:
        return self.idle_timeouts.get(namespace, self.idle_timeout)

    def _arm_sweep(self, when: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_at = when
        self._sweep_timer = self.clock.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = self._sweep_at = None
        now = self.clock.now()
        upcoming = [self._sweep_group(group, timeout, now) for timeout, group in self._idle.items()]
        due = [when for when in upcoming if when is not None]
        if due:
            self._arm_sweep(min(due))

    def _sweep_group(
        self, group: OrderedDict[ObjectId, Activation], timeout: float, now: float
    ) -> float | None:
        """Evict the group's objects idle for ``timeout``; return when the group is due next."""
        expired = []
        upcoming = None
        horizon = now + min(EVICTION_BATCH, timeout / 100)  # never more than 1 % early
        for activation in group.values():
            if activation.last_active + timeout > horizon:
                upcoming = activation.last_active + timeout
                break
            expired.append(activation)
        for activation in expired:
            if self._active.get(activation.oid) is not activation:
                del group[activation.oid]  # reset since: nothing to evict
            elif activation.idle and not activation.cache.busy:
                self.evict(activation)
            else:
                # Busy: it moves to the back when its work ends, but uncommitted writes and
                # block_concurrency_while end without an event, so look again in a second.
                recheck = now + BUSY_RECHECK
                upcoming = recheck if upcoming is None else min(upcoming, recheck)
        return upcoming

    def evict(self, activation: Activation) -> None:
        """Hibernate: drop the instance and its cache, close its file. Storage stays."""
        activation.evicted()
        del self._active[activation.oid]
        group = self._idle.get(self.idle_timeout_of(activation.oid.namespace))
        if group is not None and group.get(activation.oid) is activation:
            del group[activation.oid]
        if activation.cache in self._files:
            self._close_file(activation.cache)
        self._evictions += 1

    # -- memory budget ---------------------------------------------------------------------------
    def shed(self, keep: Activation | None = None) -> int:
        """Evict least recently used idle objects until at most ``max_active_objects`` remain.

        Busy objects (see ``_sweep_group``) and ``keep`` (the object whose event is starting)
        are skipped, so the host may stay over budget while that many are busy. Returns how
        many were evicted.
        """
        excess = len(self._active) - (self.max_active_objects or len(self._active))
        victims: list[Activation] = []
        for activation in self._active.values():  # least recently used first
            if len(victims) >= excess:
                break
            if activation is not keep and activation.idle and not activation.cache.busy:
                victims.append(activation)
        for activation in victims:
            self.evict(activation)
        return len(victims)

    # -- calls ----------------------------------------------------------------------------------
    async def call(self, oid: ObjectId, method: str, payload: bytes) -> bytes:
        """An RPC: decode the arguments, run the method as one event, encode the result."""
        activation = self.activate(oid)
        target = rpc_method(activation.instance, method)
        args, kwargs = _call_arguments(payload)
        limit = activation.limits.max_rpc_bytes

        async def handler() -> bytes:
            result = target(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            data = values.encode(result)
            if len(data) > limit:
                raise MessageTooLarge(len(data), limit)
            return data

        return await self._invoke(activation, handler)

    async def fetch(self, oid: ObjectId, request: Request) -> FetchResponse:
        """An HTTP request into the object's ``fetch``, its response collected whole."""
        activation = self.activate(oid)
        fetch = getattr(activation.instance, "fetch", None)
        if not callable(fetch):
            raise RpcError.no_fetch()

        async def handler() -> FetchResponse:
            return await materialize(await fetch(request))

        return await self._invoke(activation, handler)

    async def _invoke(
        self,
        activation: Activation,
        handler: Callable[[], Coroutine[Any, Any, T]],
        alarm: bool = False,
    ) -> T:
        """``activation.invoke`` with errors a caller can act on: ``StorageFull`` rather than
        the reset it caused, and a user ``BaseException`` (which would otherwise escape every
        ``except Exception`` up to the server) as a reset and a ``RemoteError``."""
        try:
            return await activation.invoke(handler, alarm)
        except ObjectReset:
            broken = activation.gate.broken
            if isinstance(broken, StorageFull):
                raise StorageFull(broken.path) from None
            raise
        except (Exception, asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as error:
            activation.reset(ObjectReset(f"it raised {type(error).__name__}"))
            remote = RemoteError(type(error).__name__, str(error))
            remote.remote = True
            raise remote from None

    # -- group commit --------------------------------------------------------------------------
    # Writes commit at the end of the loop turn, except writes no one can observe yet: those of
    # an object whose only running events are alarms (an alarm has no caller; at-least-once lets
    # a crash run it again, as its alarm is cleared in the same commit). They wait up to
    # DEFERRED_COMMIT and then commit in batches; anything that could observe them first (a
    # reply, an outgoing call, a WebSocket send, another event's end) commits them at once
    # (``promote``). An alarm set sooner than that is never deferred.
    def mark_dirty(self, cache: ObjectCache) -> CommitRound | None:
        """Register ``cache``'s new writes; returns the round that will commit them, or None if
        they are deferred (the cache keeps its previous round)."""
        if cache not in self._dirty and self._defers(cache):
            if cache not in self._deferred:
                self._deferred[cache] = None
                if self._deferred_timer is None:
                    at = self.clock.now() + DEFERRED_COMMIT
                    self._deferred_timer = self.clock.call_at(at, self._commit_deferred)
            return None
        return self._now(cache)

    def _now(self, cache: ObjectCache) -> CommitRound:
        self._deferred.pop(cache, None)
        if self._round is None:
            assert self._loop is not None
            self._round = CommitRound()
            self._loop.call_soon(self._flush_turn)
        self._dirty[cache] = None
        return self._round

    def _defers(self, cache: ObjectCache) -> bool:
        activation = self._active.get(cache.oid)
        if activation is None or activation.cache is not cache:
            return False
        if not activation.pending or activation.pending != activation.alarm_events:
            return False
        soon = (self.clock.now() + DEFERRED_COMMIT) * 1000
        return not cache.alarm_dirty or cache.alarm is None or cache.alarm > soon

    def promote(self, cache: ObjectCache) -> None:
        """Something may observe ``cache``'s deferred writes: commit them this turn."""
        if cache in self._deferred:
            cache.round = self._now(cache)

    def _commit_deferred(self, partitions: list[Partition] | None = None) -> None:
        """One partition's deferred writes per loop turn (a pass over those deferred when it
        began), so a batch never holds the loop for all partitions at once."""
        self._deferred_timer = None
        if partitions is None:
            partitions = list({cache.partition: None for cache in self._deferred})
        if partitions:
            partition = partitions.pop()
            for cache in [c for c in self._deferred if c.partition is partition]:
                self.promote(cache)
        if partitions:
            step = partial(self._commit_deferred, partitions)
            self._deferred_timer = self.clock.call_at(self.clock.now(), step)
        elif self._deferred:  # deferred during the pass: the next pass
            at = self.clock.now() + DEFERRED_COMMIT
            self._deferred_timer = self.clock.call_at(at, self._commit_deferred)

    def _flush_turn(self) -> None:
        self.flush(deferred=False)

    def flush(self, deferred: bool = True) -> None:
        """Commit every dirty object now (with ``deferred``, the deferred ones too): one
        transaction per partition database."""
        if deferred:
            for cache in list(self._deferred):
                self.promote(cache)
        round_, self._round = self._round, None
        dirty, self._dirty = self._dirty, {}
        if round_ is None:
            return
        failed: set[ObjectCache] = set()
        batches: dict[Partition, list[tuple[ObjectCache, Any]]] = {}
        for cache in dirty:
            try:
                writes = cache.prepare_commit()
                if writes is not None:
                    batches.setdefault(cache.partition, []).append((cache, writes))
            except Exception:
                log.exception("preparing the commit of %s failed", cache.oid)
                failed.add(cache)
        for partition, items in batches.items():
            bad = partition.commit([writes for _, writes in items])
            failed.update(items[i][0] for i in bad)
            if not bad:
                self.disk_full.ended()
        for cache in dirty:
            if cache.commits_file and cache not in failed:
                try:
                    cache.commit_file()
                except Exception:
                    log.exception("commit of %s's object file failed", cache.oid)
                    failed.add(cache)
        self._commits += 1
        for cache in dirty:
            if cache in failed:
                self._fail_commit(cache)
            else:
                alarm_changed = cache.alarm_dirty
                cache.finish_commit()
                if alarm_changed:
                    self.alarms.schedule(cache.oid, cache.alarm, cache.kind)
        round_.finish(failed)

    def _fail_commit(self, cache: ObjectCache) -> None:
        activation = self._active.get(cache.oid)
        reason = self._commit_failure(cache.partition.root)
        if activation is not None and activation.cache is cache:
            activation.reset(reason)
        # The stored alarm is what stands (an alarm that ran is not cleared): schedule it again.
        # Inside flush, before its round finishes: a failing lookup must not strand the waiters.
        try:
            record = cache.partition.record(cache.ns, cache.oid.raw)
        except sqlite3.Error:
            log.exception("re-reading the alarm of %s after a failed commit failed", cache.oid)
            return
        if record is not None:
            self.alarms.schedule(cache.oid, record.alarm, record.kind)

    def _commit_failure(self, where: Path) -> DurableError:
        """What a failed commit tells its object's callers: ``StorageFull`` if the disk is."""
        try:
            stat = os.statvfs(where)
        except OSError:
            return ObjectReset("a storage write failed to commit")
        if stat.f_bavail * stat.f_frsize >= FULL_FLOOR:
            return ObjectReset("a storage write failed to commit")
        self.disk_full.struck(self.data_dir)
        return StorageFull(str(self.data_dir))

    # -- object files -----------------------------------------------------------------------------
    def open_file(self, cache: ObjectCache) -> ObjectFile:
        if cache.cleared and cache.kind is StorageKind.FILE:
            self.flush()  # commit the pending demotion (delete_all) first: a new file follows
        if cache.file is not None:
            self._files.move_to_end(cache)
            return cache.file
        if cache.kind is StorageKind.ROWS:
            self._promote(cache)
        limits = self.namespaces[cache.ns].limits
        path = cache.partition.object_path(cache.ns, cache.oid.raw)
        cache.file = ObjectFile(path, limits, cache.partition.synchronous)
        self._files[cache] = None
        self._enforce_file_budget()
        return cache.file

    def _promote(self, cache: ObjectCache) -> None:
        """Move an object's rows into a file of its own (DESIGN §3 copy-then-flip)."""
        self.flush()  # the copy must see every acknowledged and buffered write
        path = cache.partition.object_path(cache.ns, cache.oid.raw)
        rows = cache.partition.table(cache.ns, cache.oid.raw).rows()
        ObjectFile.create(path, rows, cache.alarm)
        faults.hit("promote.after_copy")
        cache.partition.mark(cache.ns, cache.oid.raw, StorageKind.FILE, cache.alarm)
        faults.hit("promote.after_flip")
        cache.kind = StorageKind.FILE
        self.alarms.retag(cache.oid, StorageKind.FILE)

    def _enforce_file_budget(self) -> None:
        for cache in list(self._files):
            if len(self._files) <= self.max_open_files:
                return
            if not cache.busy:
                self._close_file(cache)

    def _close_file(self, cache: ObjectCache) -> None:
        self._files.pop(cache, None)
        if cache.file is not None:
            cache.file.close()
            cache.file = None

    # -- alarms -------------------------------------------------------------------------------
    async def _fire_alarm(
        self, oid: ObjectId, scheduled: int, retry: int, kind: StorageKind | None
    ) -> AlarmOutcome:
        config = self.namespaces.get(oid.namespace)
        if config is None or not callable(getattr(config.cls, "alarm", None)):
            return AlarmOutcome.NO_RETRY
        activation = self.activate(oid, None if kind is None else ObjectRecord(kind, scheduled))
        cache = activation.cache
        if cache.alarm != scheduled:
            return AlarmOutcome.DONE  # deleted or replaced since it was scheduled

        async def handler() -> None:
            sets = cache.alarm_sets
            await activation.instance.alarm(AlarmInfo(scheduled, retry))  # type: ignore[attr-defined]
            if cache.alarm_sets == sets:  # not set again meanwhile: done, in the same commit
                cache.set_alarm(None)

        cache.firing = scheduled
        try:
            await self._invoke(activation, handler, alarm=True)
        except Exception:
            log.warning("alarm() of %s failed (attempt %d)", oid, retry + 1, exc_info=True)
            return AlarmOutcome.FAILED if activation.retry_alarm else AlarmOutcome.NO_RETRY
        finally:
            cache.firing = None
        return AlarmOutcome.DONE

    async def _drop_alarm(self, oid: ObjectId) -> None:
        activation = self.activate(oid)
        activation.cache.set_alarm(None)
        await wait_durable(activation.cache)

    def statistics(self) -> HostStatistics:
        return HostStatistics(
            partitions=len(self.partitions),
            active_objects=len(self._active),
            open_files=len(self._files),
            max_open_files=self.max_open_files,
            commits=self._commits,
            activations=self._activations,
            evictions=self._evictions,
            resets=self._resets,
            pending_alarms=self.alarms.statistics().pending,
        )

    # -- WebSockets (issue #5): the host side of hibernatable sockets, see sockets.py --------------
    # ``Host`` is the gateway's ``sockets.SocketHost`` when both run in one process.
    @property
    def sockets(self) -> SocketRegistry:
        """This host's socket registry, made on first use."""
        registry: SocketRegistry | None = self.__dict__.get("_socket_registry")
        if registry is None:
            registry = self._socket_registry = SocketRegistry(self)
        return registry

    def active(self, oid: ObjectId) -> Activation | None:
        """The live activation of ``oid``, or None if it is not in memory (hibernated)."""
        return self._active.get(oid)

    def attach_sockets(self, holder: str, sink: SocketSink, *, exclusive: bool = False) -> None:
        self.sockets.attach(holder, sink, exclusive)

    def detach_sockets(self, holder: str) -> None:
        self.sockets.detach(holder)

    async def socket_message(self, oid: ObjectId, sid: str, data: str | bytes) -> None:
        """A client message: wake the object if needed and run ``websocket_message(ws, data)``."""
        record = self.sockets.record(oid, sid)
        if record is None:
            raise RpcError(f"WebSocket {sid} is not registered with {oid.namespace}:{oid}.")
        self.sockets.messages += 1
        await self._socket_event(record, "websocket_message", data)

    async def socket_closed(
        self, oid: ObjectId, sid: str, code: int, reason: str, was_clean: bool
    ) -> None:
        """The connection closed: run ``websocket_close``, push its reply, forget the socket."""
        record = self.sockets.record(oid, sid)
        if record is None:
            return
        if record.state is SocketState.OPEN:
            record.state = SocketState.CLOSE_RECEIVED  # ws.close() may still answer it
        try:
            self.sockets.closes += 1
            await self._socket_event(record, "websocket_close", code, reason, was_clean)
        finally:
            self.sockets.forget(record)

    async def socket_error(self, oid: ObjectId, sid: str, message: str) -> None:
        """The connection failed (e.g. a frame over the limit): run ``websocket_error``."""
        from durable.errors import WebSocketError

        record = self.sockets.record(oid, sid)
        if record is None:
            return
        record.state = SocketState.CLOSE_RECEIVED
        try:
            self.sockets.closes += 1
            await self._socket_event(record, "websocket_error", WebSocketError(message))
        finally:
            self.sockets.forget(record)

    def socket_dropped(self, sid: str) -> None:
        """The handshake failed after the object accepted: forget the socket, run nothing."""
        record = self.sockets.by_sid.get(sid)
        if record is not None:
            self.sockets.forget(record)

    def socket_auto_responded(self, oid: ObjectId, sid: str) -> None:
        record = self.sockets.by_sid.get(sid)
        if record is not None:
            record.auto_at = self.clock.now()
            self.sockets.auto_responses += 1

    async def _socket_event(self, record: Any, name: str, *args: Any) -> None:
        """Run handler ``name`` if the class has one (a class without it is not woken)."""
        group = self.sockets.group(record.oid)
        if callable(getattr(self.namespaces[record.oid.namespace].cls, name, None)):
            activation = self.activate(record.oid)
            handler = getattr(activation.instance, name)
            ws = group.view(activation, record)
            await self._invoke(activation, handler_call(handler, ws, *args))
        await group.drained()


def _call_arguments(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """An RPC payload decoded as ``[args, kwargs]``, else ``InvalidArgument`` (nothing ran)."""
    try:
        decoded = values.decode(payload)
    except Exception as error:
        raise InvalidArgument(f"The RPC payload could not be decoded: {error}") from None
    if (
        not isinstance(decoded, list | tuple)
        or len(decoded) != 2
        or not isinstance(decoded[0], list | tuple)
        or not isinstance(decoded[1], dict)
        or not all(isinstance(k, str) for k in decoded[1])
    ):
        raise InvalidArgument("An RPC payload must be [args, kwargs] (a list and a str-keyed map).")
    return list(decoded[0]), cast(dict[str, Any], decoded[1])


def _file_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = max(256, soft // 5)  # sockets, partitions, Ray's own descriptors
    return max(16, (soft - reserve) // FDS_PER_FILE)
