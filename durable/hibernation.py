"""The host's registry of hibernatable WebSockets (workerd's hibernation manager).

Which client sockets each object accepted (id, tags, attachment, the holder process that has the
connection) and each object's auto-response, kept in host memory for the host's lifetime and in
the partition databases (``sockets``/``socket_auto`` tables, see ``partition.py``), so they
outlive every activation and a restarted host knows them before any holder re-announces (in one
process; a cluster's hosts drop them instead, see ``opened``). The object-facing pieces (``ws``
handles, limits, the outbox) are in ``sockets.py``; the host's ``WebSockets`` section
(``host.py``) turns the gateway's events into handler calls.

Guarantees:
- A socket's row is written before the object's reply to the upgrade leaves: rows are written
  once per loop turn by a callback queued before (or in the same turn as) the object's group
  commit, and the accept joins that commit (``_gate``), so its waiters resume after the rows.
- Everything an object queues for the sockets of one holder in one flush leaves as one
  ``push``; consecutive sends of one payload are one ``("send", [sid, ...], data)`` op.
- Reads (``peek``, ``listing``) never create an entry: objects that only ask leave nothing.
- A partition leaving the host (``close_partition``: moved, or its lease lapsed) closes every
  socket of its objects with 1012 (service restart; clients reconnect to the new owner), pushed
  to their holders before the partition closes, and deletes their rows; a partition granted to a
  host (``opened``) starts without sockets: rows found in it are of holders that closed them
  (``relay.py``). Auto-responses are object state: they stay in the database and move with it.

Does not guarantee: rows changed in the loop turn in which the host closes may not be written
(a holder re-announcing, ``attach(exclusive=True)`` or ``opened`` reconciles them).

On failure: a push to a holder that is not attached is dropped (logged at debug); a failing sink
is logged and the other holders still get theirs; a failed row write is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from durable.errors import InvalidArgument, WebSocketError
from durable.ids import ObjectId
from durable.sockets import (
    AUTO_HEADER,
    MAX_SOCKETS,
    OBJECT_HEADER,
    OFFER_HEADER,
    SOCKET_HEADER,
    HibernatableWebSocket,
    ObjectSockets,
    Op,
    SocketRecord,
    SocketSink,
    SocketState,
    WebSocketAccepted,
    check_auto_response,
    check_tags,
)

if TYPE_CHECKING:
    from durable.activation import Activation
    from durable.host import Host
    from durable.partition import Partition

log = logging.getLogger("durable.hibernation")


@dataclass(frozen=True, slots=True)
class SocketStatistics:
    open: int  # sockets in registries
    objects: int  # objects with at least one socket
    hibernated: int  # of those, objects without a live instance
    holders: int  # attached gateways
    messages: int  # client messages delivered to objects
    closes: int  # websocket_close/error events delivered
    pushes: int  # push() calls to holders
    frames: int  # frames queued by objects (a broadcast to N sockets counts N)
    auto_responses: int  # auto-responses the gateways reported


class SocketRegistry:
    """Every socket of a host's objects, by object and by id; persisted per partition."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.objects: dict[ObjectId, ObjectSockets] = {}
        self.by_sid: dict[str, SocketRecord] = {}
        self.sinks: dict[str, SocketSink] = {}
        self._loaded: set[int] = set()  # partitions whose rows were read into memory
        self._dirty: dict[str, SocketRecord] = {}  # rows to write; a CLOSED record is deleted
        self._dirty_auto: dict[ObjectId, tuple[str, str] | None] = {}
        self._flush_scheduled = False
        self._seq = 0
        self.messages = self.closes = self.pushes = self.frames = self.auto_responses = 0

    # -- lookup ---------------------------------------------------------------------------------
    def group(self, oid: ObjectId) -> ObjectSockets:
        """``oid``'s sockets, made if it has none yet (to accept one or set an auto-response)."""
        group = self.peek(oid)
        if group is None:
            group = self.objects[oid] = ObjectSockets(self, oid)
        return group

    def peek(self, oid: ObjectId) -> ObjectSockets | None:
        """``oid``'s sockets if it has any state here; reading makes nothing (objects that only
        ask must not leave an entry behind)."""
        group = self.objects.get(oid)
        if group is None:
            self._load(oid.partition(self.host.partition_count))
            group = self.objects.get(oid)
        return group

    def listing(self, activation: Activation, tag: str | None) -> list[HibernatableWebSocket]:
        group = self.peek(activation.oid)
        return [] if group is None else group.listing(activation, tag)

    def auto_response(self, oid: ObjectId) -> tuple[str, str] | None:
        group = self.peek(oid)
        return None if group is None else group.auto

    def _load(self, index: int) -> None:
        """Read a partition's socket rows once (a restarted host, before holders re-announce)."""
        if index in self._loaded or index not in self.host.partitions:
            return
        self._loaded.add(index)
        partition = self.host.partitions[index]
        for ns, raw, sid, holder, tags, attachment, seq in partition.socket_rows():
            if sid in self.by_sid:
                continue  # accepted by this host since it started: memory is ahead of the row
            oid = ObjectId(bytes(raw), ns)
            record = SocketRecord(sid, oid, holder, tuple(json.loads(tags)), seq, attachment)
            self.by_sid[sid] = record
            self._group_loaded(oid).add(record)
            self._seq = max(self._seq, seq)
        for ns, raw, request, response in partition.socket_auto_rows():
            self._group_loaded(ObjectId(bytes(raw), ns)).auto = (request, response)

    def _group_loaded(self, oid: ObjectId) -> ObjectSockets:
        group = self.objects.get(oid)
        if group is None:
            group = self.objects[oid] = ObjectSockets(self, oid)
        return group

    def _forget_if_empty(self, group: ObjectSockets) -> None:
        if not group.records and group.auto is None and not group.frames and group.waiter is None:
            self.objects.pop(group.oid, None)

    # -- object side ----------------------------------------------------------------------------
    def accept(
        self, activation: Activation, request: HTTPConnection, tags: Iterable[str] | None
    ) -> WebSocketAccepted:
        offer = request.headers.get(OFFER_HEADER) if isinstance(request, HTTPConnection) else None
        if not offer or " " not in offer:
            raise InvalidArgument(
                "accept_websocket() takes the upgrade request of a WebSocket route, forwarded "
                "with `await stub.fetch(websocket)`; this request is not a WebSocket upgrade."
            )
        holder, sid = offer.split(" ", 1)
        checked = check_tags(tags)
        group = self.group(activation.oid)
        if sid in self.by_sid:
            raise WebSocketError("Cannot call accept_websocket() twice for the same WebSocket.")
        if len(group.records) >= MAX_SOCKETS:
            raise WebSocketError(
                f"only {MAX_SOCKETS} websockets can be accepted on a single Durable Object instance"
            )
        self._seq += 1
        record = SocketRecord(sid, activation.oid, holder, checked, self._seq)
        group.add(record)
        self.by_sid[sid] = record
        self.changed(record)
        headers = {
            SOCKET_HEADER: sid,
            OBJECT_HEADER: f"{activation.oid.namespace}:{activation.oid}",
        }
        if group.auto is not None:
            headers[AUTO_HEADER] = json.dumps(group.auto)
        return WebSocketAccepted(group.view(activation, record), headers)

    def tags_of(self, ws: Any) -> list[str]:
        if not isinstance(ws, HibernatableWebSocket) or ws._record.sid not in self.by_sid:
            raise WebSocketError(
                "you must call 'accept_websocket()' before attempting to access the tags of a "
                "WebSocket."
            )
        return list(ws._record.tags)

    def set_auto_response(self, oid: ObjectId, pair: tuple[str, str] | None) -> None:
        group = self.group(oid)
        group.auto = check_auto_response(pair)
        self._dirty_auto[oid] = group.auto
        self._schedule_flush()
        self._gate(oid)
        request, response = group.auto or (None, None)
        for holder in {r.holder for r in group.records.values()}:
            self.push(holder, [("auto", oid.namespace, str(oid), request, response)])
        self._forget_if_empty(group)

    def auto_response_time(self, ws: Any) -> datetime | None:
        if not isinstance(ws, HibernatableWebSocket) or ws._record.auto_at is None:
            return None
        return datetime.fromtimestamp(ws._record.auto_at, UTC)

    # -- delivery to holders --------------------------------------------------------------------
    def deliver(self, ops: list[Op]) -> None:
        """Group an object's queued ops by holder, coalescing runs of one payload, and push."""
        by_holder: dict[str, list[Op]] = {}
        for op in ops:
            record: SocketRecord = op[1]
            out = by_holder.setdefault(record.holder, [])
            if op[0] == "send":
                last = out[-1] if out else None
                data = op[2]
                if last is not None and last[0] == "send" and (last[2] is data or last[2] == data):
                    last[1].append(record.sid)
                else:
                    out.append(("send", [record.sid], data))
            else:
                out.append(("close", record.sid, op[2], op[3]))
        for holder, out in by_holder.items():
            self.push(holder, out)

    def push(self, holder: str, ops: list[Op]) -> None:
        sink = self.sinks.get(holder)
        if sink is None:
            log.debug("dropped %d ops for holder %s: not attached", len(ops), holder)
            return
        self.pushes += 1
        try:
            sink.push(ops)
        except Exception:
            log.exception("push to WebSocket holder %s failed", holder)

    # -- holder side ----------------------------------------------------------------------------
    def attach(self, holder: str, sink: SocketSink, exclusive: bool) -> None:
        """Accept pushes for ``holder``; ``exclusive``: every other holder's sockets are stale."""
        self.sinks[holder] = sink
        if exclusive:
            for partition in self.host.partitions.values():
                partition.drop_sockets_except(holder)
            for record in [r for r in self.by_sid.values() if r.holder != holder]:
                self.forget(record, persist=False)

    def detach(self, holder: str) -> None:
        """The holder is going away with its connections: forget its sockets, run no handler."""
        self.sinks.pop(holder, None)
        for record in [r for r in self.by_sid.values() if r.holder == holder]:
            self.forget(record)

    def record(self, oid: ObjectId, sid: str) -> SocketRecord | None:
        record = self.by_sid.get(sid)
        if record is None:
            self._load(oid.partition(self.host.partition_count))
            record = self.by_sid.get(sid)
        return record

    def forget(self, record: SocketRecord, persist: bool = True) -> None:
        record.state = SocketState.CLOSED
        self.by_sid.pop(record.sid, None)
        group = self.objects.get(record.oid)
        if group is not None:
            group.remove(record)
            self._forget_if_empty(group)
        if persist:
            self.changed(record)

    # -- partitions coming and going (cluster hosts; relay.py) ----------------------------------
    def opened(self, index: int) -> None:
        """A partition was granted to this host: its stored sockets are stale (their holders
        closed them when it left its previous host, or lost that host), so drop them."""
        partition = self.host.partitions[index]
        dropped = partition.drop_sockets_except("")  # no holder is named "": every row
        if dropped:
            log.info("partition %d: dropped %d stale WebSocket rows", index, dropped)

    def close_partition(self, index: int, code: int = 1012, reason: str = "moved") -> None:
        """The partition leaves this host: close its objects' sockets (clients reconnect to the
        new owner), forget them here and delete their rows while the partition is still open."""
        count = self.host.partition_count
        records = [r for r in self.by_sid.values() if r.oid.partition(count) == index]
        by_holder: dict[str, list[Op]] = {}
        for record in records:
            by_holder.setdefault(record.holder, []).append(("close", record.sid, code, reason))
            self.forget(record, persist=False)
        for holder, ops in by_holder.items():
            self.push(holder, ops)
        for oid in [oid for oid in self.objects if oid.partition(count) == index]:
            del self.objects[oid]  # auto-responses are read again if the partition comes back
        self._loaded.discard(index)
        partition = self.host.partitions.get(index)
        if records and partition is not None and not partition.closed:
            partition.save_sockets([], [r.sid for r in records], [])

    # -- persistence: one write per partition per loop turn -------------------------------------
    def changed(self, record: SocketRecord) -> None:
        self._dirty[record.sid] = record
        self._schedule_flush()
        self._gate(record.oid)

    def _gate(self, oid: ObjectId) -> None:
        """Hold the object's next reply (the 101 of an accept) until the rows are written.

        The registry flush is queued before the object's group commit (or right after it, in the
        same loop turn), so by the time the commit's waiters resume the rows are in the database.
        """
        activation = self.host.active(oid)
        if activation is not None:
            activation.cache.write({})

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        autos, self._dirty_auto = self._dirty_auto, {}
        count = self.host.partition_count
        rows: dict[int, tuple[list[tuple[Any, ...]], list[str], list[tuple[Any, ...]]]] = {}
        for sid, record in dirty.items():
            upserts, deletes, _ = rows.setdefault(record.oid.partition(count), ([], [], []))
            if record.state is SocketState.CLOSED:
                deletes.append(sid)
            else:
                oid = record.oid
                tags = json.dumps(record.tags)
                upserts.append((oid.namespace, oid.raw, sid, record.holder, tags,
                                record.attachment, record.seq))  # fmt: skip
        for oid, pair in autos.items():
            entry = (oid.namespace, oid.raw, *(pair or (None, None)))
            rows.setdefault(oid.partition(count), ([], [], []))[2].append(entry)
        for index, (upserts, deletes, auto_rows) in rows.items():
            partition: Partition | None = self.host.partitions.get(index)
            if partition is None or partition.closed:
                continue
            try:
                partition.save_sockets(upserts, deletes, auto_rows)
            except Exception:
                log.exception("writing the socket registry of partition %d failed", index)

    def statistics(self) -> SocketStatistics:
        with_sockets = [oid for oid, g in self.objects.items() if g.records]
        hibernated = sum(1 for oid in with_sockets if self.host.active(oid) is None)
        return SocketStatistics(
            open=len(self.by_sid),
            objects=len(with_sockets),
            hibernated=hibernated,
            holders=len(self.sinks),
            messages=self.messages,
            closes=self.closes,
            pushes=self.pushes,
            frames=self.frames,
            auto_responses=self.auto_responses,
        )


def handler_call(fn: Callable[..., Any], *args: Any) -> Callable[[], Coroutine[Any, Any, None]]:
    """An event body for ``Activation.invoke`` calling a sync or async handler."""

    async def run() -> None:
        result = fn(*args)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result

    return run
