"""The HTTP front door: a Starlette app made from a Worker's routes, with ``/healthz``.

Guarantees:
- Each route handler gets ``(request, env)``; what it returns is sent as is.
- Errors never leave as a traceback: a ``DurableError`` becomes JSON ``{"error", "message"}``
  with a fitting status (``Overloaded`` → 503 with ``Retry-After``, bad input → 400, unknown
  method → 404), anything else → 500 ``{"error": "InternalError"}`` and a log line.
- ``/healthz`` answers 200 ``{"status": "ok"}`` once serving, 503 while starting or draining;
  it is reserved and never wakes an object.

Does not guarantee: WebSockets, ``/metrics``, auth hooks and body limits are the gateway issue's
(#5); this module serves plain HTTP routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable.errors import DurableError, RpcError, StorageLimitExceeded
from durable.worker import RouteSpec, Worker

log = logging.getLogger("durable.gateway")
RESERVED = ("/healthz", "/metrics")


class Health:
    """Whether the gateway is ready; ``/healthz`` reads it."""

    def __init__(self) -> None:
        self.ready = False


def error_response(error: Exception) -> Response:
    """The JSON error body and status for an exception raised while serving a request."""
    if isinstance(error, DurableError):
        status = _status(error)
        headers = {"Retry-After": "1"} if status == 503 else None
        body = {"error": type(error).__name__, "message": str(error)}
        return JSONResponse(body, status_code=status, headers=headers)
    log.exception("unhandled error in a route", exc_info=error)
    return JSONResponse({"error": "InternalError", "message": "see the server log"}, 500)


def _status(error: DurableError) -> int:
    if error.overloaded or error.retryable:
        return 503
    if isinstance(error, RpcError):
        return 404
    if isinstance(error, StorageLimitExceeded):
        return 507
    return 400 if isinstance(error, TypeError | ValueError) else 500


def _endpoint(spec: RouteSpec, env: Any) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await spec.handler(request, env)
        except Exception as error:
            return error_response(error)
        return response

    return endpoint


def build_app(worker: Worker, env: Any, health: Health) -> Starlette:
    """A Starlette app serving ``worker``'s HTTP routes against ``env``."""

    async def healthz(request: Request) -> Response:
        if health.ready:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    routes = [Route("/healthz", healthz)]
    for spec in worker.routes:
        if spec.websocket:
            continue  # TODO(#5): WebSocket routes and hibernatable sockets
        if spec.path in RESERVED:
            raise ValueError(f"{spec.path} is reserved by durable")
        methods = list(spec.methods) if spec.methods else None
        routes.append(Route(spec.path, _endpoint(spec, env), methods=methods))
    return Starlette(routes=routes)
