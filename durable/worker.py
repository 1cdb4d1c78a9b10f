"""``Worker``: the application — object classes bound to names, routes, cron triggers, vars.

Guarantees:
- Binding names are the namespaces: they key ids, storage rows and files. Renaming a binding
  orphans its data; binding one class twice gives two namespaces with different ids.
- Configuration is validated when the Worker is built (``InvalidArgument`` naming the bad entry),
  not on the first request.

Does not guarantee: routes and cron triggers are only registered here; the gateway serves them
and the host fires them (``durable dev``/``serve``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from durable.errors import InvalidArgument
from durable.limits import Limits
from durable.object import DurableObject

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)
Placement = Literal["packed", "dedicated"]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str
    handler: Handler
    methods: tuple[str, ...] | None
    websocket: bool = False


@dataclass(frozen=True, slots=True)
class CronSpec:
    schedule: str
    handler: Handler


class Worker:
    """Bindings (objects, databases, vars), routes and cron triggers of one application."""

    def __init__(
        self,
        objects: Mapping[str, type[DurableObject]] | None = None,
        *,
        limits: Mapping[str, Limits] | None = None,
        idle_timeout: float = 10.0,
        placement: Mapping[str, Placement] | None = None,
        databases: Mapping[str, str] | None = None,
        vars: Mapping[str, Any] | None = None,
    ) -> None:
        self.objects = dict(objects or {})
        self.limits = dict(limits or {})
        self.idle_timeout = float(idle_timeout)
        self.placement = dict(placement or {})
        self.databases = dict(databases or {})
        self.vars = dict(vars or {})
        self.routes: list[RouteSpec] = []
        self.crons: list[CronSpec] = []
        self._validate()

    def _validate(self) -> None:
        names = [*self.objects, *self.databases, *self.vars]
        for name in names:
            if not name.isidentifier() or name.startswith("_"):
                raise InvalidArgument(f"Binding name {name!r} must be a public Python identifier.")
        if len(set(names)) != len(names):
            raise InvalidArgument("A binding name is used twice across objects, databases, vars.")
        for name, cls in self.objects.items():
            if not (isinstance(cls, type) and issubclass(cls, DurableObject)):
                raise InvalidArgument(f"objects[{name!r}] must be a DurableObject subclass.")
        for table, what in ((self.limits, "limits"), (self.placement, "placement")):
            unknown = set(table) - set(self.objects)
            if unknown:
                raise InvalidArgument(f"{what} names unknown bindings: {sorted(unknown)}.")
        for name, value in self.limits.items():
            if not isinstance(value, Limits):
                raise InvalidArgument(f"limits[{name!r}] must be a durable.Limits.")
        for name, where in self.placement.items():
            if where not in ("packed", "dedicated"):
                raise InvalidArgument(f"placement[{name!r}] must be 'packed' or 'dedicated'.")
        if self.idle_timeout <= 0:
            raise InvalidArgument("idle_timeout must be a positive number of seconds.")

    def limits_for(self, binding: str) -> Limits:
        return self.limits.get(binding) or Limits()

    def route(self, path: str, methods: list[str] | None = None) -> Callable[[H], H]:
        """Register ``async def handler(request, env)`` for ``path`` (Starlette path syntax)."""

        def register(handler: H) -> H:
            verbs = tuple(m.upper() for m in methods) if methods else None
            self.routes.append(RouteSpec(path, handler, verbs))
            return handler

        return register

    def websocket_route(self, path: str) -> Callable[[H], H]:
        """Register ``async def handler(websocket, env)`` for WebSocket upgrades on ``path``."""

        def register(handler: H) -> H:
            self.routes.append(RouteSpec(path, handler, None, websocket=True))
            return handler

        return register

    def cron(self, schedule: str) -> Callable[[H], H]:
        """Register ``async def handler(event, env)`` on a five-field cron schedule."""
        fields = schedule.split()
        if len(fields) != 5:
            raise InvalidArgument(f"cron schedule {schedule!r} must have 5 fields.")

        def register(handler: H) -> H:
            self.crons.append(CronSpec(schedule, handler))
            return handler

        return register
