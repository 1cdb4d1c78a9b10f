"""The HTTP server of a serving process: the gateway under uvicorn, and the process's collector.

``durable dev --in-process`` (``cli.serve_in_process``) and every Ray host slot (``ray_host``)
serve their gateway the same way: bind the listening socket first (``bind``), run uvicorn on it
as a task of the running loop, mark the gateway ready once uvicorn accepts, and hand the cyclic
garbage collector to a ``Collector`` while it serves (``collector.py``: a serving process tracks
too many objects for automatic full collections).

Guarantees:
- ``start(sock)`` returns once uvicorn accepts connections on ``sock``; from then on
  ``/healthz`` answers 200 and full collections run on the collector's schedule only.
- ``exit()`` makes ``/healthz`` answer 503 at once and uvicorn stop accepting; uvicorn then
  finishes what it serves (WebSockets are closed with 1012), at once if ``force``. ``wait()``
  returns once it has stopped, with the collector's thresholds put back.
- uvicorn installs no signal handlers: the process decides what SIGTERM and SIGINT do.
- Connections accepted on a ``bind`` socket have Nagle off (``TCP_NODELAY``).

Does not guarantee: that the gateway's held WebSockets are detached from their host: ``serve``
does it on the way out (``Gateway.close``); a caller of ``start``/``wait`` decides when (a Ray
slot lets ``Host.close`` drop them).

On failure: a port that cannot be bound raises ``PortInUse`` (with the fix). uvicorn exits
(``SystemExit``) on a start-up error; the serving task catches and logs it, since raised in a
task it would stop the whole loop (in a Ray slot, the actor): ``start`` then returns without
marking the gateway ready, and ``serve`` raises it in its caller.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from durable.collector import Collector
from durable.errors import PortInUse
from durable.gateway import Gateway, server_config

log = logging.getLogger("durable.server")


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket, or ``PortInUse`` (one line with the fix, not uvicorn's exit).

    ``reuse_port``: several processes of one node listen on the port (``SO_REUSEPORT``, as the
    host slots of a node do) and the kernel spreads connections over them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP;
    # with Nagle on, a response's body waits for the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortInUse(host, port, error.strerror or str(error)) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal capture: uvicorn re-raises a caught SIGTERM once it
    stops, which killed the process (exit -15) before ``connect`` could commit and close."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """A gateway served by uvicorn in this loop, with the process's ``Collector``."""

    def __init__(self, gateway: Gateway, host: str, port: int, **options: Any) -> None:
        """``options`` go to uvicorn's config (``server_config``), e.g. ``access_log=False``."""
        self.gateway = gateway
        self.collector = Collector()
        self._uvicorn = _Uvicorn(server_config(gateway, host, port, **options))
        self._task: asyncio.Task[None] | None = None
        self._exited: SystemExit | None = None

    @property
    def started(self) -> bool:
        return bool(self._uvicorn.started)

    @property
    def exiting(self) -> bool:
        return bool(self._uvicorn.should_exit)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (None: uvicorn binds the config's host and port itself); returns
        once uvicorn accepts, or has given up."""
        self._task = asyncio.ensure_future(self._run(sock))
        while not self._uvicorn.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._uvicorn.started:
            self.gateway.health.ready = True
            self.collector.start()

    def exit(self, force: bool = False) -> None:
        """Stop accepting and answer ``/healthz`` with 503; ``force``: drop open connections."""
        self.gateway.health.ready = False
        self._uvicorn.force_exit = self._uvicorn.force_exit or force
        self._uvicorn.should_exit = True

    async def wait(self) -> None:
        """Until uvicorn has stopped (after ``exit()``, or a failed start)."""
        try:
            if self._task is not None:
                await self._task
        finally:
            self.collector.stop()

    async def serve(
        self, sock: socket.socket | None = None, started: Callable[[], None] | None = None
    ) -> None:
        """Start, call ``started()`` once accepting, serve until ``exit()``, then detach the
        gateway's sockets; raises uvicorn's own exit if it could not start."""
        try:
            await self.start(sock)
            if started is not None and self.started:
                started()
            await self.wait()
        finally:
            self.collector.stop()
            self.gateway.health.ready = False
            self.gateway.close()
        if self._exited is not None:
            raise self._exited

    async def _run(self, sock: socket.socket | None) -> None:
        try:
            await self._uvicorn.serve(sockets=None if sock is None else [sock])
        except SystemExit as exited:  # see the module's docstring
            log.error("the HTTP server stopped: uvicorn exited (%s)", exited.code)
            self._exited = exited
