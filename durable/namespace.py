"""A namespace binding (``env.COUNTER``) and the stubs it hands out.

Guarantees:
- ``get``/``get_by_name`` return a stub at once, with no round trip; the object is made on its
  first call. ``id_from_name`` is deterministic (``ids.py``).
- ``await stub.method(*args, **kwargs)`` calls a public method of the object. Arguments and the
  result cross as ``messages.py`` says: copied through the value codec (``values.py``) unless
  immutable and plain, so neither side shares mutable state, and each is checked against
  ``Limits.max_rpc_bytes`` (``MessageTooLarge``) before it is sent.
- Calls made on one stub start in the order they were made.
- Reserved on a stub: ``fetch``, ``id``, ``name`` and dunders. Any other attribute is a method;
  an unknown one, a ``_private`` one or a handler (``alarm``, ``websocket_*``) raises ``RpcError``
  when awaited.
- An exception raised by the object is re-raised at the caller with its class and message and
  ``.remote = True``. A call made from inside an object waits first for that object's output gate.

On failure: ``Overloaded`` (too many pending events) means the call was not delivered.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MethodType
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from durable import ids
from durable.errors import InvalidArgument, RemoteError
from durable.gates import current_activation, wait_durable
from durable.limits import Limits

METHOD_CACHE = 1024  # stub method names remembered per namespace


class Transport(Protocol):
    """How stubs reach objects: the in-process host, or later a channel to remote hosts."""

    async def invoke(
        self,
        oid: ids.ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        limit: int,
    ) -> Any:
        """Call ``method``; arguments and result cross as ``messages.py`` says, each at most
        ``limit`` bytes encoded."""
        ...

    async def fetch(self, oid: ids.ObjectId, request: Request) -> FetchResponse: ...


class FetchResponse(Response):
    """What ``stub.fetch`` returns: a complete Starlette response a route can return unchanged."""

    def __init__(self, body: bytes, status_code: int, raw_headers: list[tuple[bytes, bytes]]):
        super().__init__(content=body, status_code=status_code)
        self.raw_headers = raw_headers

    @classmethod
    def of(cls, response: Response) -> FetchResponse:
        """``response``'s body, status and headers, without running it (it is rendered)."""
        fetched = cls.__new__(cls)
        fetched.__dict__.update(response.__dict__)
        fetched.raw_headers = list(response.raw_headers)  # the object may keep and reuse its own
        return fetched

    @property
    def text(self) -> str:
        return bytes(self.body).decode(self.charset)

    def json(self) -> Any:
        return jsonlib.loads(bytes(self.body))


class Namespace:
    """``env.BINDING``: makes ids and stubs for one binding's objects."""

    def __init__(self, binding: str, transport: Transport, limits: Limits) -> None:
        self.binding = binding
        self.transport = transport
        self.limits = limits
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    def method(self, name: str) -> Callable[..., Awaitable[Any]]:
        """The function behind ``stub.<name>`` (the stub is its first argument), made once per
        name; at most ``METHOD_CACHE`` names are kept, as names may come from input."""
        function = self._methods.get(name)
        if function is None:
            function = _remote_method(name)
            if len(self._methods) < METHOD_CACHE:
                self._methods[name] = function
        return function

    def __repr__(self) -> str:
        return f"Namespace({self.binding!r})"

    def id_from_name(self, name: str) -> ids.ObjectId:
        return ids.id_from_name(self.binding, name)

    def new_unique_id(self) -> ids.ObjectId:
        return ids.new_unique_id(self.binding)

    def id_from_string(self, text: str) -> ids.ObjectId:
        return ids.id_from_string(self.binding, text)

    def get(self, oid: ids.ObjectId | str) -> Stub:
        if isinstance(oid, str):
            oid = self.id_from_string(oid)
        elif not isinstance(oid, ids.ObjectId):
            raise InvalidArgument(f"get() takes an ObjectId, not {type(oid).__name__}.")
        elif oid.namespace != self.binding:
            # As workerd: an id of another namespace is not rejected; it names an object here.
            oid = ids.ObjectId(oid.raw, self.binding, None)
        return Stub(self, oid)

    def get_by_name(self, name: str) -> Stub:
        return Stub(self, self.id_from_name(name))


class Stub:
    """A handle on one object; every attribute but ``fetch``, ``id`` and ``name`` is a method."""

    __slots__ = ("_ns", "id")

    def __init__(self, namespace: Namespace, oid: ids.ObjectId) -> None:
        self._ns = namespace
        self.id = oid

    @property
    def name(self) -> str | None:
        return self.id.name

    def __repr__(self) -> str:
        return f"Stub({self._ns.binding}, {self.id!r})"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("__") and method.endswith("__"):
            raise AttributeError(method)  # dunders belong to the stub (pickling, awaiting, ...)
        return MethodType(self._ns.method(method), self)

    async def fetch(
        self,
        url_or_request: str | Request | HTTPConnection,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
    ) -> FetchResponse:
        if isinstance(url_or_request, Request):
            request = await _forwarded(url_or_request)
        elif (
            isinstance(url_or_request, HTTPConnection)
            and url_or_request.scope["type"] == "websocket"
        ):
            request = _upgrade_request(url_or_request)
        elif isinstance(url_or_request, str):
            request = _build_request(url_or_request, method, headers, content, json)
        else:
            raise InvalidArgument("fetch() takes a URL (str), a Request or a WebSocket.")
        await _output_gate()
        return await self._ns.transport.fetch(self.id, request)


def _remote_method(name: str) -> Callable[..., Awaitable[Any]]:
    async def call(stub: Stub, *args: Any, **kwargs: Any) -> Any:
        await _output_gate()
        try:
            ns = stub._ns
            return await ns.transport.invoke(stub.id, name, args, kwargs, ns.limits.max_rpc_bytes)
        except Exception as error:
            raise _as_seen_by_caller(error) from None

    call.__name__ = call.__qualname__ = name
    return call


def _as_seen_by_caller(error: Exception) -> Exception:
    """A remote exception keeps its class if the caller could import it, else ``RemoteError``."""
    if not getattr(error, "remote", False) or _importable(type(error)):
        return error
    remote = RemoteError(type(error).__qualname__, str(error))
    remote.durable_object_reset = getattr(error, "durable_object_reset", False)  # type: ignore[attr-defined]
    return remote


def _importable(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    target: Any = module
    for part in cls.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is cls


async def _output_gate() -> None:
    activation = current_activation.get()
    if activation is not None:
        await wait_durable(activation.cache)


# Responses whose whole body is rendered in __init__ and whose __call__ only sends it.
_RENDERED = frozenset({Response, JSONResponse, PlainTextResponse, HTMLResponse})


def replay_body(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _upgrade_request(websocket: HTTPConnection) -> Request:
    """A WebSocket route's upgrade as the GET request an object's ``fetch`` sees (issue #5):
    ``ctx.accept_websocket(request)`` finds the gateway's offer in its headers."""
    scope = dict(websocket.scope)
    scope["type"] = "http"
    scope["method"] = "GET"
    return Request(scope, replay_body(b""))


async def _forwarded(request: Request) -> Request:
    """``request`` (method, path, query, headers, body) for another object, with a scope of its
    own (the object's router may write to it). A body is read whole first, so a body over the
    gateway's limit is refused before the object runs; a request without one reads nothing."""
    body = await request.body() if _has_body(request.scope) else b""
    return Request(dict(request.scope), replay_body(body))


def _has_body(scope: Mapping[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _build_request(
    url: str,
    method: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    content: bytes | str | None,
    json: Any,
) -> Request:
    parts = urlsplit(url)
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    body = content.encode() if isinstance(content, str) else content or b""
    if json is not None:
        body = jsonlib.dumps(json).encode()
        pairs.append(("content-type", "application/json"))
    host = parts.netloc or "durable.internal"
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
    if not any(k == b"host" for k, _ in raw):
        raw.append((b"host", host.encode("latin-1")))
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": parts.scheme or "http",
        "path": parts.path or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": raw,
        "server": (parts.hostname or "durable.internal", parts.port or 80),
        "client": None,
    }
    return Request(scope, replay_body(body))


async def materialize(response: Response) -> FetchResponse:
    """Run any Starlette response (streaming too) and collect status, headers and body; a
    plain ``Response`` (its body rendered, no background task) is taken as it is."""
    if isinstance(response, FetchResponse):
        return response
    if type(response) in _RENDERED and response.background is None:
        return FetchResponse.of(response)
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {"type": "http", "method": "GET", "headers": [], "asgi": {"version": "3.0"}}
    await response(scope, replay_body(b""), send)
    return FetchResponse(b"".join(chunks), status, headers)
