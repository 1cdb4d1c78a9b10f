"""Hibernatable WebSockets as objects see them: the ``ws`` handles, each object's sockets and
outbox, workerd's limits, and the interfaces between the gateway and the host. The host's
registry of every socket (persisted per partition) is ``hibernation.py``.

The work is split as in workerd (DESIGN §6). The gateway holds every client connection, answers
auto-responses and fans frames out; the host keeps the registry (which sockets an object accepted,
their tags and attachments) and runs the handlers. They meet at two narrow interfaces, so the same
gateway serves an in-process ``Host`` or hosts behind the channel (``relay.py``: events as SOCKET
frames, ops as PUSH frames, what holds across slots)::

    gateway -> host  (SocketHost)   attach / detach / socket_message / socket_closed /
                                    socket_error / socket_dropped / socket_auto_responded
    host -> gateway  (SocketSink)   push(ops), ops are msgpack-able tuples:
        ("send", [sid, ...], text | bytes)      one frame for many sockets: a broadcast is one op
        ("close", sid, code, reason)            code 1005 = a close frame without a status
        ("auto", ns, oid_hex, request | None, response | None)

An upgrade reaches the object as a request carrying the gateway's offer (``OFFER_HEADER``:
``"<holder> <sid>"``, set by the gateway, stripped from client requests). ``accept_websocket``
registers the socket and returns a 101 response naming it (``SOCKET_HEADER``, ``OBJECT_HEADER``,
``AUTO_HEADER``); the gateway completes the handshake only on that answer.

Guarantees:
- A socket's row is written before the object's reply to the upgrade (its 101) leaves: the
  registry joins the object's output gate, so a host that restarts knows every accepted socket.
- Frames leave in the order the object queued them, and only after the commit of every write the
  object made before queueing each one: a frame remembers the commit round pending when it was
  queued and the outbox waits for it (workerd's output gate for ``ws.send``).
- ``ws.send``/``ws.close`` never block: they queue. Everything an object queues in one turn
  leaves as one ``push`` per holder, consecutive sends of one payload coalesced into one op.
- Sockets, tags, attachments and the auto-response outlive the activation: they live in host
  memory and in the partition's ``sockets``/``socket_auto`` tables (written once per loop turn), so
  an object rebuilt after eviction sees them already in ``__init__``.
- workerd's limits and messages: 32,768 sockets per object, 10 distinct tags of ≤ 256 characters,
  16 KiB attachments (after the value codec), auto-response request/response ≤ 2,048 bytes.
- ``get_websockets()`` lists newest first, ``get_websockets(tag)`` in accept order (as workerd).

Decisions where workerd's behaviour was not observed: ``ws.close()`` without a code sends an
empty close frame (1005, as workerd); frames sent after the client's close are dropped, after the
object's own ``close()`` raise (workerd's message); sockets outlive resets and ``ctx.abort()``
(they are not the activation's); the auto-response timestamp is the host clock's time when the
gateway reported it (an aware UTC ``datetime``); a stopping server closes its sockets with 1012
and no handler runs.

Does not guarantee: a frame reaches a client that is slow or gone (the gateway drops frames for
sockets that closed); delivery across a host restart (clients reconnect).

On failure: if the commit before a frame fails, the object is reset and the frames it queued are
dropped, never sent ahead of a lost write. Pushes to a holder that is not attached are dropped;
``detach`` forgets the holder's sockets without running handlers.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from starlette.responses import Response

from durable import values
from durable.errors import InvalidArgument, ObjectReset, WebSocketError
from durable.ids import ObjectId

if TYPE_CHECKING:
    from durable.activation import Activation
    from durable.cache import ObjectCache
    from durable.gates import CommitRound
    from durable.hibernation import SocketRegistry

log = logging.getLogger("durable.sockets")

MAX_SOCKETS = 32_768
MAX_TAGS = 10
MAX_TAG_LENGTH = 256
MAX_ATTACHMENT_BYTES = 16_384
MAX_AUTO_RESPONSE_BYTES = 2_048
NO_STATUS = 1005  # close without a status code (an empty close frame)

OFFER_HEADER = "x-durable-websocket"
SOCKET_HEADER = "x-durable-socket"
OBJECT_HEADER = "x-durable-object"
AUTO_HEADER = "x-durable-auto-response"

Op = tuple[Any, ...]


class SocketSink(Protocol):
    """The process holding client connections, as a host sees it."""

    def push(self, ops: list[Op]) -> None: ...


class SocketHost(Protocol):
    """Where the objects are, as the gateway sees it (an in-process ``Host``, or a channel)."""

    def attach_sockets(self, holder: str, sink: SocketSink, *, exclusive: bool = False) -> None: ...

    def detach_sockets(self, holder: str) -> None: ...

    async def socket_message(self, oid: ObjectId, sid: str, data: str | bytes) -> None: ...

    async def socket_closed(
        self, oid: ObjectId, sid: str, code: int, reason: str, was_clean: bool
    ) -> None: ...

    async def socket_error(self, oid: ObjectId, sid: str, message: str) -> None: ...

    def socket_dropped(self, sid: str) -> None: ...

    def socket_auto_responded(self, oid: ObjectId, sid: str) -> None: ...


class SocketState(Enum):
    """One accepted socket, as its object sees it."""

    OPEN = "open"  # -> CLOSE_SENT (ws.close()), CLOSE_RECEIVED (client closed), CLOSED (lost)
    CLOSE_SENT = "close_sent"  # the object closed it; waiting for the client's reply -> CLOSED
    CLOSE_RECEIVED = "close_received"  # the client closed it; websocket_close runs -> CLOSED
    CLOSED = "closed"  # gone from the registry; final


@dataclass(slots=True)
class SocketRecord:
    sid: str
    oid: ObjectId
    holder: str
    tags: tuple[str, ...]
    seq: int
    attachment: bytes | None = None
    state: SocketState = SocketState.OPEN
    auto_at: float | None = None


def check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """workerd's rule: duplicates are dropped, but no tag may come after 10 distinct ones.

    >>> check_tags(["a", "b", "a", ""])
    ('a', 'b', '')
    """
    if tags is None:
        return ()
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise InvalidArgument("accept_websocket(): tags must be a list of strings.")
    seen: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidArgument(f"accept_websocket(): tag {tag!r} is not a string.")
        if len(seen) >= MAX_TAGS:
            raise WebSocketError(f"a Hibernatable WebSocket cannot have more than {MAX_TAGS} tags")
        if len(tag) > MAX_TAG_LENGTH:
            raise WebSocketError(
                f'"{tag}" is longer than the max tag length ({MAX_TAG_LENGTH} characters).'
            )
        seen[tag] = None
    return tuple(seen)


def check_close(code: int | None, reason: str | None) -> tuple[int, str]:
    """The close frame ``ws.close(code, reason)`` sends: ``(1005, "")`` when no code is given."""
    if code is None:
        if reason:
            raise InvalidArgument(
                "If you specify a WebSocket close reason, you must also specify a code."
            )
        return NO_STATUS, ""
    if (
        not isinstance(code, int)
        or not 1000 <= code < 5000
        or code in (1004, NO_STATUS, 1006, 1015)
    ):
        raise InvalidArgument(f"Invalid WebSocket close code: {code}.")
    reason = reason or ""
    if len(reason.encode()) > 123:
        raise InvalidArgument(
            f"A WebSocket close reason may be at most 123 bytes (UTF-8); this one is "
            f"{len(reason.encode())} bytes."
        )
    return code, reason


def check_auto_response(pair: tuple[str, str] | None) -> tuple[str, str] | None:
    if pair is None:
        return None
    if not (
        isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
    ):
        raise InvalidArgument(
            "set_websocket_auto_response() takes a (request, response) pair of strings, or None."
        )
    for side, text in zip(("Request", "Response"), pair, strict=True):
        size = len(text.encode())
        if size > MAX_AUTO_RESPONSE_BYTES:
            raise InvalidArgument(
                f"{side} cannot be larger than {MAX_AUTO_RESPONSE_BYTES} bytes. "
                f"A {side.lower()} of size {size} was provided."
            )
    return (pair[0], pair[1])


class WebSocketAccepted(Response):
    """What ``ctx.accept_websocket`` returns: the 101 to return from ``fetch``, and the new
    socket (``.websocket``) for ``serialize_attachment`` or a first ``send``."""

    def __init__(self, websocket: HibernatableWebSocket, headers: dict[str, str]) -> None:
        super().__init__(status_code=101, headers=headers)
        self.websocket = websocket


class HibernatableWebSocket:
    """A ``ws`` as the object sees it: one accepted client socket. Made anew per activation."""

    __slots__ = ("__weakref__", "_activation", "_group", "_record")

    def __init__(self, group: ObjectSockets, record: SocketRecord, activation: Activation) -> None:
        self._group = group
        self._record = record
        self._activation = weakref.ref(activation)

    @property
    def id(self) -> str:
        """The socket's id, unique in the cluster (chosen by the gateway)."""
        return self._record.sid

    @property
    def state(self) -> SocketState:
        return self._record.state

    def __repr__(self) -> str:
        return f"<HibernatableWebSocket {self._record.sid} {self._record.state.value}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HibernatableWebSocket) and other._record is self._record

    def __hash__(self) -> int:
        return hash(self._record.sid)

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Queue a text (``str``) or binary frame; it leaves once earlier writes are durable."""
        state = self._record.state
        if state is SocketState.CLOSE_SENT:
            raise InvalidArgument("Can't call WebSocket send() after close().")
        if isinstance(message, bytearray | memoryview):
            message = bytes(message)
        elif not isinstance(message, str | bytes):
            raise InvalidArgument(f"ws.send() takes str or bytes, not {type(message).__name__}.")
        if state is SocketState.CLOSED:
            return  # the connection is gone: dropped silently, as workerd does
        self._group.queue(self._activation(), ("send", self._record, message))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Queue a close frame (no code: an empty close frame, 1005). A second close is ignored."""
        code, reason = check_close(code, reason)
        state = self._record.state
        if state is SocketState.CLOSE_SENT or state is SocketState.CLOSED:
            return
        self._record.state = SocketState.CLOSE_SENT
        self._group.queue(self._activation(), ("close", self._record, code, reason))

    def serialize_attachment(self, value: Any) -> None:
        """Keep ``value`` with the socket (≤ 16 KiB once encoded); it survives hibernation."""
        data = values.encode(value)
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise WebSocketError(
                f"A WebSocket 'attachment' cannot be larger than {MAX_ATTACHMENT_BYTES} bytes."
                f"'attachment' was {len(data)} bytes."
            )
        self._record.attachment = data
        self._group.registry.changed(self._record)

    def deserialize_attachment(self) -> Any:
        """A fresh copy of the attachment, or None."""
        data = self._record.attachment
        return None if data is None else values.decode(data)


@dataclass(slots=True)
class _Frame:
    round: CommitRound | None  # the commit that must succeed before the frame leaves
    cache: ObjectCache | None
    op: Op


@dataclass(eq=False)
class ObjectSockets:
    """The sockets of one object, its auto-response and its outbox of queued frames."""

    registry: SocketRegistry
    oid: ObjectId
    records: dict[str, SocketRecord] = field(default_factory=dict)
    tags: dict[str, dict[str, None]] = field(default_factory=dict)
    auto: tuple[str, str] | None = None
    frames: list[_Frame] = field(default_factory=list)
    queued: int = 0  # frames ever queued
    handled: int = 0  # of those, pushed or dropped
    scheduled: bool = False
    waiter: asyncio.Task[None] | None = None
    views: dict[str, HibernatableWebSocket] = field(default_factory=dict)
    views_of: weakref.ref[Activation] | None = None

    def add(self, record: SocketRecord) -> None:
        self.records[record.sid] = record
        for tag in record.tags:
            self.tags.setdefault(tag, {})[record.sid] = None

    def remove(self, record: SocketRecord) -> None:
        self.records.pop(record.sid, None)
        self.views.pop(record.sid, None)
        for tag in record.tags:
            members = self.tags.get(tag)
            if members is not None:
                members.pop(record.sid, None)
                if not members:
                    del self.tags[tag]

    def view(self, activation: Activation, record: SocketRecord) -> HibernatableWebSocket:
        """The ``ws`` for ``record`` in this activation (the same object while it lives)."""
        if self.views_of is None or self.views_of() is not activation:
            self.views = {}
            # When the evicted activation is collected its handles go too (hibernation is
            # about memory).
            self.views_of = weakref.ref(activation, self._forget_views)
        ws = self.views.get(record.sid)
        if ws is None:
            ws = self.views[record.sid] = HibernatableWebSocket(self, record, activation)
        return ws

    def _forget_views(self, ref: weakref.ref[Activation]) -> None:
        if self.views_of is ref:
            self.views = {}

    def listing(self, activation: Activation, tag: str | None) -> list[HibernatableWebSocket]:
        if tag is None:
            chosen: Iterable[str] = reversed(self.records)  # newest first, as workerd's list
        else:
            chosen = self.tags.get(tag, ())
        records = self.records
        return [self.view(activation, records[sid]) for sid in chosen]

    # -- the outbox -----------------------------------------------------------------------------
    def queue(self, activation: Activation | None, op: Op) -> None:
        cache = activation.cache if activation is not None else None
        if cache is not None:
            cache.host.commits.expedite(cache)  # the frame leaves after the writes before it
        round_ = cache.round if cache is not None else None
        if round_ is not None and round_.done and cache not in round_.failed:
            round_ = None  # already durable
        self.frames.append(_Frame(round_, cache, op))
        self.queued += 1
        self.registry.frames += 1
        if not self.scheduled and self.waiter is None:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Push every queued frame whose commit is done; wait (in a task) for the rest."""
        self.scheduled = False
        if self.waiter is not None or not self.frames:
            return
        pending = [f for f in self.frames if f.round is not None and not f.round.done]
        if pending:
            # Commit rounds finish in order, so the last one pending covers every frame.
            self.waiter = asyncio.ensure_future(self._wait(pending[-1]))
            activation = self.registry.host.active(self.oid)
            if activation is not None:
                activation.tasks.add(self.waiter)  # cancelled if the host closes first
            return
        frames, self.frames = self.frames, []
        self.handled += len(frames)
        self.registry.deliver(_durable(frames))

    async def _wait(self, frame: _Frame) -> None:
        assert frame.round is not None and frame.cache is not None
        try:
            await frame.round.wait(frame.cache)
        except ObjectReset:
            pass  # flush() below drops the frames of the failed commit
        finally:
            task, self.waiter = self.waiter, None
            activation = self.registry.host.active(self.oid)
            if activation is not None and task is not None:
                activation.tasks.discard(task)
        self.flush()

    async def drained(self) -> None:
        """Return once every frame queued so far has been pushed (or dropped); frames queued
        meanwhile by other events do not hold it up."""
        target = self.queued
        while self.handled < target:
            if self.waiter is not None:
                await asyncio.shield(self.waiter)
            else:
                self.flush()


def _durable(frames: list[_Frame]) -> list[Op]:
    """The ops of frames whose commit succeeded; a failed commit drops the frames behind it."""
    ops = [f.op for f in frames if f.round is None or f.cache not in f.round.failed]
    if len(ops) < len(frames):
        log.warning("dropped %d WebSocket frames: the commit before them failed (object reset)",
                    len(frames) - len(ops))  # fmt: skip
    return ops
