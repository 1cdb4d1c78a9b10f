"""``Worker``: the application — object classes bound to names, routes, cron triggers, vars.

Guarantees:
- Binding names are the namespaces: they key ids, storage rows and files. Renaming a binding
  orphans its data; binding one class twice gives two namespaces with different ids.
- Configuration is validated when the Worker is built (``InvalidArgument`` naming the bad entry),
  not on the first request.

Does not guarantee: routes and cron triggers are only registered here; the gateway serves the
routes and ``durable.cron.CronScheduler`` fires the crons (started by ``connect``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from durable.cron import CronSchedule
from durable.errors import InvalidArgument
from durable.limits import Limits
from durable.object import DurableObject

if TYPE_CHECKING:
    from durable.frontdoor import GatewayLimits

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)
Placement = Literal["packed", "dedicated"]


# An auth hook gets the request (or the WebSocket upgrade) and returns None to let it through,
# or a Response (or raises) to refuse it; it may be async. See durable/gateway.py.
AuthHook = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str
    handler: Handler
    methods: tuple[str, ...] | None
    websocket: bool = False
    auth: AuthHook | None = None


@dataclass(frozen=True, slots=True)
class StaticSpec:
    path: str
    directory: str
    html: bool = True


@dataclass(frozen=True, slots=True)
class CronSpec:
    schedule: str
    handler: Handler


class Worker:
    """Bindings (objects, databases, vars), routes and cron triggers of one application.

    Hibernation: an object that received no event for ``idle_timeout`` seconds (10 s by default,
    Cloudflare's figure) is evicted: its instance and cache are dropped, its storage and alarm
    stay, and ``__init__`` runs again on its next event. ``idle_timeouts={"BINDING": seconds}``
    overrides it per namespace (as Orleans' ``ClassSpecificCollectionAge`` beside its
    ``CollectionAge``); bindings not named there use ``idle_timeout``.

    Memory budget: ``max_active_objects`` caps the live objects of one host (default 100,000,
    about 0.4 GiB of empty objects as measured by ``benchmarks/core.py``; None for no cap). Past
    it the host evicts the least recently used idle objects at once, whatever their idle time.
    The budget counts objects rather than bytes of RSS: RSS does not fall when Python frees
    objects (the allocator keeps its arenas), so an RSS trigger would evict everything and stay
    over budget, and a count is deterministic in tests. Objects handling an event, running
    ``wait_until`` work or holding uncommitted writes are never evicted, so the cap is soft
    while that many objects are busy.

    Gateway (``durable/gateway.py``): ``auth=fn`` runs before every route and WebSocket upgrade
    (``fn(request)`` → None to allow, a Response or an exception to refuse; ``/healthz`` and
    ``/metrics`` bypass it); ``router=`` a Starlette ``Router`` served after the routes (its
    endpoints find the bindings at ``request.state.env``); ``max_request_bytes`` (32 MiB: 413
    past it) and ``max_message_bytes`` (1 MiB, workerd's: a larger WebSocket message closes the
    socket with 1009). ``gateway_limits=GatewayLimits(...)``: connection limits (header and body
    timeouts, header size, keep-alive, connection cap; README "Limits").
    ``worker.static(path, directory)`` serves files such as example pages.
    """

    def __init__(
        self,
        objects: Mapping[str, type[DurableObject]] | None = None,
        *,
        limits: Mapping[str, Limits] | None = None,
        idle_timeout: float = 10.0,
        idle_timeouts: Mapping[str, float] | None = None,
        max_active_objects: int | None = 100_000,
        placement: Mapping[str, Placement] | None = None,
        databases: Mapping[str, str] | None = None,
        vars: Mapping[str, Any] | None = None,
        auth: AuthHook | None = None,
        router: Any = None,
        max_request_bytes: int = 32 * 2**20,
        max_message_bytes: int = 2**20,
        gateway_limits: GatewayLimits | None = None,
    ) -> None:
        self.objects = dict(objects or {})
        self.gateway_limits = gateway_limits  # None: GatewayLimits() defaults
        self.limits = dict(limits or {})
        self.idle_timeout = float(idle_timeout)
        self.idle_timeouts = {name: float(s) for name, s in (idle_timeouts or {}).items()}
        self.max_active_objects = max_active_objects
        self.placement = dict(placement or {})
        self.databases = dict(databases or {})
        self.vars = dict(vars or {})
        self.routes: list[RouteSpec] = []
        self.crons: list[CronSpec] = []
        self._gateway_options(auth, router, max_request_bytes, max_message_bytes)
        self._validate()

    def _gateway_options(self, auth: Any, router: Any, body: int, message: int) -> None:
        """What the gateway (``durable/gateway.py``) needs besides the routes; checked here."""
        if auth is not None and not callable(auth):
            raise InvalidArgument("auth must be a callable: auth(request) -> None | Response.")
        for name, value in (("max_request_bytes", body), ("max_message_bytes", message)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a positive int (bytes).")
        self.auth: AuthHook | None = auth
        self.router = router  # a Starlette Router (or list of routes) served after the routes
        self.max_request_bytes = body
        self.max_message_bytes = message
        self.statics: list[StaticSpec] = []
        self.collectors: list[Any] = []

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
        tables = (self.limits, "limits"), (self.placement, "placement")
        for table, what in (*tables, (self.idle_timeouts, "idle_timeouts")):
            unknown = set(table) - set(self.objects)
            if unknown:
                raise InvalidArgument(f"{what} names unknown bindings: {sorted(unknown)}.")
        for name, value in self.limits.items():
            if not isinstance(value, Limits):
                raise InvalidArgument(f"limits[{name!r}] must be a durable.Limits.")
        for name, where in self.placement.items():
            if where not in ("packed", "dedicated"):
                raise InvalidArgument(f"placement[{name!r}] must be 'packed' or 'dedicated'.")
        self._validate_eviction()

    def _validate_eviction(self) -> None:
        if self.idle_timeout <= 0:
            raise InvalidArgument("idle_timeout must be a positive number of seconds.")
        for name, seconds in self.idle_timeouts.items():
            if seconds <= 0:
                raise InvalidArgument(f"idle_timeouts[{name!r}] must be a positive number.")
        cap = self.max_active_objects
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise InvalidArgument("max_active_objects must be a positive int or None.")

    def limits_for(self, binding: str) -> Limits:
        return self.limits.get(binding) or Limits()

    def idle_timeout_for(self, binding: str) -> float:
        return self.idle_timeouts.get(binding, self.idle_timeout)

    def route(
        self, path: str, methods: list[str] | None = None, *, auth: AuthHook | None = None
    ) -> Callable[[H], H]:
        """Register ``async def handler(request, env)`` for ``path`` (Starlette path syntax);
        ``auth`` runs before it (after the worker's own ``auth``)."""

        def register(handler: H) -> H:
            verbs = tuple(m.upper() for m in methods) if methods else None
            self.routes.append(RouteSpec(path, handler, verbs, auth=auth))
            return handler

        return register

    def websocket_route(self, path: str, *, auth: AuthHook | None = None) -> Callable[[H], H]:
        """Register ``async def handler(websocket, env)`` for WebSocket upgrades on ``path``;
        it forwards the upgrade to an object with ``await stub.fetch(websocket)``."""

        def register(handler: H) -> H:
            self.routes.append(RouteSpec(path, handler, None, websocket=True, auth=auth))
            return handler

        return register

    def static(self, path: str, directory: str | Path, *, html: bool = True) -> None:
        """Serve the files under ``directory`` at ``path`` (after every route; ``html``: ``/``
        serves ``index.html``). Example pages: ``worker.static("/", "examples/game/static")``."""
        if not Path(directory).is_dir():
            raise InvalidArgument(f"static({path!r}): {directory} is not a directory.")
        self.statics.append(StaticSpec(path, str(directory), html))

    def metrics(self, collector: Any) -> None:
        """Serve an app's own Prometheus series at ``/metrics`` beside durable's.

        ``collector`` is anything ``prometheus_client`` can register: a ``CollectorRegistry``
        (``examples/todos/metrics.py``) or a custom ``Collector`` read at scrape time
        (``examples/mission_game/telemetry.py``). Each gateway (each host slot on Ray) serves
        the series of its own process.
        """
        if not callable(getattr(collector, "collect", None)):
            raise InvalidArgument("metrics() takes a prometheus_client Collector or registry.")
        self.collectors.append(collector)

    def cron(self, schedule: str) -> Callable[[H], H]:
        """Register ``async def handler(event, env)`` on a five-field cron schedule (UTC).

        The schedule is checked now (``InvalidArgument`` with the reason); ``durable.cron``
        describes the syntax (crontab's, where day of week 0 and 7 are Sunday).
        """
        CronSchedule.parse(schedule)

        def register(handler: H) -> H:
            self.crons.append(CronSpec(schedule, handler))
            return handler

        return register


def target_paths(target: str) -> list[str]:
    """Folders a TARGET needs on ``sys.path``: the current directory and the file's folder."""
    spec = target.partition(":")[0]
    paths = [str(Path.cwd())]
    if spec.endswith(".py"):
        paths.append(str(Path(spec).resolve().parent))
    return paths


def load_worker(target: str, paths: Sequence[str] | None = None) -> Worker:
    """Import ``path/to/file.py[:attr]`` or ``package.module[:attr]``; attr defaults to worker.

    ``paths`` go first on ``sys.path`` (default ``target_paths(target)``; a Ray worker passes
    the launcher's, as its own current directory differs).
    """
    spec, _, attr = target.partition(":")
    for path in reversed(target_paths(target) if paths is None else paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    if spec.endswith(".py"):
        if not Path(spec).is_file():
            raise InvalidArgument(f"{spec}: no such file")
        spec = Path(spec).stem
    module = importlib.import_module(spec)
    worker = getattr(module, attr or "worker", None)
    if not isinstance(worker, Worker):
        raise InvalidArgument(f"{target}: {attr or 'worker'!r} is not a durable.Worker")
    return worker
