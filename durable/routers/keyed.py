"""``KeyRouterBase``: the code the one-namespace key routers (hash, template, feature) share.

A subclass says how a key maps to an object's name (``name_for``) and which ``str`` the objects
see as its routing key (``routing_key``); the base gives it ``get``/``ref_for``, ``call``, which
follows moves (``move.routed_call``), ``scatter`` over its fixed set of objects and its ``Mover``.
It sits above ``base``, ``move`` and ``scatter`` so that those never import a router.

Guarantees: those of ``base`` (a routed call reaches the object that holds the key) and of
``scatter`` (every object is called at once, each result or error reported by name).

On failure: ``scatter`` on a router without a fixed set of objects raises ``InvalidRouteKey``;
more than ``MAX_HOPS`` redirects for one call raise ``RouteLoop``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from durable.errors import InvalidRouteKey
from durable.routers.base import ShardRef
from durable.routers.move import Mover, routed_call
from durable.routers.scatter import ScatterResult, scatter

if TYPE_CHECKING:
    from durable.clock import Clock
    from durable.namespace import Namespace, Stub

T = TypeVar("T")


class KeyRouterBase:
    """Shared code of the one-namespace key routers (hash, template, feature).

    Subclasses set ``namespace`` and ``clock`` and define ``name_for`` and ``routing_key``.
    """

    namespace: Namespace
    clock: Clock
    _mover: Mover | None = None

    def name_for(self, key: Any, /) -> str:
        raise NotImplementedError

    def routing_key(self, key: Any, /) -> str:
        raise NotImplementedError

    def ref_for(self, key: Any, /) -> ShardRef:
        return ShardRef(self.namespace.binding, self.name_for(key))

    def get(self, key: Any, /) -> Stub:
        return self.namespace.get_by_name(self.name_for(key))

    def shard_refs(self) -> list[ShardRef] | None:
        """Every object of this router, if there is a fixed set of them (for sweeps, scatter)."""
        return None

    def placement(self) -> dict[str, Any] | None:
        """A serializable description of the mapping, stored in shards (``ShardObject``)."""
        return None

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        return {self.namespace.binding: self.namespace}

    @property
    def mover(self) -> Mover:
        if self._mover is None:
            self._mover = Mover(self.namespaces)
        return self._mover

    async def route(self, key: str) -> ShardRef:
        return self.ref_for(key)

    async def redirected(self, key: str, at: ShardRef, to: ShardRef) -> ShardRef:
        return to  # a plain router follows the object that holds the key

    async def call(self, key: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``await stub.<method>(routing_key, *args, **kwargs)`` on the key's object, following
        moves (``KeyMoved``) and finishing interrupted ones (``KeyNotHere``)."""
        return await routed_call(self, self.routing_key(key), method, args, kwargs)

    async def scatter(
        self, fn: Callable[[Stub], Awaitable[T]], *, timeout: float
    ) -> ScatterResult[T]:
        """Call ``fn(stub)`` on every object at once; see ``routers.scatter``."""
        refs = self.shard_refs()
        if refs is None:
            raise InvalidRouteKey(f"{self!r} has no fixed set of objects to scatter over.")
        stubs = {ref.name: self.namespaces[ref.binding].get_by_name(ref.name) for ref in refs}
        return await scatter(stubs, fn, timeout=timeout, clock=self.clock)
