"""``FrontDoor``: the connection limits uvicorn's httptools protocol lacks, so no single client can
hold the server (``GatewayLimits``, served by ``DurableHttpProtocol``; ``gateway.server_config``
installs it).

Guarantees:
- A request line and headers must arrive within ``header_timeout`` (else 408) and fit
  ``max_header_bytes`` (else 431), counted as bytes arrive: an endless header never holds more
  than the limit plus one read.
- A request body may pause at most ``body_timeout``; then the connection is closed and the
  handler sees a disconnect. An idle keep-alive ends after ``keep_alive_timeout`` (uvicorn's).
- Past ``max_connections`` (three quarters of the descriptor limit) requests get 503 +
  ``Retry-After``, except ``/healthz`` and ``/metrics``; past the cap plus
  ``reserved_connections`` the connection that waited longest for a request is closed (or the
  new one when none waits), so descriptors never run out.
- The writes of one loop step go out as one ``send()`` (``Coalesced``): uvicorn writes a
  response's head and body separately, which costs two system calls and two TCP segments.
- Every refusal is a JSON body and a count in ``/metrics``
  (``durable_gateway_refused_total{reason}``), never a log line per request.

Does not guarantee: fairness between clients under the cap (first come, first served), or any
limit on how long a handler runs once the request is in (that is ``Limits.cpu_ms`` in objects).
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from durable.metrics import FrontDoorStats

RESERVED = ("/healthz", "/metrics")


def _connection_budget() -> int:
    """Connections allowed before new requests get 503: three quarters of the descriptor limit
    (15,000 of 20,000 here), leaving the rest to object files, partitions and Ray."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft * 3 // 4)


@dataclass(frozen=True)
class GatewayLimits:
    """Per-connection limits of the front door; the README's limits table lists the defaults."""

    header_timeout: float = 10.0  # s from a request's first byte (or the accept) to headers' end
    max_header_bytes: int = 64 * 1024  # request line and headers; 431 beyond
    body_timeout: float = 30.0  # s a request body may pause before the connection is closed
    keep_alive_timeout: float = 5.0  # s an idle keep-alive connection stays open
    max_connections: int = field(default_factory=_connection_budget)  # 503 beyond (not reserved)
    reserved_connections: int = 64  # room above the cap for /healthz, /metrics and evictions


class FrontDoor:
    """What one server's connections share: the limits, their counters, and the connections that
    wait for a request (a header phase or an idle keep-alive), oldest first, which are closed to
    make room when the cap is reached."""

    def __init__(self, limits: GatewayLimits, stats: FrontDoorStats) -> None:
        self.limits = limits
        self.stats = stats
        self.waiting: OrderedDict[DurableHttpProtocol, None] = OrderedDict()

    def evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        while self.waiting:
            protocol, _ = self.waiting.popitem(last=False)
            if not protocol.transport.is_closing():
                protocol.transport.close()
                self.stats.count("evicted")
                return True
        return False


class DurableHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks (``GatewayLimits``): a header read
    timeout (408), a body that pauses too long is cut (the handler sees a disconnect), a bound on
    request line plus headers (431, counted as bytes arrive, so an
    endless header never holds more than the limit and one read), and a connection cap (503 +
    ``Retry-After`` past it, except ``/healthz`` and ``/metrics``; past the cap plus the reserve
    the connection idle longest is closed, or the new one if none is idle). Parser errors get a
    JSON 400 counted in ``/metrics`` instead of a WARNING line each."""

    def __init__(self, *args: Any, door: FrontDoor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.door = door
        self.header_timer: asyncio.TimerHandle | None = None
        self.header_started = 0.0  # loop time of the request's first bytes
        self.header_bytes = 0
        self.reading_headers = True
        self.in_message = False  # between the parser's message begin and complete
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_seen = 0.0  # loop time of the last body bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(Coalesced(transport, self.loop))  # type: ignore[arg-type]
        door = self.door
        door.stats.connections = self.connections
        limits = door.limits
        full = len(self.connections) > limits.max_connections + limits.reserved_connections
        if full and not door.evict_one():
            door.stats.count("dropped")
            transport.abort()
            return
        self._await_request()
        self.header_started = self.loop.time()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self._stop_body_timer()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        self.reading_headers = True
        self.header_bytes = 0
        self.door.waiting[self] = None

    def _stop_waiting(self) -> None:
        self.door.waiting.pop(self, None)
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _arm_header_timer(self) -> None:
        timeout = self.door.limits.header_timeout
        self.header_timer = self.loop.call_at(self.header_started + timeout, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.door.stats.count("header_timeout")
            timeout = self.door.limits.header_timeout
            message = f"The request headers did not arrive within {timeout} s."
            self._refuse_raw(408, "RequestTimeout", message)

    def data_received(self, data: bytes) -> None:
        # Timers only for what is still incomplete once this chunk is parsed: a request that
        # arrives whole (the common case) arms none.
        first = self.reading_headers and self.header_timer is None
        if first:  # the first bytes after an idle keep-alive
            self.header_started = self.loop.time()
        if self.reading_headers:
            self.header_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_400_response("")  # counted in /metrics, not a WARNING line per request
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()  # the socket's protocol owns it from here
                return
            self._unsupported_upgrade_warning()
        if not self.reading_headers or self.transport.is_closing():
            self._arm_body_timer()
            return
        if self.header_bytes > self.door.limits.max_header_bytes:
            self._refuse_raw(*self._too_large())
        elif first:
            self._arm_header_timer()

    def _arm_body_timer(self) -> None:
        """A body still expected after this chunk: cut it if it pauses too long."""
        if self.in_message and self.body_timer is None and not self.transport.is_closing():
            timeout = self.door.limits.body_timeout
            self.body_timer = self.loop.call_at(self.body_seen + timeout, self._body_stalled)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_message = True

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self.body_seen = self.loop.time()

    def _body_stalled(self) -> None:
        """The body paused too long: close, so the waiting handler sees a disconnect (499)."""
        idle = self.loop.time() - self.body_seen
        timeout = self.door.limits.body_timeout
        if idle < timeout:
            self.body_timer = self.loop.call_later(timeout - idle, self._body_stalled)
            return
        self.body_timer = None
        if not self.transport.is_closing():
            self.door.stats.count("body_timeout")
            self.transport.close()

    def _stop_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()
        self.in_message = False
        self.header_bytes = 0  # what follows is the next request's request line
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and not self.transport.is_closing():
            self._await_request()  # answered early (413...): the body's end was the last wait

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not (self.transport.is_closing() or self.pipeline or self.in_message):
            self._await_request()  # uvicorn armed its keep-alive timer

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        self.reading_headers = False
        if self.parser.should_upgrade() and self._should_upgrade():
            super().on_headers_complete()  # sets the method; handle_websocket_upgrade decides
            return
        refusal = self._refusal()
        if refusal is None:
            self.body_seen = self.loop.time()
            super().on_headers_complete()
            return
        app, self.app = self.app, refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def handle_websocket_upgrade(self) -> None:
        refusal = self._refusal()
        if refusal is None:
            if isinstance(self.transport, Coalesced):  # the socket's protocol writes directly
                self.transport = self.transport.unwrap()
            super().handle_websocket_upgrade()
        else:
            self.transport.write(_raw_response(refusal))
            self.transport.close()

    def _refusal(self) -> JSONResponse | None:
        """The response that refuses this request at the door, or None to serve it."""
        limits = self.door.limits
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size > limits.max_header_bytes:
            return _json_refusal(*self._too_large())
        path = httptools.parse_url(self.url).path
        if len(self.connections) > limits.max_connections and path not in _RESERVED_RAW:
            self.door.stats.count("over_capacity")
            message = (
                f"The server holds {limits.max_connections} connections, the most it may; the "
                "request was not run. Retry later, or reuse a keep-alive connection."
            )
            return _json_refusal(503, "Overloaded", message)
        return None

    def _too_large(self) -> tuple[int, str, str]:
        self.door.stats.count("headers_too_large")
        limit = self.door.limits.max_header_bytes
        message = (
            f"The request line and headers are over the limit of {limit} bytes. "
            "Send fewer or shorter headers (large data belongs in the body)."
        )
        return 431, "RequestHeaderFieldsTooLarge", message

    def _refuse_raw(self, status: int, error: str, message: str) -> None:
        """Answer outside any request cycle (the headers are not complete) and close."""
        self._stop_waiting()
        self.reading_headers = False
        self.transport.write(_raw_response(_json_refusal(status, error, message)))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.door.stats.count("bad_request")
        self._refuse_raw(400, "BadRequest", "The request is not valid HTTP/1.1.")


class Coalesced:
    """A connection's transport whose writes within one loop step are sent as one write (at the
    end of the step, or before a close); everything else is the transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if self._transport.is_closing():
                return  # the peer is gone (a close we made flushed first)
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def unwrap(self) -> asyncio.Transport:
        """The transport itself, once what was written is sent."""
        self.flush()
        return self._transport

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_RESERVED_RAW = tuple(path.encode() for path in RESERVED)


def _json_refusal(status: int, error: str, message: str) -> JSONResponse:
    headers = {"Connection": "close"}
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": error, "message": message}, status, headers)


def _raw_response(response: Response) -> bytes:
    """A whole HTTP/1.1 response as bytes (for answers sent outside an ASGI cycle)."""
    lines = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(response.body)
