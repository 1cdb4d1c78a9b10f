"""A real uvicorn gateway on its own thread and event loop, for tests that attack it from
blocking sockets and hypothesis (which runs synchronous test functions).

``with ServerThread(worker, data_dir, limits) as server:`` starts ``tests.live_server.live`` on a
thread, waits (bounded) until ``/healthz`` answers, and gives the port, ``server.run(coro)``
(runs a coroutine on the server's loop, e.g. reading an object's storage) and raw-socket
helpers. Leaving the block stops the server and joins the thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

import durable
from durable.frontdoor import GatewayLimits
from tests.live_server import Live, live

START_TIMEOUT = 30.0


class ServerThread:
    def __init__(self, worker: durable.Worker, data_dir: Path, limits: GatewayLimits) -> None:
        self.worker = worker
        self.data_dir = data_dir
        self.limits = limits
        self.live: Live | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="hostile-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self.live is None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server thread did not stop"

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by __enter__
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with live(self.worker, self.data_dir, limits=self.limits) as server:
            self.live = server
            self._ready.set()
            await self._stop.wait()

    @property
    def port(self) -> int:
        assert self.live is not None
        return int(self.live.http.rsplit(":", 1)[1])

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stored(self, name: str) -> dict[str, Any]:
        assert self.live is not None
        stub = self.live.env.TARGET.get_by_name(name)
        return dict(self.run(stub.stored()))

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def exchange(self, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """Send ``raw`` on a new connection; read one response (status, headers, body)."""
        with self.connect(timeout) as sock:
            sock.sendall(raw)
            return read_response(sock)

    def healthz(self) -> int:
        status, _, _ = self.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        return status


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (what the gateway sends) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def closed_by_peer(sock: socket.socket, within: float) -> float:
    """Seconds until the server closes ``sock`` (reading and discarding what it sends)."""
    start = time.monotonic()
    sock.settimeout(within)
    while True:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start


def json_error(body: bytes) -> str:
    """The ``error`` name of a JSON error body (asserting its shape)."""
    document = json.loads(body)
    assert set(document) >= {"error", "message"}, document
    assert "Traceback" not in document["message"]
    return str(document["error"])
