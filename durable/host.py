"""A Host runs many objects of the partitions it owns, in one asyncio event loop.

Guarantees:
- One activation per object at a time; it is built on the object's first event and dropped
  after its namespace's idle timeout without events (hibernation: one timer at the earliest due
  time, one last-activity order per distinct timeout; a sweep takes the objects due in the next
  20 ms with it, never more than 1 % of the timeout early), or at once, least recently used first,
  when the host holds more than ``max_active_objects`` (memory budget); never while an event,
  ``wait_until`` work or ``block_concurrency_while`` runs, nor while it has uncommitted writes.
- Commits are ``commits.GroupCommit``'s (one transaction per database per loop turn, deferred
  commit of writes only alarms made); replies wait for them (output gate).
- Promotion to an object file (first ``sql.exec``) is crash-safe: copy to ``.tmp``, fsync,
  rename, fsync the folder, then flip the ``objects`` row in one partition transaction.
- Open object files stay under an fd budget (``RLIMIT_NOFILE`` soft limit minus a reserve for
  sockets, 3 fds per WAL database): the least recently used idle file is closed first.
- ``close()`` flushes, cancels timers, closes every database and releases every lock.

Does not guarantee: fairness between objects beyond the event loop's FIFO scheduling.

On failure: a failed commit resets only the objects whose writes failed (``commits.py`` says
what their callers get) and schedules their stored alarms again. A ``BaseException`` that is not
an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``) raised by an object (in any handler: a
method, ``fetch``, ``alarm``, a WebSocket handler) resets that object and reaches its caller as
``RemoteError`` (an alarm retries); a malformed RPC payload is refused with ``InvalidArgument``
before anything runs. An error in a ``wait_until`` task is logged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import resource
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.requests import Request

from durable import messages
from durable.activation import Activation
from durable.alarms import AlarmOutcome, AlarmScheduler
from durable.cache import ObjectCache
from durable.checkpoint import Checkpointer
from durable.clock import Clock
from durable.commits import DEFERRED_COMMIT, GroupCommit
from durable.errors import (
    DurableError,
    ObjectReset,
    RpcError,
)
from durable.eviction import IdleEviction
from durable.faults import faults
from durable.gates import CpuGuard, wait_durable
from durable.hibernation import SocketRegistry, handler_call
from durable.ids import ObjectId
from durable.limits import Limits
from durable.namespace import FetchResponse, Namespace, materialize
from durable.object import AlarmInfo, DurableObject, rpc_method
from durable.partition import ObjectRecord, Partition, StorageKind
from durable.sockets import SocketSink, SocketState
from durable.sql import ObjectFile
from durable.storage import Storage, StorageContext

T = TypeVar("T")
log = logging.getLogger("durable.host")
FDS_PER_FILE = 3


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
        self.commits = GroupCommit(
            clock, data_dir, self._defers, self._commit_failed, self._alarm_committed
        )
        self.idle = IdleEviction(clock, self.evict)
        self._activations = self._evictions = self._resets = 0

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        self.commits.start(asyncio.get_running_loop())
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
        self.commits.flush()
        await self.alarms.close()
        self.idle.stop()
        tasks = [t for a in self._active.values() for t in a.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.commits.stop()
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
        self.sockets.opened(index)  # sockets never follow a partition: their rows are stale
        self._rearm_alarms(partition, on=True)

    def remove_partition(self, index: int) -> None:
        """Stop serving a partition: commit, reset its objects, close it, release its lock."""
        partition = self.partitions.get(index)
        if partition is None:
            return
        self.commits.flush()
        for activation in list(self._active.values()):
            if activation.cache.partition is partition:
                activation.reset(ObjectReset("its partition moved to another host; retry"))
        self.sockets.close_partition(index)  # 1012: the clients reconnect to the new owner
        self._rearm_alarms(partition, on=False)
        del self.partitions[index]
        partition.close()

    def busy(self, index: int) -> bool:
        """Whether an object of partition ``index`` has an event or background work in flight
        (a planned move waits until none has: ``durable.moves``)."""
        partition = self.partitions.get(index)
        return any(a.cache.partition is partition and not a.idle for a in self._active.values())

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
        timeout = self.idle_timeout_of(oid.namespace)
        group = self.idle.group(timeout)
        activation = Activation(
            self, config.cls, oid, cache, Storage(shared), config.limits, timeout, group
        )
        self._active[oid] = activation
        self._activations += 1
        self.touched(activation)
        return activation

    def touched(self, activation: Activation) -> None:
        """The activation was created or finished some work: it is the most recently used."""
        oid = activation.oid
        active = self._active
        if active.get(oid) is not activation:
            return  # reset or evicted meanwhile
        active.move_to_end(oid)
        self.idle.touched(activation)
        if self.max_active_objects is not None and len(active) > self.max_active_objects:
            self.shed(keep=activation)

    def forget(self, activation: Activation) -> None:
        """Drop a reset activation: its cache (and buffered writes) are discarded."""
        if self._active.get(activation.oid) is activation:
            del self._active[activation.oid]
        self._resets += 1
        self.commits.forget(activation.cache)
        cache = activation.cache
        if cache.file is not None:
            cache.file.rollback()
            self._close_file(cache)

    def log_background_error(self, activation: Activation, error: BaseException | None) -> None:
        log.error("wait_until task of %s failed", activation.oid, exc_info=error)

    # -- idle eviction (eviction.py) and the memory budget -------------------------------------
    def idle_timeout_of(self, namespace: str) -> float:
        return self.idle_timeouts.get(namespace, self.idle_timeout)

    def evict(self, activation: Activation) -> None:
        """Hibernate: drop the instance and its cache, close its file. Storage stays. (Also for
        an activation the idle sweep found due.)"""
        activation.evicted()
        del self._active[activation.oid]
        group = activation.idle_group
        if group.get(activation.oid) is activation:
            del group[activation.oid]
        if activation.cache in self._files:
            self._close_file(activation.cache)
        self._evictions += 1

    def shed(self, keep: Activation | None = None) -> int:
        """Evict least recently used idle objects until at most ``max_active_objects`` remain.

        Busy objects (see ``eviction.py``) and ``keep`` (the object whose event is starting)
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
    # ``invoke`` and ``fetch`` return the activation's event coroutine rather than awaiting it:
    # a reply resumes one frame fewer (every frame between the caller and the output gate's
    # future is resumed once per call). What they raise before that (no such method, no fetch,
    # arguments that cannot cross) is raised by the call itself.
    async def call(self, oid: ObjectId, method: str, payload: bytes) -> bytes:
        """An RPC from another process: decode the arguments, run the method as one event,
        encode the result."""
        args, kwargs = messages.decode_call(payload)
        encoded: bytes = await self._rpc(oid, method, args, kwargs, messages.encode_result)
        return encoded

    def invoke(
        self,
        oid: ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        limit: int,
    ) -> Coroutine[Any, Any, Any]:
        """An RPC from this process: arguments and result cross as ``messages.py`` says (plain
        values as themselves, others copied), never through bytes they do not need."""
        args, kwargs = messages.arguments(args, kwargs, limit)
        return self._rpc(oid, method, args, kwargs, messages.result)

    def _rpc(
        self,
        oid: ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        reply: Callable[[Any, int], Any],
    ) -> Coroutine[Any, Any, Any]:
        activation = self.activate(oid)
        target = rpc_method(activation.instance, method)
        limit = activation.limits.max_rpc_bytes

        async def handler() -> Any:
            result = target(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return reply(result, limit)

        return activation.invoke(handler)

    def fetch(self, oid: ObjectId, request: Request) -> Coroutine[Any, Any, FetchResponse]:
        """An HTTP request into the object's ``fetch``, its response collected whole."""
        activation = self.activate(oid)
        fetch = getattr(activation.instance, "fetch", None)
        if not callable(fetch):
            raise RpcError.no_fetch()

        async def handler() -> FetchResponse:
            return await materialize(await fetch(request))

        return activation.invoke(handler)

    # -- commits (commits.py) --------------------------------------------------------------------
    def _defers(self, cache: ObjectCache) -> bool:
        """May ``cache``'s new writes wait (``commits.DEFERRED_COMMIT``)? Only while its object
        runs nothing but alarm events, and unless it set an alarm due sooner than that."""
        activation = self._active.get(cache.oid)
        if activation is None or activation.cache is not cache:
            return False
        if not activation.pending or activation.pending != activation.alarm_events:
            return False
        soon = (self.clock.now() + DEFERRED_COMMIT) * 1000
        return not cache.alarm_dirty or cache.alarm is None or cache.alarm > soon

    def _commit_failed(self, cache: ObjectCache, reason: DurableError) -> None:
        activation = self._active.get(cache.oid)
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

    def _alarm_committed(self, cache: ObjectCache) -> None:
        self.alarms.schedule(cache.oid, cache.alarm, cache.kind)

    # -- object files -----------------------------------------------------------------------------
    def open_file(self, cache: ObjectCache) -> ObjectFile:
        if cache.cleared and cache.kind is StorageKind.FILE:
            self.commits.flush_one(cache)  # the pending demotion (delete_all) first: a new file
        if cache.file is not None:
            self._files.move_to_end(cache)
            return cache.file
        if cache.kind is StorageKind.ROWS:
            self._move_to_file(cache)
        limits = self.namespaces[cache.ns].limits
        path = cache.partition.object_path(cache.ns, cache.oid.raw)
        cache.file = ObjectFile(path, limits, cache.partition.synchronous)
        self._files[cache] = None
        self._enforce_file_budget()
        return cache.file

    def _move_to_file(self, cache: ObjectCache) -> None:
        """Promotion: move an object's rows into a file of its own (DESIGN §3 copy-then-flip).
        Runs inline, as ``sql.exec`` is synchronous (CONTRACTS §3): only this object's buffered
        writes are committed first, so the copy sees them."""
        self.commits.flush_one(cache)
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
            await activation.invoke(handler, alarm=True)
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
            commits=self.commits.commits,
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
            await activation.invoke(handler_call(handler, ws, *args))
        await group.drained()


def host_of(env: Any) -> Host | None:
    """The in-process ``Host`` serving ``env``'s namespaces (``connect(address=None)``), else
    None (a cluster's env, or no namespace)."""
    for value in vars(env).values():
        if isinstance(value, Namespace) and isinstance(value.transport, Host):
            return value.transport
    return None


def _file_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = max(256, soft // 5)  # sockets, partitions, Ray's own descriptors
    return max(16, (soft - reserve) // FDS_PER_FILE)
