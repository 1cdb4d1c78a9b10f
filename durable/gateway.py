"""The HTTP and WebSocket front door: a Worker's routes as an ASGI app, run by uvicorn.

``build_app(worker, env, health, host=host)`` returns the app. Routes come from
``worker.route``/``worker.websocket_route`` (handlers get ``(request, env)`` or
``(websocket, env)``), then ``Worker(router=...)`` (a Starlette ``Router`` or list of routes; its
endpoints get ``request`` and find the bindings at ``request.state.env``), then
``worker.static(path, directory)`` mounts. The gateway talks to objects only through ``env`` and,
for hibernatable sockets, the ``sockets.SocketHost`` interface (an in-process ``Host`` today, a
channel to remote hosts later): nothing here depends on where the objects run.

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
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from durable.errors import (
    DurableError,
    InvalidArgument,
    Overloaded,
    RateLimited,
    RequestTooLarge,
    RpcError,
    StorageFull,
    StorageLimitExceeded,
)
from durable.fanout import (
    LOST_REASON,
    ClientSockets,
    DurableWebSocketProtocol,
    HeldSocket,
    HeldState,
)
from durable.frontdoor import RESERVED, DurableHttpProtocol, FrontDoor, GatewayLimits
from durable.ids import ObjectId
from durable.metrics import (
    DurableCollector,
    FrontDoorStats,
    MeteredTransport,
    NamespaceStats,
    RequestStats,
    registry_for,
)
from durable.namespace import Namespace
from durable.sockets import AUTO_HEADER, NO_STATUS, OBJECT_HEADER, OFFER_HEADER, SOCKET_HEADER
from durable.sockets import SocketHost as SocketHost
from durable.worker import AuthHook, RouteSpec, Worker

log = logging.getLogger("durable.gateway")
_OFFER = OFFER_HEADER.encode()
_PRIVATE = {SOCKET_HEADER, OBJECT_HEADER, AUTO_HEADER, "content-length", "content-type",
            "upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"}  # fmt: skip


class Health:
    """Whether the gateway serves; ``/healthz`` reads it."""

    def __init__(self) -> None:
        self.ready = False


# -- errors ------------------------------------------------------------------------------------
_HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 413: "RequestTooLarge"}  # fmt: skip


def error_response(error: BaseException, path: str | None = None) -> Response:
    """The JSON error body and status for an exception raised while serving a request."""
    if isinstance(error, HTTPException):
        status = error.status_code
        message = str(error.detail)
        if status == 404 and path is not None:
            message = f"No route matches {path}."
        body = {"error": _HTTP_NAMES.get(status, "HTTPError"), "message": message}
        return JSONResponse(body, status, error.headers)
    if isinstance(error, json.JSONDecodeError):
        message = f"The request body is not valid JSON: {error}."
        return JSONResponse({"error": "MalformedJSON", "message": message}, 400)
    if isinstance(error, RateLimited):
        return _rate_limited(error)
    if isinstance(error, ClientDisconnect):  # expected, and an attacker's to repeat: no ERROR
        log.debug("the client left before its request body was read (%s)", path)
        message = "The client disconnected before the request body was read."
        return JSONResponse({"error": "ClientDisconnected", "message": message}, 499)
    if isinstance(error, DurableError):
        status = _status(error)
        headers = {"Retry-After": "1"} if status == 503 else None
        body = {"error": type(error).__name__, "message": str(error)}
        return JSONResponse(body, status_code=status, headers=headers)
    log.error("unhandled error in a route", exc_info=error)
    return JSONResponse({"error": "InternalError", "message": "see the server log"}, 500)


def _rate_limited(error: RateLimited) -> Response:
    # getattr: a RateLimited rebuilt from a foreign message may lack the attribute.
    wait = float(getattr(error, "retry_after", 1.0))
    body = {"error": "RateLimited", "message": str(error), "retry_after": wait}
    return JSONResponse(body, 429, {"Retry-After": str(max(1, math.ceil(wait)))})


def _status(error: DurableError) -> int:
    if error.overloaded or error.retryable:
        return 503
    if isinstance(error, RequestTooLarge):
        return 413
    if isinstance(error, RpcError):
        return 404
    if isinstance(error, StorageLimitExceeded | StorageFull):
        return 507
    return 400 if isinstance(error, TypeError | ValueError) else 500


async def _exception_handler(conn: HTTPConnection, error: Exception) -> Response:
    return error_response(error, conn.url.path)


async def check_auth(hook: AuthHook | None, conn: HTTPConnection) -> Response | None:
    """None to let the request through, else the response that refuses it."""
    if hook is None:
        return None
    try:
        verdict = hook(conn)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except HTTPException as error:
        return error_response(error)
    except Exception as error:
        body = {"error": "Unauthorized", "message": str(error) or type(error).__name__}
        return JSONResponse(body, 401)
    if verdict is None or verdict is True:
        return None
    if isinstance(verdict, Response):
        return verdict
    if verdict is False:
        return JSONResponse({"error": "Unauthorized", "message": "refused by the auth hook"}, 401)
    log.error("auth hook %r returned %r; expected None, False or a Response", hook, verdict)
    return JSONResponse({"error": "InternalError", "message": "see the server log"}, 500)


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
            self.request_stats, self.namespace_stats, self.clients, _host_of(host),
            front_door=self.front_door,
        )  # fmt: skip
        self.registry = registry_for(collector)
        for extra in worker.collectors:  # an app's own series: worker.metrics(collector)
            self.registry.register(extra)
        self.app = Starlette(routes=self._routes(), exception_handlers=_HANDLERS)
        if host is not None:
            host.attach_sockets(self.clients.holder, self.clients, exclusive=sole_holder)

    def _metered(self, env: Any) -> Any:
        """``env`` with each namespace behind a counting transport (for /metrics)."""
        if env is None:
            return None
        bindings = dict(vars(env))
        for name, value in bindings.items():
            if isinstance(value, Namespace):
                stats = self.namespace_stats[name] = NamespaceStats()
                transport = MeteredTransport(value._transport, stats)
                bindings[name] = Namespace(value.binding, transport, value._limits)
        metered: Any = object.__new__(type(env))
        metered.__dict__.update(bindings)
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

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused, receive = self._admit(scope, receive)
            if refused is None and self.worker.auth is not None:
                refused = await check_auth(self.worker.auth, Request(scope))
            if refused is not None:
                await refused(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as error:  # past Starlette's handlers (a router's SystemExit...)
            if status:
                raise  # the response started: uvicorn closes the connection
            await error_response(error)(scope, receive, send_status)
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
            elif name == _OFFER:
                scope["headers"] = [(k, v) for k, v in headers if k != _OFFER]
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
        if any(name == _OFFER for name, _ in headers):
            scope["headers"] = [(k, v) for k, v in headers if k != _OFFER]
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
    HTTPException: _exception_handler,
    DurableError: _exception_handler,
    json.JSONDecodeError: _exception_handler,
    Exception: _exception_handler,
}


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


def _host_of(host: Any) -> Any:
    """The in-process Host behind ``host`` if there is one (for its statistics)."""
    from durable.host import Host

    return host if isinstance(host, Host) else None


async def deny(websocket: WebSocket, response: Response) -> None:
    """Refuse an upgrade with an HTTP response (or close 1008 if the server cannot send one)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)


# -- WebSocket routes ---------------------------------------------------------------------------
class SocketEndpoint:
    """A WebSocket route: auth, the handler's ``stub.fetch(websocket)``, then the held socket."""

    def __init__(self, gateway: Gateway, spec: RouteSpec) -> None:
        self.gateway = gateway
        self.spec = spec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway, clients = self.gateway, self.gateway.clients
        websocket = WebSocket(scope, receive, send)
        refused = await check_auth(self.spec.auth, websocket)
        if refused is not None:
            await deny(websocket, refused)
            return
        sid = clients.new_id()
        offer = f"{clients.holder} {sid}".encode()
        scope["headers"] = [*scope["headers"], (_OFFER, offer)]
        held = clients.expect(sid)
        try:
            await websocket.receive()  # websocket.connect
            response = await self.spec.handler(websocket, gateway.env)
        except Exception as error:
            self._drop(sid)
            await deny(websocket, error_response(error))
            return
        if response is None:
            clients.forget(sid)  # the handler served the socket itself (not hibernatable)
            if websocket.application_state is WebSocketState.CONNECTING:
                await deny(websocket, error_response(RuntimeError("no answer to the upgrade")))
            return
        if response.status_code != 101 or response.headers.get(SOCKET_HEADER) != sid:
            self._drop(sid)
            if response.status_code == 101:
                log.error("%s: a 101 without ctx.accept_websocket(request)", self.spec.path)
                response = error_response(RuntimeError("101 without accept_websocket"))
            await deny(websocket, response)
            return
        oid, accept = self._accepting(response)
        del response, websocket  # an idle socket keeps these frames for hours: keep them small
        await self._open(held, oid, accept, scope, receive, send)

    def _drop(self, sid: str) -> None:
        self.gateway.clients.forget(sid)
        if self.gateway.sockets is not None:
            self.gateway.sockets.socket_dropped(sid)

    def _accepting(self, response: Response) -> tuple[ObjectId, dict[str, Any]]:
        """The object that accepted, and the ASGI accept message (with the object's headers)."""
        ns, _, hex_id = response.headers[OBJECT_HEADER].partition(":")
        pair = response.headers.get(AUTO_HEADER)
        self.gateway.clients.set_auto(ns, hex_id, tuple(json.loads(pair)) if pair else None)
        extra = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.items()
            if k not in _PRIVATE
        ]
        accept = {"type": "websocket.accept", "headers": extra,
                  "subprotocol": response.headers.get("sec-websocket-protocol")}  # fmt: skip
        return ObjectId(bytes.fromhex(hex_id), ns), accept

    async def _open(
        self,
        held: HeldSocket,
        oid: ObjectId,
        accept: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        clients = self.gateway.clients
        try:
            await send(accept)
        except Exception:  # the client left while the object answered
            clients.forget(held.sid)
            await self._report(oid, held.sid, {"durable.kind": "lost"})
            return
        del accept
        proto = scope.get("extensions", {}).get("durable.protocol")
        held.open(oid, send, proto)
        held.handler = self
        if proto is not None:
            proto.hold(held.feed)  # the connection lives on without this coroutine
            return
        try:  # another ASGI server: a receive loop per socket
            while not await self.handle(held, dict(await receive())):
                pass
        finally:
            clients.forget(held.sid)

    def quick(self, held: HeldSocket, event: dict[str, Any]) -> bool:
        """Answer an auto-response at once, without the object (``fanout.EventHandler``)."""
        text = event.get("text")
        clients = self.gateway.clients
        if text is None or not clients.auto or held.oid is None:
            return False
        oid = held.oid
        pair = clients.auto.get((oid.namespace, str(oid)))
        if pair is None or text != pair[0]:
            return False
        held.write(None, pair[1])
        clients.auto_responses += 1
        assert self.gateway.sockets is not None
        self.gateway.sockets.socket_auto_responded(oid, held.sid)
        return True

    async def handle(self, held: HeldSocket, event: dict[str, Any]) -> bool:
        """One client event: deliver a message, or report the end (then True)."""
        hub, oid, sid = self.gateway.sockets, held.oid, held.sid
        assert hub is not None and oid is not None
        if event["type"] != "websocket.receive":
            try:
                await self._report(oid, sid, event, held)
            finally:
                self.gateway.clients.forget(sid)
            return True
        if self.quick(held, event):
            return False
        text = event.get("text")
        data = text if text is not None else event.get("bytes") or b""
        limit = self.gateway.worker.max_message_bytes
        if len(data) > limit // 4 and _size(data) > limit:
            held.close(1009, "Message too big")
            await _quietly(hub.socket_error(oid, sid, _too_big(_size(data), limit)))
            return False  # the end comes as an event once the client answers the close
        try:
            await hub.socket_message(oid, sid, data)
        except Overloaded:
            held.close(1013, "Overloaded")
        except RpcError:
            held.close(1011, "WebSocket no longer registered")
        except Exception:
            log.warning("websocket_message of %s failed", oid, exc_info=True)
        return False

    async def _report(
        self,
        oid: ObjectId,
        sid: str,
        message: MutableMapping[str, Any],
        held: HeldSocket | None = None,
    ) -> None:
        """Tell the object how the connection ended; answer the client's close if it waits."""
        hub = self.gateway.sockets
        assert hub is not None
        kind = message.get("durable.kind")
        code, reason = message.get("code", NO_STATUS), message.get("reason") or ""
        if held is not None and held.state is HeldState.OPEN:
            held.state = HeldState.CLOSING
        try:
            if kind == "shutdown":
                return  # the gateway detaches from the host as it stops
            if kind == "error":
                await hub.socket_error(oid, sid, reason or f"WebSocket protocol error ({code})")
            elif kind == "lost" or (kind is None and code in (NO_STATUS, 1006)):
                await hub.socket_closed(oid, sid, 1006, LOST_REASON, False)
            else:
                await hub.socket_closed(oid, sid, code, reason, True)
        except Exception:
            log.warning("websocket_close of %s failed", oid, exc_info=True)
        finally:
            if kind == "reply" and held is not None and not held.close_sent:
                held.state = HeldState.OPEN  # let the echo through
                held.close(code, reason)  # the object did not answer: echo the client's close


def _size(data: str | bytes) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)


def _too_big(size: int, limit: int) -> str:
    return f"WebSocket message is {size} bytes, over the limit of {limit} bytes."


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("a WebSocket handler failed", exc_info=True)


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


def host_of(env: Any) -> Any:
    """The in-process ``Host`` behind ``env`` (``connect(address=None)``), else None."""
    from durable.host import Host

    for value in vars(env).values():
        if isinstance(value, Namespace) and isinstance(value._transport, Host):
            return value._transport
    return None


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
