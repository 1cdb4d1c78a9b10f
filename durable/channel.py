"""The channel: the data path between callers and hosts (Ray only places and restarts hosts).

Protocol (CONTRACTS §9; one protocol, extended by later issues, never a second). A stream of
msgpack arrays, no length prefix (``msgpack.Unpacker``); the first element is the frame kind::

    caller -> host
      [HELLO,  token]                                   first frame; a wrong token closes
      [CALL,   rid, partition, epoch, ns, oid, name, method, payload]
      [FETCH,  rid, partition, epoch, ns, oid, name, head, chunk, more]
      [BODY,   rid, chunk, more]                        further request body (<= 256 KiB each)
      [CANCEL, rid]
      [ATTACH, 0, holder]                               WebSockets held by ``holder`` (relay.py)
      [SOCKET, rid, partition, epoch, ns, oid, name, event, args]   a held socket's event
      [DROPPED, 0, sid]                                 its handshake failed after the accept
    host -> caller
      [REPLY,  rid, payload]                            payload: value-codec bytes (RPC)
      [ERROR,  rid, module, qualname, message, flags, args]
                                                        flags: bit 0 remote, bit 1 reset;
                                                        args: value-coded [.args, attributes],
                                                        or nil when not codable
      [NOT_OWNER, rid, partition, epoch]                nothing ran; re-resolve and resend
      [RESPONSE, rid, status, headers, chunk, more]     fetch response head and first chunk
      [BODY,   rid, chunk, more]                        further response body
      [PUSH,   0, ops]                                  ops for the holder attached on this link
    source host -> target host (a planned move, ``durable.moves``; each answered REPLY or ERROR,
    handled in arrival order like calls)
      [MOVE,      rid, partition, epoch, files]         files: [[path, bytes, sha256], ...]
      [MOVE_DATA, rid, partition, epoch, index, chunk]  the files' bytes in order (<= 256 KiB)
      [MOVE_DONE, rid, partition, epoch]                verify, place
      [MOVE_UNDO, rid, partition, epoch]                the switch was refused: drop the copy

``head`` is ``[method, scheme, path, query, headers, server]`` with headers as a list of
``[name, value]`` byte pairs.

Guarantees:
- Pipelined: many calls in flight per connection, answered in any order by request id.
- Everything a caller sends to one host in one event-loop turn leaves in one write (a per-turn
  flush of a buffer), and so does everything a host answers in one turn.
- ``not_owner`` means the host ran nothing: the caller re-resolves and resends only then, or when
  the connection failed before the frame was written.
- A call in flight when the connection drops fails with ``ConnectionLost``: never resent, so
  never applied twice.
- In-flight calls per connection are bounded (``max_in_flight``); past it ``Overloaded``.

Does not guarantee: bodies are chunked on the wire but assembled whole at each end (the object's
``fetch`` gets a complete body; streaming into it is the gateway issue's).

Endpoints: a host listens on a Unix socket and on TCP, maybe TLS (``durable.endpoint``): the
same frames on either. Unix sockets stay plain (0600); the token is required on both.

On failure: a malformed frame (not ``[kind, rid, ...]`` with a known kind, or body for an
unknown request) or a wrong token (compared in constant time) closes the connection and is
logged, at most once per peer per minute (the rest are counted in ``refused``); a TLS handshake
that fails closes the connection; the server and its other connections go on. In-flight calls
on the closed connection fail with ``ConnectionLost`` on the caller's side; a client that cannot
connect or complete the TLS handshake sent nothing (``NotSent``).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import itertools
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, cast

import msgpack
from starlette.requests import Request

from durable import values
from durable.errors import ConnectionLost, DurableError, Overloaded, RemoteError
from durable.namespace import FetchResponse, replay_body

log = logging.getLogger("durable.channel")
CHUNK = 256 * 1024
MAX_IN_FLIGHT = 10_000


class Frame(IntEnum):
    HELLO = 0
    CALL = 1
    FETCH = 2
    BODY = 3
    CANCEL = 4
    ATTACH = 5
    SOCKET = 6
    DROPPED = 7
    REPLY = 10
    ERROR = 11
    NOT_OWNER = 12
    RESPONSE = 13
    PUSH = 14
    MOVE = 20
    MOVE_DATA = 21
    MOVE_DONE = 22
    MOVE_UNDO = 23


MOVE_KINDS = frozenset((Frame.MOVE, Frame.MOVE_DATA, Frame.MOVE_DONE, Frame.MOVE_UNDO))


class MalformedFrame(ValueError):
    """A frame that is not a list starting with a known kind and an int request id."""


_KINDS = frozenset(Frame)


def _well_formed(frame: Any) -> bool:
    """Whether ``frame`` can be dispatched: ``[kind, rid, ...]`` (a BODY for an unknown rid is
    caught where it is looked up)."""
    return (
        isinstance(frame, list)
        and len(frame) >= 2
        and type(frame[0]) is int
        and frame[0] in _KINDS
        and type(frame[1]) is int
    )


class NotSent(Exception):
    """The connection could not be opened: nothing was written. Internal to callers."""


class NotOwner(Exception):
    """The host does not own (partition, epoch): nothing ran. Internal to callers."""

    def __init__(self, partition: int, epoch: int) -> None:
        super().__init__(f"partition {partition} is not owned at epoch {epoch}")
        self.partition = partition
        self.epoch = epoch


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    connections: int
    in_flight: int
    frames_in: int
    frames_out: int
    writes: int
    refused: int = 0


# -- errors on the wire ------------------------------------------------------------------------
_FLAGS = ("remote", "durable_object_reset")  # carried in the flags field, not the attributes


def error_frame(rid: int, error: BaseException) -> list[Any]:
    cls = type(error)
    flags = int(bool(getattr(error, "remote", False))) | (
        2 * int(bool(getattr(error, "durable_object_reset", False)))
    )
    state = {k: v for k, v in vars(error).items() if k not in _FLAGS}
    try:
        args: bytes | None = values.encode([list(error.args), state])
    except DurableError:
        args = None  # not codable: the caller rebuilds from the message
    return [Frame.ERROR, rid, cls.__module__, cls.__qualname__, str(error), flags, args]


def rebuild_error(
    module: str, qualname: str, message: str, flags: int, args: bytes | None = None
) -> Exception:
    """The exception a remote host raised, as its own class when importable here."""
    cls = _find_class(module, qualname)
    error: Exception
    if cls is not None:
        error = cls.__new__(cls)  # no __init__: custom constructors need their own arguments
        error.args = (message,)
        if args is not None:
            decoded, state = cast(tuple[list[Any], dict[str, Any]], values.decode(args))
            error.args = tuple(decoded)
            error.__dict__.update(state)  # attributes the constructor set (e.g. KeyMoved.to)
    else:
        error = RemoteError(qualname, message)
    error.remote = bool(flags & 1)  # type: ignore[attr-defined]
    if flags & 2:
        error.durable_object_reset = True  # type: ignore[attr-defined]
    return error


def _find_class(module: str, qualname: str) -> type[Exception] | None:
    try:
        target: Any = sys.modules.get(module) or importlib.import_module(module)
    except Exception:
        return None
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


# -- the shared framing ------------------------------------------------------------------------
class _Link:
    """One stream: per-turn write batching and frame decoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._packer = msgpack.Packer(use_bin_type=True)
        self._out: list[bytes] = []
        self._scheduled = False
        self.frames_in = self.frames_out = self.writes = 0

    def send(self, frame: list[Any]) -> None:
        self._out.append(self._packer.pack(frame))
        self.frames_out += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
            self.writes += 1
        self._out.clear()

    async def frames(self) -> Any:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
        while True:
            data = await self.reader.read(256 * 1024)
            if not data:
                return
            unpacker.feed(data)
            for frame in unpacker:
                self.frames_in += 1
                yield frame

    def close(self) -> None:
        self._flush()
        self.writer.close()


def fetch_head(request: Request) -> list[Any]:
    """The FETCH frame's ``head`` for a Starlette request."""
    scope = request.scope
    headers = [[k, v] for k, v in scope.get("headers", [])]
    server = list(scope.get("server") or ("durable.internal", 80))
    return [
        scope["method"],
        scope.get("scheme", "http"),
        scope["path"],
        scope.get("query_string", b""),
        headers,
        server,
    ]


def request_from(head: list[Any], body: bytes) -> Request:
    method, scheme, path, query, headers, server = head
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": bytes(query),
        "root_path": "",
        "headers": [(bytes(k), bytes(v)) for k, v in headers],
        "server": tuple(server),
        "client": None,
    }
    return Request(scope, replay_body(body))


def response_frames(rid: int, response: FetchResponse) -> list[list[Any]]:
    chunks = split_body(bytes(response.body))
    headers = [[k, v] for k, v in response.raw_headers]
    frames = [[Frame.RESPONSE, rid, response.status_code, headers, chunks[0], len(chunks) > 1]]
    frames += [[Frame.BODY, rid, c, i < len(chunks)] for i, c in enumerate(chunks[1:], start=2)]
    return frames


def response_from(frame: list[Any]) -> FetchResponse:
    _, _, status, headers, body, _ = frame
    return FetchResponse(bytes(body), status, [(bytes(k), bytes(v)) for k, v in headers])


def split_body(body: bytes) -> list[bytes]:
    """Body chunks of at most CHUNK bytes; an empty body is one empty chunk."""
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]


# -- host side ---------------------------------------------------------------------------------
CallHandler = Callable[[list[Any]], Awaitable[list[Any]]]


class ChannelServer:
    """Serves one host's channel; ``handle(frame)`` runs a CALL/FETCH and returns reply frames."""

    def __init__(self, token: str, handle: CallHandler, holders: Any = None) -> None:
        self.token = token
        self.handle = handle
        self.holders = holders  # relay.HolderLinks: frame(frame, send), closed(send)
        self._servers: list[asyncio.AbstractServer] = []
        self._unix: Path | None = None
        self._refusals: dict[str, float] = {}  # peer -> when its refusal was last logged
        self.refused = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""

    async def start_unix(self, path: Path) -> str:
        path.unlink(missing_ok=True)  # a stale socket of a dead incarnation
        old = os.umask(0o177)  # the socket is created 0600: only this user may connect
        try:
            self._servers.append(await asyncio.start_unix_server(self._serve, path=str(path)))
        finally:
            os.umask(old)
        self._unix = path
        self.address = f"unix:{path}"
        return self.address

    async def start_tcp(self, host: str, port: int = 0, tls: ssl.SSLContext | None = None) -> str:
        server = await asyncio.start_server(self._serve, host, port, ssl=tls)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self.address = f"tcp:{bound[0]}:{bound[1]}"
        return self.address

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        if self._unix is not None:
            self._unix.unlink(missing_ok=True)  # asyncio leaves the file behind
        for link in list(self._links):
            link.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(reader, writer)
        self._links.add(link)
        bodies: dict[int, tuple[list[Any], list[bytes]]] = {}
        try:
            frames = link.frames()
            if not self._greeted(await anext(frames, None)):
                self._refuse(writer.get_extra_info("peername"))
                return
            async for frame in frames:
                if not _well_formed(frame):
                    raise MalformedFrame(f"not a channel frame: {str(frame)[:80]}")
                self._dispatch(link, frame, bodies)
        except (ConnectionError, ValueError, KeyError, msgpack.UnpackException) as error:
            log.info("channel connection closed: %r", error)
        finally:
            self._links.discard(link)
            link.close()
            if self.holders is not None:
                self.holders.closed(link.send)

    def _greeted(self, hello: Any) -> bool:
        """A HELLO carrying this cluster's token (constant-time compare: no timing oracle)."""
        if not (isinstance(hello, list) and len(hello) >= 2 and hello[0] == Frame.HELLO):
            return False
        token = hello[1]
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())

    def _refuse(self, peer: Any) -> None:
        """Count every refusal; log one per peer (IP, or the socket) per minute: a peer
        retrying a wrong token cannot flood the log."""
        self.refused += 1
        who = str(peer[0]) if isinstance(peer, tuple) else "unix"
        now = time.monotonic()
        if len(self._refusals) > 1024:  # many peers: forget the ones quiet for a minute
            self._refusals = {p: t for p, t in self._refusals.items() if now - t < 60.0}
        if now - self._refusals.get(who, -60.0) >= 60.0:
            self._refusals[who] = now
            log.warning("channel connection from %s refused: no hello with this cluster's token"
                        " (%d refused so far)", who, self.refused)  # fmt: skip

    def _dispatch(
        self, link: _Link, frame: list[Any], bodies: dict[int, tuple[list[Any], list[bytes]]]
    ) -> None:
        kind = frame[0]
        if kind == Frame.FETCH and frame[-1]:
            bodies[frame[1]] = (frame, [frame[-2]])  # more body follows
            return
        if kind == Frame.BODY:
            head, chunks = bodies[frame[1]]
            chunks.append(frame[2])
            if frame[3]:
                return
            del bodies[frame[1]]
            frame = [*head[:-2], b"".join(chunks), False]
        elif kind in (Frame.ATTACH, Frame.DROPPED) and self.holders is not None:
            self.holders.frame(frame, link.send)
            return
        elif kind not in (Frame.CALL, Frame.FETCH, Frame.SOCKET) and kind not in MOVE_KINDS:
            return  # CANCEL: calls are not interrupted once delivered (documented)
        task = asyncio.ensure_future(self._run(link, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, link: _Link, frame: list[Any]) -> None:
        try:
            replies = await self.handle(frame)
        except NotOwner as error:
            replies = [[Frame.NOT_OWNER, frame[1], error.partition, error.epoch]]
        except Exception as error:
            replies = [error_frame(frame[1], error)]
        for reply in replies:
            link.send(reply)

    def statistics(self) -> ChannelStatistics:
        links = list(self._links)
        return ChannelStatistics(
            connections=len(links),
            in_flight=len(self._tasks),
            frames_in=sum(x.frames_in for x in links),
            frames_out=sum(x.frames_out for x in links),
            writes=sum(x.writes for x in links),
            refused=self.refused,
        )


# -- caller side -------------------------------------------------------------------------------
class ChannelClient:
    """One connection to one host, opened on first use; pipelined calls by request id."""

    def __init__(
        self,
        address: str,
        token: str,
        max_in_flight: int = MAX_IN_FLIGHT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.token = token
        self.tls = tls  # used for TCP only
        self.max_in_flight = max_in_flight
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None
        self._pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._bodies: dict[int, tuple[list[Any], list[bytes]]] = {}
        self._rids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self.closed = False
        self.greeting: list[Any] | None = None  # sent after each hello (relay.py: an ATTACH)
        self.on_push: Callable[[list[Any]], None] | None = None  # PUSH frames' ops
        self.on_lost: Callable[[], None] | None = None  # each connection's end

    async def request(self, frame_without_rid: list[Any], body: bytes | None = None) -> list[Any]:
        """Send one CALL/FETCH and wait for its answer frame (REPLY, RESPONSE, ERROR...)."""
        if len(self._pending) >= self.max_in_flight:
            raise Overloaded(f"The channel to {self.address}", self.max_in_flight)
        try:
            link = await self._connect()
        except OSError as error:  # ssl.SSLError too: nothing was written
            raise NotSent(f"{self.address}: {error}") from error
        rid = next(self._rids)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        kind, *rest = frame_without_rid
        if body is None:
            link.send([kind, rid, *rest])
        else:
            chunks = split_body(body)
            link.send([kind, rid, *rest, chunks[0], len(chunks) > 1])
            for i, chunk in enumerate(chunks[1:], start=2):
                link.send([Frame.BODY, rid, chunk, i < len(chunks)])
        try:
            return await future
        finally:
            self._pending.pop(rid, None)

    async def _connect(self) -> _Link:
        if self._link is not None and not self._link.writer.is_closing():
            return self._link
        if self.closed:
            raise ConnectionError(f"channel to {self.address} is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _Link:
        kind, _, where = self.address.partition(":")
        if kind == "unix":
            reader, writer = await asyncio.open_unix_connection(where)
        else:
            host, _, port = where.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port), ssl=self.tls)
        link = _Link(reader, writer)
        link.send([Frame.HELLO, self.token])
        if self.greeting is not None:
            link.send(self.greeting)
        self._link = link
        self._reader = asyncio.ensure_future(self._read(link))
        return link

    async def _read(self, link: _Link) -> None:
        try:
            async for frame in link.frames():
                self._deliver(frame)
        except (ConnectionError, ValueError, msgpack.UnpackException):
            pass
        finally:
            if self._link is link:
                self._link = None
            link.close()
            self._fail_all("the connection was closed")
            if self.on_lost is not None:
                self.on_lost()

    def _deliver(self, frame: list[Any]) -> None:
        kind, rid = frame[0], frame[1]
        if kind == Frame.PUSH and self.on_push is not None:
            self.on_push(frame[2])
            return
        if kind == Frame.RESPONSE and frame[-1]:
            self._bodies[rid] = (frame, [frame[-2]])
            return
        if kind == Frame.BODY:
            head, chunks = self._bodies[rid]
            chunks.append(frame[2])
            if frame[3]:
                return
            del self._bodies[rid]
            frame = [*head[:-2], b"".join(chunks), False]
        future = self._pending.get(rid)
        if future is not None and not future.done():
            future.set_result(frame)

    def notify(self, frame: list[Any]) -> None:
        if self._link is not None and not self._link.writer.is_closing():
            self._link.send(frame)  # no answer expected; no open connection: dropped

    def _fail_all(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"{self.address}: {why}"))
        self._pending.clear()
        self._bodies.clear()

    async def close(self) -> None:
        self.closed = True
        if self._link is not None:
            self._link.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def answer(frame: list[Any]) -> list[Any]:
    """Unwrap an answer frame: raise its error (NotOwner, remote errors) or return it."""
    kind = frame[0]
    if kind == Frame.ERROR:
        raise rebuild_error(*frame[2:7])
    if kind == Frame.NOT_OWNER:
        raise NotOwner(frame[2], frame[3])
    return frame
