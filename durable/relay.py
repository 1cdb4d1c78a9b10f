"""Hibernatable WebSockets across host slots: any slot's gateway holds clients of any object.

In one process the gateway's ``ClientSockets`` is attached straight to the ``Host``
(``sockets.py``). On a cluster of several slots the object may live in another slot, so the two
interfaces of ``sockets.py`` ride the channel (``channel.py``'s frames)::

    gateway (SocketRelay)                              host slot owning the object (HolderLinks)
      ATTACH holder     after the hello of each     ->  attach(holder, LinkSink(connection))
                        connection, before calls
      SOCKET event      message / closed / error /  ->  Host.socket_* (run_event), REPLY nil
                        auto, routed like a call
      DROPPED sid       to every open connection    ->  Host.socket_dropped
      on_push(ops)    <-  PUSH ops                      registry.push(holder, ops)

Objects of partitions this slot owns are reached in process (a dict lookup more than a gateway
attached straight to its Host), so a one-slot cluster runs the same code.

Guarantees:
- Everything ``sockets.py`` guarantees per object holds across slots: a frame leaves the host only
  after the commit of the writes before it (the outbox is the host's), frames of one object reach
  one gateway in the order the object queued them (one connection per gateway and host, written
  in order), and a broadcast to N sockets held by one gateway is one op in one PUSH frame.
- A message's SOCKET call returns after the pushes its handler caused were written to the
  gateway (the host drains the object's outbox before replying, on the same connection).
- A socket's life is bounded by three things, and the end of any of them closes the client
  with 1012 (service restart) so it reconnects, as workerd does on a restart:
  the holder's channel connection to the host (the host detaches the holder and forgets its
  sockets; the gateway closes the clients of every partition the table gave that host), the
  host's ownership of the partition (``SocketRegistry.close_partition``: a move or a lapsed lease
  closes its sockets and deletes their rows), and the gateway (it closes its clients on stop).
- Sockets never outlive a host incarnation or a move: a host that opens a partition drops the
  socket rows it finds there (``SocketRegistry.opened``), since their holders closed them.

Does not guarantee: order between different gateways (each has its own connection), or between
a client's messages sent through two gateways; delivery of frames queued in the instant a
partition moves (the clients get 1012 instead). On connection loss the sockets to close are
chosen by the directory table the gateway last read: a socket of a partition the table had
already moved elsewhere stays open, and its next message gets 1011 (not registered). An object
reached only through another object (a nested ``fetch`` of the upgrade) must be on a host this
gateway has a connection to, or its pushes are dropped.

On failure: events of sockets closed because their host's connection ended go nowhere (that
host forgot them; no handler runs, as for ``detach``). An event that finds no owner within the
channel's patience raises ``Unavailable``
to the gateway (the socket stays open, as for any handler error); an event for a socket the
host forgot raises ``RpcError`` and the gateway closes it with 1011.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from durable.channel import ChannelClient, Frame, MalformedFrame
from durable.errors import InvalidArgument
from durable.fanout import ClientSockets
from durable.ids import ObjectId
from durable.sockets import Op, SocketSink

if TYPE_CHECKING:
    from durable.host import Host
    from durable.transport import ClusterTransport

log = logging.getLogger("durable.relay")
RESTART = 1012  # "service restart": the client should reconnect
LOST_HOST = "the host of this object went away; reconnect"


async def run_event(host: Host, oid: ObjectId, event: str, args: list[Any]) -> None:
    """One held socket's event (a SOCKET frame's ``event`` and ``args``) on ``host``."""
    if event == "message":
        await host.socket_message(oid, args[0], args[1])
    elif event == "closed":
        await host.socket_closed(oid, args[0], args[1], args[2], args[3])
    elif event == "error":
        await host.socket_error(oid, args[0], args[1])
    elif event == "auto":
        host.socket_auto_responded(oid, args[0])
    else:
        raise InvalidArgument(f"unknown WebSocket event {event!r}")


async def socket_reply(host: Host, frame: list[Any]) -> list[list[Any]]:
    """The host's answer to a SOCKET frame whose partition it owns: REPLY nil once done."""
    _, rid, _, _, ns, raw, name, event, args = frame
    await run_event(host, ObjectId(bytes(raw), ns, name), event, args)
    return [[Frame.REPLY, rid, None]]


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    remote_events: int  # socket events sent over the channel to another slot
    closed_by_loss: int  # clients closed (1012) because their host's connection ended


@dataclass(frozen=True, slots=True)
class LinkSink:
    """A holder's channel connection, as the host's ``SocketSink``: one PUSH frame per push."""

    send: Callable[[list[Any]], None]

    def push(self, ops: list[Op]) -> None:
        self.send([Frame.PUSH, 0, ops])


class HolderLinks:
    """The host side (``ChannelServer(holders=...)``): ATTACH and DROPPED frames, and the end of
    the connections holders attached on."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._attached: dict[Callable[[list[Any]], None], list[tuple[str, LinkSink]]] = {}

    def frame(self, frame: list[Any], send: Callable[[list[Any]], None]) -> None:
        if len(frame) < 3 or not isinstance(frame[2], str):
            raise MalformedFrame(f"not a holder frame: {str(frame)[:80]}")
        if frame[0] == Frame.DROPPED:
            self.host.socket_dropped(frame[2])
            return
        holder = frame[2]
        current = self.host.sockets.sinks.get(holder)
        if current is not None and not isinstance(current, LinkSink):
            return  # this slot's own gateway calling itself: it keeps its direct sink
        sink = LinkSink(send)
        self.host.attach_sockets(holder, sink)
        self._attached.setdefault(send, []).append((holder, sink))

    def closed(self, send: Callable[[list[Any]], None]) -> None:
        """A connection ended: detach the holders attached on it (unless since re-attached on
        another), which forgets their sockets without running handlers."""
        for holder, sink in self._attached.pop(send, ()):
            if self.host.sockets.sinks.get(holder) is sink:
                self.host.detach_sockets(holder)


class SocketRelay:
    """The gateway's ``SocketHost`` on a slot of a cluster: events go to the object's owner (this
    slot's Host, or another slot over the channel); every host pushes back to the one sink."""

    def __init__(self, host: Host, transport: ClusterTransport) -> None:
        self.local = host
        self.transport = transport
        self.sink: SocketSink | None = None
        self.clients: ClientSockets | None = None
        self.remote_events = self.closed_by_loss = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._orphans: set[str] = set()  # closed by _lost: their host forgot them already

    def attach_sockets(self, holder: str, sink: SocketSink, *, exclusive: bool = False) -> None:
        self.local.attach_sockets(holder, sink, exclusive=exclusive)
        self.sink = sink
        self.clients = sink if isinstance(sink, ClientSockets) else None
        self.transport.hold_sockets(holder, self._pushed, self._lost)

    def detach_sockets(self, holder: str) -> None:
        """Detach from this slot's Host; other hosts detach as the slot's connections close."""
        self.local.detach_sockets(holder)

    async def socket_message(self, oid: ObjectId, sid: str, data: str | bytes) -> None:
        await self._event(oid, "message", [sid, data])

    async def socket_closed(
        self, oid: ObjectId, sid: str, code: int, reason: str, was_clean: bool
    ) -> None:
        await self._event(oid, "closed", [sid, code, reason, was_clean])

    async def socket_error(self, oid: ObjectId, sid: str, message: str) -> None:
        await self._event(oid, "error", [sid, message])

    def socket_dropped(self, sid: str) -> None:
        """Which host accepted is unknown here: tell this one and every connected one."""
        self.local.socket_dropped(sid)
        self.transport.notify_all([Frame.DROPPED, 0, sid])

    def socket_auto_responded(self, oid: ObjectId, sid: str) -> None:
        host = self.transport.host_for(oid)
        if host is not None:
            host.socket_auto_responded(oid, sid)
            return
        task = asyncio.ensure_future(self._quietly(self._event(oid, "auto", [sid])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _event(self, oid: ObjectId, event: str, args: list[Any]) -> None:
        if args[0] in self._orphans:  # nobody to tell: the host forgot the socket
            if event in ("closed", "error"):
                self._orphans.discard(args[0])
            return
        host = self.transport.host_for(oid)
        if host is not None:
            await run_event(host, oid, event, args)
        else:
            self.remote_events += 1
            await self.transport.socket_event(oid, event, args)

    @staticmethod
    async def _quietly(event: Awaitable[None]) -> None:
        try:
            await event
        except Exception:
            log.debug("an auto-response timestamp did not reach its object", exc_info=True)

    def _pushed(self, ops: list[Op]) -> None:
        """A PUSH frame from a host, for ``sink``; a bad op must not end the connection."""
        try:
            if self.sink is not None:
                self.sink.push(ops)
        except Exception:
            log.exception("applying a WebSocket push failed")

    def _lost(self, client: ChannelClient) -> None:
        """A host's connection ended: that host forgot our sockets (``HolderLinks``), so close
        the clients of the partitions it owned with 1012; they reconnect to the new owner."""
        clients = self.clients
        if clients is None:
            return
        partitions = self.transport.partitions_at(client)
        count = self.local.partition_count
        ops: list[Op] = [
            ("close", sid, RESTART, LOST_HOST)
            for sid, held in clients.sockets.items()
            if held.oid is not None
            and held.oid.partition(count) in partitions
            and self.transport.host_for(held.oid) is None  # not this slot's own objects
        ]
        if ops:
            log.info("closing %d WebSockets: the connection to %s ended", len(ops), client.address)
            self.closed_by_loss += len(ops)
            self._orphans.update(op[1] for op in ops)
            clients.push(ops)

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(self.remote_events, self.closed_by_loss)
