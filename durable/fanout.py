"""The gateway's side of hibernatable WebSockets: the client connections it holds.

``ClientSockets`` is the ``SocketSink`` a host pushes to: it writes an object's frames to the
sockets they name (a broadcast is one op for N sockets), closes sockets, and answers
auto-responses itself, so a hibernated object is not woken by a ``"ping"``.
``DurableWebSocketProtocol`` is uvicorn's sans-I/O WebSocket protocol with two changes that
``durable dev``/``serve`` (and the tests) run with:

- the closing handshake as in workerd: when the client closes, the server's reply waits for the
  object (``websocket_close`` may answer with ``ws.close(code, reason)``; without an answer the
  client's close is echoed once the handler returned, or after 10 s);
- frames can be written synchronously, and one serialized frame is written to every socket of a
  broadcast (no per-socket task, await or frame encoding).

The protocol reports the end of a connection as one ``websocket.disconnect`` carrying
``durable.kind``: ``reply`` (the client closed; answer with ``websocket.close``), ``closed`` (the
client answered our close), ``lost`` (no close frame: 1006), ``error`` (a protocol failure such as a
message over the size limit: 1009) or ``shutdown`` (the server is stopping: 1012).

Guarantees:
- Frames reach each socket in push order. Frames pushed while the handshake is completing are
  held and written right after it; a socket that is closing or gone gets nothing more.
- Under another ASGI server the gateway still works: writes fall back to ``await send`` in one task
  per socket with a backlog, and the server echoes the client's close itself.

Does not guarantee: delivery to a client that does not read. Its frames are buffered up to
``MAX_BUFFERED`` bytes; past that its connection is aborted (the object sees close 1006).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State

from durable.ids import ObjectId
from durable.sockets import NO_STATUS, Op

log = logging.getLogger("durable.fanout")
MAX_BUFFERED = 16 * 2**20
INBOX_PAUSE = 64  # client messages waiting for the object before reading from the client stops
LOST_REASON = "WebSocket disconnected without sending Close frame."
_writers: set[asyncio.Future[None]] = set()  # writer and inbox tasks, referenced until done


class EventHandler(Protocol):
    """What the gateway does with a held socket's events (``gateway.SocketEndpoint``)."""

    def quick(self, held: HeldSocket, event: dict[str, Any]) -> bool:
        """Handle ``event`` synchronously if possible (an auto-response); True if done."""
        ...

    async def handle(self, held: HeldSocket, event: dict[str, Any]) -> bool:
        """Handle ``event``; True once the connection has ended."""
        ...


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def close_frame(code: int, reason: str) -> bytes:
    payload = b"" if code == NO_STATUS else Close(code, reason).serialize()
    return Frame(Opcode.CLOSE, payload).serialize(mask=False)


def data_frame(data: str | bytes) -> bytes:
    """One unmasked server frame; the same bytes serve every socket without extensions."""
    if isinstance(data, str):
        return Frame(Opcode.TEXT, data.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, data).serialize(mask=False)


class DurableWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with workerd's close handshake and direct writes.

    ``hold(on_event)``: after the handshake the gateway may take the connection over. Received
    messages and the final disconnect then go to ``on_event`` instead of the ASGI app, which
    returns: an idle socket costs no coroutine, task or frame (and nothing for the garbage
    collector to scan but the connection's own objects).
    """

    peer_closed = False  # the client's close frame arrived; our reply is pending
    final_sent = False  # the one durable.kind disconnect event was queued
    held: Callable[[dict[str, Any]], None] | None = None  # see hold()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the app's task has not started yet: it will find us here
            scope["extensions"]["durable.protocol"] = self

    def _final(self, code: int, reason: str, kind: str) -> None:
        if not self.final_sent:
            self.final_sent = True
            event: Any = {"type": "websocket.disconnect", "code": code, "reason": reason}
            event["durable.kind"] = kind
            if self.held is not None:
                self.held(event)
            else:
                self.queue.put_nowait(event)

    def hold(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        """Deliver every later event to ``on_event`` (events already queued first, in order)."""
        self.held = on_event
        while not self.queue.empty():
            on_event(dict(self.queue.get_nowait()))
        self.resume()

    def pause(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        held = self.held
        if held is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close: discarded, as uvicorn does
        if self.curr_msg_data_type == "bytes":
            held({"type": "websocket.receive", "bytes": data})
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        held({"type": "websocket.receive", "text": text})

    async def run_asgi(self) -> None:
        """uvicorn's, except that a held connection outlives the ASGI app."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.held is not None:
            self.scope = None  # type: ignore[assignment]  # headers etc.: not kept for hours
        elif self.close_timer is None:
            self.transport.close()

    def handle_close(self, event: Frame) -> None:
        if self.close_sent or self.peer_closed or self.transport.is_closing():
            super().handle_close(event)
            return
        self.conn.data_to_send()  # drop websockets' automatic echo: the object answers
        self.peer_closed = True
        close = self.conn.close_rcvd
        assert close is not None
        self._final(close.code, close.reason, "reply")
        self.close_timer = self.loop.call_later(self.close_timeout, self.close_now, NO_STATUS, "")

    def handle_parser_exception(self) -> None:
        close = self.conn.close_sent
        if close is not None:  # websockets failed the connection: 1009 too big, 1007 bad UTF-8
            self._final(close.code, close.reason, "error")
        super().handle_parser_exception()

    def connection_lost(self, exc: Exception | None) -> None:
        close = self.conn.close_rcvd
        if close is not None and self.close_sent:
            self._final(close.code, close.reason, "closed")
        else:
            self._final(1006, LOST_REASON, "lost")
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.peer_closed and not self.close_sent:
            self.close_now(1012, "")
            return
        if self.handshake_complete and not self.close_sent:
            self._final(1012, "", "shutdown")
        super().shutdown()

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "websocket.close" and self.handshake_complete and not self.initial_response:
            self.close_now(message.get("code", 1000), message.get("reason") or "")
            return
        if kind == "websocket.send" and self.peer_closed:
            return  # the client closed: frames after its close are dropped
        await super().send(message)
        if kind == "websocket.accept":
            # The handshake's request and response (headers) are not needed any more: an idle
            # socket is memory held for hours, so keep it small.
            self.request = self.response = None  # type: ignore[assignment]

    # -- direct writes, for the fan-out ---------------------------------------------------------
    def write_frame(self, frame: bytes | None, data: str | bytes) -> bool:
        """Write one data frame now (``frame``: pre-serialized, used without extensions)."""
        transport = self.transport
        if self.close_sent or self.peer_closed or self.disconnected or transport.is_closing():
            return False
        if self.conn.state is not State.OPEN:
            return False
        if frame is not None and not self.conn.extensions:
            transport.write(frame)
        else:
            if isinstance(data, str):
                self.conn.send_text(data.encode())
            else:
                self.conn.send_binary(data)
            self.transport.write(b"".join(self.conn.data_to_send()))
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            log.warning("aborting a WebSocket whose client does not read (%s)", self.client)
            transport.abort()
        return True

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame (1005: without a status) and finish or start the handshake."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.close_sent = True
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if self.peer_closed:  # our reply to the client's close: the handshake is complete
            self.transport.write(close_frame(code, reason))
            self.transport.close()
            return
        try:
            self.conn.send_close(None if code == NO_STATUS else code, reason)
        except Exception:  # a code that may not be sent: close without a status
            log.warning("cannot send close code %r; closing without one", code)
            self.conn.send_close()
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


class HeldState(Enum):
    """A client connection held by the gateway."""

    CONNECTING = "connecting"  # the object is answering the upgrade; frames wait -> OPEN, CLOSED
    OPEN = "open"  # -> CLOSING (a close frame went either way), CLOSED (lost)
    CLOSING = "closing"  # -> CLOSED
    CLOSED = "closed"  # forgotten; final


class HeldSocket:
    """One client connection and how to write to it."""

    __slots__ = ("backlog", "close_sent", "handler", "inbox", "oid", "proto", "send", "sid",
                 "state", "waiting")  # fmt: skip

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.oid: ObjectId | None = None
        self.state = HeldState.CONNECTING
        self.proto: DurableWebSocketProtocol | None = None
        self.send: Send | None = None
        self.waiting: list[Op] = []  # ops pushed before the handshake finished
        self.backlog: deque[MutableMapping[str, Any]] | None = None  # fallback writer's queue
        self.close_sent = False
        self.inbox: deque[dict[str, Any]] | None = None  # events waiting for the handler
        self.handler: EventHandler | None = None  # set by the gateway when it holds the socket

    # -- events from a held connection: one at a time, in order, with no idle task ---------------
    def feed(self, event: dict[str, Any]) -> None:
        """``DurableWebSocketProtocol.hold``'s callback."""
        assert self.handler is not None
        if self.inbox is None:
            if self.handler.quick(self, event):
                return  # answered at once (an auto-response)
            self.inbox = deque((event,))
            task = asyncio.ensure_future(self._run())
            _writers.add(task)
            task.add_done_callback(_writers.discard)
            return
        self.inbox.append(event)
        if len(self.inbox) >= INBOX_PAUSE and self.proto is not None:
            self.proto.pause()  # the client sends faster than the object takes messages

    async def _run(self) -> None:
        inbox, handler = self.inbox, self.handler
        assert inbox is not None and handler is not None
        try:
            while inbox:
                if len(inbox) < INBOX_PAUSE // 2 and self.proto is not None:
                    self.proto.resume()
                if await handler.handle(self, inbox.popleft()):
                    inbox.clear()  # the connection ended
        finally:
            self.inbox = None

    def open(self, oid: ObjectId, send: Send, proto: DurableWebSocketProtocol | None) -> None:
        self.oid, self.send, self.proto = oid, send, proto
        self.state = HeldState.OPEN
        waiting, self.waiting = self.waiting, []
        for op in waiting:
            if op[0] == "send":
                self.write(None, op[2])
            else:
                self.close(op[2], op[3])

    def write(self, frame: bytes | None, data: str | bytes) -> None:
        if self.state is not HeldState.OPEN:
            return
        proto = self.proto
        if proto is not None and self.backlog is None:
            proto.write_frame(frame, data)
            return
        key = "text" if isinstance(data, str) else "bytes"
        self._enqueue({"type": "websocket.send", key: data})

    def close(self, code: int, reason: str) -> None:
        if self.close_sent or self.state is HeldState.CLOSED:
            return
        self.close_sent = True
        self.state = HeldState.CLOSING
        if self.proto is not None and self.backlog is None:
            self.proto.close_now(code, reason)
        else:
            self._enqueue({"type": "websocket.close", "code": code, "reason": reason})

    def _enqueue(self, message: MutableMapping[str, Any]) -> None:
        """Fallback for other servers: one writer task per socket drains a backlog in order."""
        if self.backlog is None:
            self.backlog = deque()
            task = asyncio.ensure_future(self._drain())
            _writers.add(task)
            task.add_done_callback(_writers.discard)
        self.backlog.append(message)

    async def _drain(self) -> None:
        backlog, send = self.backlog, self.send
        assert backlog is not None and send is not None
        try:
            while backlog:
                await send(backlog.popleft())
        except Exception:
            backlog.clear()  # the connection is gone; its end is reported by the receive loop
        finally:
            self.backlog = None


@dataclass(frozen=True, slots=True)
class HolderStatistics:
    held: int  # client connections held
    connecting: int  # of those, handshakes in progress
    pushes: int  # push() calls received
    frames: int  # frames written (a broadcast to N counts N)
    auto_responses: int


class ClientSockets:
    """The connections one gateway process holds, addressed by socket id (the ``SocketSink``)."""

    def __init__(self) -> None:
        self.holder = uuid.uuid4().hex
        self.sockets: dict[str, HeldSocket] = {}
        self.auto: dict[tuple[str, str], tuple[str, str]] = {}  # (ns, oid hex) -> pair
        self.pushes = self.frames = self.auto_responses = 0

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def expect(self, sid: str) -> HeldSocket:
        held = self.sockets[sid] = HeldSocket(sid)
        return held

    def forget(self, sid: str) -> None:
        held = self.sockets.pop(sid, None)
        if held is not None:
            held.state = HeldState.CLOSED

    def auto_response(self, oid: ObjectId) -> tuple[str, str] | None:
        return self.auto.get((oid.namespace, str(oid))) if self.auto else None

    def set_auto(self, ns: str, oid_hex: str, pair: tuple[str, str] | None) -> None:
        if pair is None:
            self.auto.pop((ns, oid_hex), None)
        else:
            self.auto[(ns, oid_hex)] = pair

    def push(self, ops: list[Op]) -> None:
        """Apply a host's ops in order (``sockets.py`` documents them)."""
        self.pushes += 1
        sockets = self.sockets
        for op in ops:
            kind = op[0]
            if kind == "send":
                sids, data = op[1], op[2]
                frame = data_frame(data) if len(sids) > 1 else None
                for sid in sids:
                    held = sockets.get(sid)
                    if held is None:
                        continue
                    if held.state is HeldState.CONNECTING:
                        held.waiting.append(("send", sid, data))
                    else:
                        held.write(frame, data)
                self.frames += len(sids)
            elif kind == "close":
                held = sockets.get(op[1])
                if held is None:
                    continue
                if held.state is HeldState.CONNECTING:
                    held.waiting.append(op)
                else:
                    held.close(op[2], op[3])
            elif kind == "auto":
                _, ns, oid_hex, request, response = op
                self.set_auto(ns, oid_hex, None if request is None else (request, response))
            else:
                log.warning("unknown push op %r", kind)

    def statistics(self) -> HolderStatistics:
        connecting = sum(1 for h in self.sockets.values() if h.state is HeldState.CONNECTING)
        return HolderStatistics(
            len(self.sockets), connecting, self.pushes, self.frames, self.auto_responses
        )
