"""What every router shares: the ``Router`` protocol, ``ShardRef``, and the errors of routed calls.

A router maps a key to the name of one object of a namespace binding (DESIGN §5, CONTRACTS §10).
``name_for(...)`` gives the name and ``get(...)`` the stub, with no round trip, so tests and tools
can see the mapping without calling anything. Routers whose keys are one ``str`` (hash, feature,
one-field templates) also offer ``call(key, method, *args)``, which calls ``method(key, *args)``
on the object and follows the moves of ``MigratingRouter`` and ``HashRouter.reshard``
(``keyed.KeyRouterBase``, which sits above ``move`` and ``scatter``: this module imports neither).

Guarantees:
- Routers are pure values: equal routers (``==``) map every key to the same name of the same
  binding; ``repr`` shows what they are built from.
- A routed call reaches the object that holds the key: a ``ShardObject`` that gave the key away
  raises ``KeyMoved`` (the caller follows it), one that waits for a key raises ``KeyNotHere``
  (the caller finishes the move), both before the method runs.

Does not guarantee: a plain stub from ``get`` does not follow moves; its caller sees those errors.

On failure: more than ``MAX_HOPS`` redirects for one call raises ``RouteLoop`` (routers or shard
placements disagree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from durable.errors import DurableError, InvalidRouteKey
from durable.values import register_type

if TYPE_CHECKING:
    from durable.namespace import Namespace, Stub
    from durable.routers.move import Mover

MAX_HOPS = 8


@register_type(name="durable.routers.ShardRef")  # rebuilt as itself in errors from other hosts
@dataclass(frozen=True, slots=True, order=True)
class ShardRef:
    """One object by binding and name: ``ShardRef("BOARD", "shard-3")``."""

    binding: str
    name: str

    def __str__(self) -> str:
        return f"{self.binding}/{self.name}"

    def wire(self) -> tuple[str, str]:
        """The form sent over RPC and stored in tombstones."""
        return (self.binding, self.name)

    @classmethod
    def of(cls, wire: Any) -> ShardRef:
        binding, name = wire
        return cls(str(binding), str(name))


class Router(Protocol):
    """The protocol of every router (STYLE habit 11)."""

    def name_for(self, *args: Any, **kwargs: Any) -> str: ...

    def get(self, *args: Any, **kwargs: Any) -> Stub: ...

    def statistics(self) -> Any: ...

    def __repr__(self) -> str: ...

    def __eq__(self, other: object) -> bool: ...


class KeyRouter(Protocol):
    """A router whose key is one ``str``: what ``call``, migrations and resharding work on."""

    def name_for(self, key: Any, /) -> str: ...

    def ref_for(self, key: Any, /) -> ShardRef: ...

    def get(self, key: Any, /) -> Stub: ...

    def routing_key(self, key: Any, /) -> str: ...

    def shard_refs(self) -> list[ShardRef] | None: ...

    def placement(self) -> dict[str, Any] | None: ...

    @property
    def namespaces(self) -> Mapping[str, Namespace]: ...

    async def call(self, key: Any, method: str, /, *args: Any, **kwargs: Any) -> Any: ...


class RoutedCalls(Protocol):
    """What ``move.routed_call`` needs from a router."""

    @property
    def namespaces(self) -> Mapping[str, Namespace]: ...

    @property
    def mover(self) -> Mover: ...

    async def route(self, key: str) -> ShardRef: ...

    async def redirected(self, key: str, at: ShardRef, to: ShardRef) -> ShardRef: ...


def str_key(key: object, router: str) -> str:
    """Check a routing key: a non-empty ``str`` without ``"\\x00"`` (the scope separator)."""
    if not isinstance(key, str):
        raise InvalidRouteKey(
            f"{router} keys must be str, not {type(key).__name__}; pass key=str to the router "
            "to turn other values into keys."
        )
    if not key or "\x00" in key:
        raise InvalidRouteKey(f"{router} keys must be non-empty and contain no '\\x00': {key!r}.")
    return key


# -- errors of routed calls ----------------------------------------------------------------------
# TODO(#6): move these into durable/errors.py's tree with the next edit of that file.
class KeyMoved(DurableError):
    """The object does not hold this routing key: it moved (or belongs) to ``to``; call there."""

    retryable = True

    def __init__(self, key: str, to: ShardRef) -> None:
        super().__init__(
            f"Routing key {key!r} is served by {to}, not here; send the call there "
            "(router.call() follows it)."
        )
        self.key = key
        self.to = to


class KeyNotHere(DurableError):
    """The object is receiving this routing key from ``source`` and cannot serve it yet."""

    retryable = True

    def __init__(self, key: str, source: ShardRef) -> None:
        super().__init__(
            f"Routing key {key!r} is being moved here from {source} and is not ready; "
            "router.call() finishes the move and retries."
        )
        self.key = key
        self.source = source


class MoveConflict(DurableError):
    """A move found data for the key at its destination: it was written there directly."""

    def __init__(self, key: str, where: ShardRef, detail: str) -> None:
        super().__init__(
            f"Cannot move routing key {key!r} to {where}: {detail}. Nothing was changed; during "
            "a migration reach the new objects only through the migrating router."
        )
        self.key = key


class RouteLoop(DurableError):
    """A call was redirected more than ``MAX_HOPS`` times: placements disagree."""

    def __init__(self, key: str, path: list[ShardRef]) -> None:
        hops = " -> ".join(str(ref) for ref in path)
        super().__init__(
            f"Routing key {key!r} was redirected {len(path) - 1} times ({hops}); the routers or "
            "shard placements disagree. Finish or restart the migration or reshard."
        )
