"""The HTTP and WebSocket front door: a Worker's routes as an ASGI app, run by uvicorn.

``build_app(worker, env, health, host=host)`` returns the app. Routes come from
``worker.route``/``worker.websocket_route`` (handlers get ``(request, env)`` or
``(websocket, env)``), then ``Worker(router=...)`` (a Starlette ``Router`` or list of routes; its
endpoints get ``request`` and find the bindings at ``request.state.env``), then
``worker.static(path, directory)`` mounts. The gateway talks to objects only through ``env`` and,
for hibernatable sockets, the ``sockets.SocketHost`` interface (an in-process ``Host``, or on a
cluster of several slots ``relay.SocketRelay`` over the channel): nothing here depends on where
the objects run. Beside it:
``frontdoor.py`` (connection limits under uvicorn), ``responses.py`` (errors and auth verdicts
as JSON answers), ``upgrade.py`` (WebSocket routes and held sockets).

Status codes (every error body is JSON ``{"error": <name>, "message": <text>}``, never a
traceback):

    400  bad input: malformed JSON (``MalformedJSON``), invalid object id, bad arguments, a path
         that is not UTF-8 once percent-decoded, a request uvicorn's parser refuses
    401  an auth hook refused by raising (or returning False); a returned Response is sent as is
    404  unknown route (``NotFound``), unknown RPC method (``RpcError``)
    405  method not allowed by the route
    408  the request line and headers did not arrive within ``GatewayLimits.header_timeout``
    413  request body over ``Worker(max_request_bytes=...)`` (32 MiB): refused before it is read
    429  ``RateLimited`` (``durable.patterns.RateLimiter``): ``Retry-After`` in whole seconds
         (rounded up) and ``retry_after`` (float seconds) in the body
    426  a plain HTTP request to a WebSocket route (``UpgradeRequired``)
    431  request line and headers over ``GatewayLimits.max_header_bytes``
    499  (never sent) the client left mid-body: counted in ``/metrics``, logged at DEBUG
    500  an unexpected error (``InternalError``, details in the server log), a remote error,
         a ``BaseException`` such as ``SystemExit`` raised by an object (which is reset)
    503  ``Overloaded`` or another retryable error, or more open connections than
         ``GatewayLimits.max_connections`` (not ``/healthz``, ``/metrics``): ``Retry-After: 1``
    507  ``StorageLimitExceeded``, ``StorageFull`` (the disk is full)

WebSocket close codes the gateway chooses: 1009 for a message over
``Worker(max_message_bytes=...)`` (1 MiB, workerd's default) before the object sees it (the
object's ``websocket_error`` runs), 1013 when the object is ``Overloaded``, 1012 when the server
stops, 1006 reported to the object when the client vanished. A refused upgrade (auth, an
object's non-101 answer, an error) gets that HTTP response instead of a handshake.

Guarantees:
- ``/healthz`` (200 once serving, 503 while starting or draining) and ``/metrics`` are reserved:
  they bypass auth hooks and never wake an object.
  ``/metrics`` also serves each app collector given to ``worker.metrics(...)``.
- Auth: ``Worker(auth=fn)`` runs before routing for every HTTP request and upgrade; a route's own
  ``auth=fn`` runs after it. ``fn(request)`` returns None to allow, a Response (sent as is) or
  False to refuse, or raises (``HTTPException`` keeps its status; anything else is 401). The
  worker hook sees the headers only (its request has no body stream).
- A body over the limit gets 413 before any handler runs when ``Content-Length`` says so, or the
  moment the stream passes the limit (the handler's read raises ``RequestTooLarge``): nothing is
  forwarded to an object, so nothing is written.
- Connections (``GatewayLimits``, via ``server_config``): request line and headers must arrive
  within ``header_timeout`` and fit ``max_header_bytes`` (counted as bytes arrive), a body may
  pause at most ``body_timeout``, an idle keep-alive ends after ``keep_alive_timeout``; past
  ``max_connections`` requests get 503 except ``/healthz`` and ``/metrics``, and past the reserve
  above it the connection idle longest is closed. Refusals are counted in ``/metrics``
  (``durable_gateway_refused_total{reason}``), not logged. A path that is not UTF-8 once
  percent-decoded is 400 before routing. A ``BaseException`` from a route is still a JSON 500.
- Hibernatable sockets: the client connection stays here; messages reach the object one at a time
  per socket, in order (workerd's read loop); auto-responses are answered here without waking it.

Does not guarantee: request bodies are read whole before they reach an object (streaming into
``fetch`` is not implemented); micro-batching calls to remote hosts belongs to the channel. An
exception in ``websocket_message`` is logged and the socket stays open (workerd's read loop does
the same); the client is not told.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from durable.errors import (
    DurableError,
    InvalidArgument,
    RequestTooLarge,
)
from durable.fanout import (
    ClientSockets,
    DurableWebSocketProtocol,
)
from durable.frontdoor import RESERVED, DurableHttpProtocol, FrontDoor, GatewayLimits
from durable.host import Host
from durable.metrics import (
    DurableCollector,
    FrontDoorStats,
    MeteredTransport,
    NamespaceStats,
    RequestStats,
    registry_for,
)
from durable.namespace import Namespace
from durable.responses import check_auth, deny, error_response, exception_handler
from durable.sockets import SocketHost as SocketHost
from durable.upgrade import OFFER, SocketEndpoint
from durable.worker import RouteSpec, Worker

log = logging.getLogger("durable.gateway")


class Health:
    """Whether the gateway serves; ``/healthz`` reads it."""

    def __init__(self) -> None:
        self.ready = False


def _upgrade_required(path: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        message = (
            f"{path} is a WebSocket route: connect with a WebSocket client (Upgrade: websocket)."
        )
        body = {"error": "UpgradeRequired", "message": message}
        return JSONResponse(body, 426, headers={"Upgrade": "websocket"})

    return endpoint


async def _no_socket_route(websocket: WebSocket) -> None:
    error = HTTPException(404, "No WebSocket route matches.")
    await deny(websocket, error_response(error, websocket.url.path))


def _endpoint(spec: RouteSpec, env: Any) -> Callable[[Request], Awaitable[Response]]:
    handler, auth = spec.handler, spec.auth

    async def endpoint(request: Request) -> Response:
        try:
            if auth is not None:
                refused = await check_auth(auth, request)
                if refused is not None:
                    return refused
            response: Response = await handler(request, env)
        except Exception as error:
            return error_response(error)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as error:  # SystemExit from user code: still a JSON 500
            return error_response(error)
        return response

    return endpoint


# -- the app -------------------------------------------------------------------------------------
class Gateway:
    """The ASGI app: reserved paths, limits and worker auth, then the Starlette router."""

    def __init__(
        self, worker: Worker, env: Any, health: Health, host: Any = None, sole_holder: bool = False
    ) -> None:
        self.worker = worker
        self.health = health
        self.sockets: SocketHost | None = host
        self.clients = ClientSockets()
        self.request_stats = RequestStats()
        self.front_door = FrontDoorStats()
        self.namespace_stats: dict[str, NamespaceStats] = {}
        self.env = self._metered(env)
        collector = DurableCollector(
            self.request_stats,
            self.namespace_stats,
            self.clients,
            host if isinstance(host, Host) else getattr(host, "local", None),  # SocketRelay
            front_door=self.front_door,
        )
        self.registry = registry_for(collector)
        for extra in worker.collectors:  # an app's own series: worker.metrics(collector)
            self.registry.register(extra)
        # HTTP requests go straight to the router (``_http``), which handles errors itself; the
        # Starlette app around the same router serves WebSockets and other scopes.
        self.router = Router(routes=self._routes())
        self.app = Starlette(exception_handlers=_HANDLERS)
        self.app.router = self.router
        if host is not None:
            host.attach_sockets(self.clients.holder, self.clients, exclusive=sole_holder)

    def _metered(self, env: Any) -> Any:
        """``env`` with each namespace behind a counting transport (for /metrics)."""
        if env is None:
            return None
        metered = copy.copy(env)
        for name, value in vars(env).items():
            if isinstance(value, Namespace):
                stats = self.namespace_stats[name] = NamespaceStats()
                transport = MeteredTransport(value.transport, stats)
                setattr(metered, name, Namespace(value.binding, transport, value.limits))
        return metered

    def _routes(self) -> list[BaseRoute]:
        worker = self.worker
        routes: list[BaseRoute] = []
        for spec in worker.routes:
            if spec.path in RESERVED:
                raise InvalidArgument(f"{spec.path} is reserved by durable")
            if spec.websocket:
                routes.append(WebSocketRoute(spec.path, SocketEndpoint(self, spec)))
            else:
                methods = list(spec.methods) if spec.methods else None
                routes.append(Route(spec.path, _endpoint(spec, self.env), methods=methods))
        if worker.router is not None:
            extra = worker.router.routes if isinstance(worker.router, Router) else worker.router
            routes.extend(extra)
        for spec in worker.routes:
            if spec.websocket:
                routes.append(Route(spec.path, _upgrade_required(spec.path)))
        routes.append(WebSocketRoute("/{path:path}", _no_socket_route))  # before static mounts
        for static in worker.statics:
            app = StaticFiles(directory=static.directory, html=static.html)
            routes.append(Mount(static.path, app=app))
        return routes

    def close(self) -> None:
        """Stop holding sockets: the host forgets them (no handlers run)."""
        if self.sockets is not None:
            self.sockets.detach_sockets(self.clients.holder)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and "\ufffd" in scope["path"] and not _utf8(scope):
            await self._invalid_path(scope, receive, send)
        elif kind == "http":
            if scope["path"] in RESERVED:
                await self._reserved(scope, receive, send)
            else:
                await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _invalid_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        """400: uvicorn decodes invalid UTF-8 to U+FFFD, so ``/c/%ff`` and ``/c/%fe`` would
        otherwise reach the same object."""
        self.front_door.count("invalid_path")
        message = "The path is not valid UTF-8 once percent-decoded. Percent-encode UTF-8 text."
        response = JSONResponse({"error": "BadRequest", "message": message}, 400)
        if scope["type"] == "http":
            await response(scope, receive, send)
        else:
            await deny(WebSocket(scope, receive, send), response)

    async def _reserved(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if scope["path"] == "/healthz":
            if self.health.ready:
                response = JSONResponse({"status": "ok", "sockets": len(self.clients.sockets)})
            else:
                response = JSONResponse({"status": "starting"}, status_code=503)
        else:
            body = generate_latest(self.registry)
            response = Response(body, media_type=CONTENT_TYPE_LATEST)
        await response(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 0

        def send_status(message: MutableMapping[str, Any]) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)  # not awaited here: one frame fewer per message

        try:
            refused, receive = self._admit(scope, receive)
            if refused is None and self.worker.auth is not None:
                refused = await check_auth(self.worker.auth, Request(scope))
            if refused is not None:
                await refused(scope, receive, send_status)
            else:
                # What Starlette's app and ExceptionMiddleware would set, without their two
                # layers (and two send wrappers) per request: routes' errors become responses
                # in ``request_response``; the router's own (404, 405) are handled below.
                scope["app"] = self.app
                scope["starlette.exception_handlers"] = _SCOPE_HANDLERS
                await self.router(scope, receive, send_status)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as error:  # the router's HTTPException, a route's SystemExit...
            if status:
                raise  # the response started: uvicorn closes the connection
            path = HTTPConnection(scope).url.path
            await error_response(error, path)(scope, receive, send_status)
        finally:
            if status == 499:
                self.front_door.count("client_disconnect")
            status = status or 500
            route = scope.get("route")
            template = "<unmatched>" if route is None else getattr(route, "path", "") or "/"
            self.request_stats.record(
                template, scope["method"], status, time.perf_counter() - start
            )

    def _admit(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        """Strip a forged socket offer, check the body size, hand ``env`` to plain routes."""
        limit = self.worker.max_request_bytes
        length = None
        headers = scope["headers"]
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == OFFER:
                scope["headers"] = [(k, v) for k, v in headers if k != OFFER]
        scope.setdefault("state", {})["env"] = self.env
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                body = {"error": "BadRequest", "message": "Content-Length is not a number."}
                return JSONResponse(body, 400), receive
            if size > limit:
                return error_response(RequestTooLarge(limit, size)), receive
            return None, receive
        return None, _limited(receive, limit)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        if any(name == OFFER for name, _ in headers):
            scope["headers"] = [(k, v) for k, v in headers if k != OFFER]
        scope.setdefault("state", {})["env"] = self.env
        refused = None
        if scope["path"] in RESERVED:
            refused = error_response(HTTPException(404, f"{scope['path']} is not a WebSocket"))
        elif self.worker.auth is not None:
            refused = await check_auth(self.worker.auth, HTTPConnection(scope))
        if refused is not None:
            await deny(WebSocket(scope, receive, send), refused)
            return
        await self.app(scope, receive, send)


_HANDLERS: Any = {
    HTTPException: exception_handler,
    DurableError: exception_handler,
    json.JSONDecodeError: exception_handler,
    Exception: exception_handler,
}


_SCOPE_HANDLERS: tuple[Any, dict[int, Any]] = (
    _HANDLERS,
    {},
)  # (by exception class, by status code), as Starlette keeps them


def _utf8(scope: Scope) -> bool:
    """Whether the raw path percent-decodes to valid UTF-8."""
    try:
        unquote_to_bytes(scope.get("raw_path") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``RequestTooLarge`` once a streamed body passes ``limit``."""
    seen = 0

    async def limited() -> MutableMapping[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise RequestTooLarge(limit)
        return message

    return limited


def server_config(
    app: Gateway, host: str, port: int, limits: GatewayLimits | None = None, **options: Any
) -> uvicorn.Config:
    """How durable runs the gateway under uvicorn: httptools with ``GatewayLimits``
    (``DurableHttpProtocol``), ``DurableWebSocketProtocol`` (workerd's close handshake, direct
    fan-out writes), the worker's message limit, no per-message compression (as workerd without
    its compatibility flag), no lifespan."""
    limits = limits or app.worker.gateway_limits or GatewayLimits()
    settings: dict[str, Any] = {
        "loop": "none",
        "lifespan": "off",
        "http": partial(DurableHttpProtocol, door=FrontDoor(limits, app.front_door)),
        "timeout_keep_alive": limits.keep_alive_timeout,
        "ws": DurableWebSocketProtocol,
        "ws_max_size": app.worker.max_message_bytes,
        "ws_per_message_deflate": False,
        "log_level": "warning",
        **options,
    }
    return uvicorn.Config(app, host=host, port=port, **settings)


def build_app(
    worker: Worker,
    env: Any,
    health: Health | None = None,
    host: Any = None,
    *,
    sole_holder: bool = False,
) -> Gateway:
    """The gateway app for ``worker`` against ``env``.

    ``host`` (a ``sockets.SocketHost``) carries hibernatable sockets and, when it is an
    in-process ``Host``, its statistics feed ``/metrics``. ``sole_holder``: this gateway is the
    only process holding sockets for these hosts (``durable dev``/``serve --in-process``), so
    socket rows left by an earlier run are stale and dropped; leave it False when several
    gateways share hosts.
    """
    return Gateway(worker, env, health or Health(), host, sole_holder)
