"""``SocketEndpoint``: a WebSocket route of the gateway. It runs the auth hooks, forwards the
upgrade to the object (the handler's ``stub.fetch(websocket)``), and once the object accepted,
holds the client's socket here so the object can hibernate: messages go to the object one at a
time per socket, in order, and auto-responses are answered without waking it.

Guarantees: a refused upgrade (auth, a non-101 answer, an error) gets that HTTP response instead
of a handshake; a message over ``Worker(max_message_bytes=...)`` closes the socket with 1009
before the object sees it; ``Overloaded`` closes it with 1013.

Does not guarantee: delivery of a message the object failed on (``websocket_message`` raised:
logged, the socket stays open, as workerd's read loop does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from durable.errors import Overloaded, RpcError
from durable.fanout import LOST_REASON, HeldSocket, HeldState
from durable.ids import ObjectId
from durable.responses import check_auth, deny, error_response
from durable.sockets import AUTO_HEADER, NO_STATUS, OBJECT_HEADER, OFFER_HEADER, SOCKET_HEADER
from durable.worker import RouteSpec

if TYPE_CHECKING:
    from durable.gateway import Gateway

log = logging.getLogger("durable.gateway")
OFFER = OFFER_HEADER.encode()  # the gateway's offer to hold the socket, read by the object
_PRIVATE = {SOCKET_HEADER, OBJECT_HEADER, AUTO_HEADER, "content-length", "content-type",
            "upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"}  # fmt: skip


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
        scope["headers"] = [*scope["headers"], (OFFER, offer)]
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
