"""What a user subclasses: ``DurableObject``, and its ``ctx`` (``ObjectState``).

Guarantees:
- ``__init__(ctx, env)`` runs once per activation: on the first event, and again on the first
  event after an eviction or a reset. In-memory fields live exactly that long; storage, alarms
  (and sockets) outlive it.
- Handlers: ``fetch(request)``, public methods (RPC), ``alarm(info)``, and for hibernatable
  WebSockets ``websocket_message(ws, message)``, ``websocket_close(ws, code, reason,
  was_clean)``, ``websocket_error(ws, error)`` (see ``sockets.py``). One object runs one event
  at a time while it touches storage (see ``storage.py``); any other await lets the next in.
- ``ctx.block_concurrency_while(fn)`` holds every later event until ``fn`` finishes (also when
  called from a sync ``__init__`` and nobody awaits it); if ``fn`` raises or runs past 30 s the
  object is reset and every event in it fails with that error.
- ``ctx.wait_until(coro)`` keeps the object from being evicted until ``coro`` finishes.
- ``ctx.abort(reason)`` resets the object at once; the current event fails with ``ObjectReset``.

Does not guarantee: ``ctx.now()`` is the injected clock (virtual in tests); ``time.time()`` is not.

On failure: an exception from a handler goes to its caller (``.remote = True``); the object stays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from durable.errors import RpcError

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from durable.activation import Activation
    from durable.ids import ObjectId
    from durable.sockets import HibernatableWebSocket, WebSocketAccepted
    from durable.storage import Storage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """The argument of ``alarm(info)``. ``scheduled_time`` is epoch ms and stays the original."""

    scheduled_time: int
    retry_count: int = 0

    @property
    def is_retry(self) -> bool:
        return self.retry_count > 0


class ObjectState:
    """``self.ctx``: the object's id, storage, clock and lifecycle controls."""

    def __init__(self, activation: Activation) -> None:
        self._activation = activation
        self.id: ObjectId = activation.oid
        self.storage: Storage = activation.storage
        self.env: Any = activation.env

    def now(self) -> float:
        """Epoch seconds from the runtime's clock (the virtual clock in tests)."""
        return self._activation.clock.now()

    def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return self._activation.block_concurrency_while(fn)

    def wait_until(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._activation.wait_until(coro)

    def abort(self, reason: str | None = None, *, retry_alarm: bool = True) -> None:
        self._activation.abort(reason, retry_alarm=retry_alarm)

    # -- hibernatable WebSockets (DESIGN §6; the registry is sockets.py's) ------------------------
    def accept_websocket(
        self, request: HTTPConnection, tags: Iterable[str] | None = None
    ) -> WebSocketAccepted:
        """Make the forwarded upgrade ``request`` a socket of this object; return the result from
        ``fetch`` (its ``.websocket`` is the new socket). The gateway keeps the connection open
        while the object hibernates."""
        return self._activation.host.sockets.accept(self._activation, request, tags)

    def get_websockets(self, tag: str | None = None) -> list[HibernatableWebSocket]:
        """Every accepted socket (newest first), or those with ``tag`` (in accept order)."""
        return self._activation.host.sockets.listing(self._activation, tag)

    def get_tags(self, ws: HibernatableWebSocket) -> list[str]:
        return self._activation.host.sockets.tags_of(ws)

    def set_websocket_auto_response(self, pair: tuple[str, str] | None = None) -> None:
        """Have the gateway answer the text frame ``pair[0]`` with ``pair[1]`` without waking
        this object; None turns it off. Kept across hibernation."""
        self._activation.host.sockets.set_auto_response(self._activation.oid, pair)

    def get_websocket_auto_response(self) -> tuple[str, str] | None:
        return self._activation.host.sockets.auto_response(self._activation.oid)

    def get_websocket_auto_response_timestamp(self, ws: HibernatableWebSocket) -> datetime | None:
        """When the gateway last auto-responded on ``ws`` (UTC), or None."""
        return self._activation.host.sockets.auto_response_time(ws)


class DurableObject:
    """Base class of durable objects. Public ``async`` (or sync) methods are callable over RPC."""

    def __init__(self, ctx: ObjectState, env: Any) -> None:
        self.ctx = ctx
        self.env = env


# Entry points the runtime calls itself; never callable over RPC.
HANDLERS = frozenset({"fetch", "alarm", "websocket_message", "websocket_close", "websocket_error"})


def rpc_method(instance: DurableObject, name: str) -> Callable[..., Any]:
    """The bound method ``name`` if it may be called over RPC, else ``RpcError``.

    Public methods defined by the class qualify; ``_private`` names, handlers, instance fields
    and what ``DurableObject`` itself defines do not.
    """
    attr = getattr(type(instance), name, None)
    if name.startswith("_") or name in HANDLERS or name in vars(DurableObject):
        raise RpcError.no_method(name)
    if attr is None or not callable(attr):
        raise RpcError.no_method(name)
    return getattr(instance, name)  # type: ignore[no-any-return]
