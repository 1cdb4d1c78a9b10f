"""``/metrics``: Prometheus text built at scrape time from counters and ``statistics()`` records.

The request path only bumps plain counters: ``RequestStats`` (per route, method and status, and a
latency histogram per route) in the gateway, and ``MeteredTransport`` (per namespace: requests,
errors, overloads, latency) around the namespaces the route handlers get. Everything else is read
when Prometheus scrapes: ``Host.statistics()``, the alarm scheduler's, the socket registry's and
the gateway's ``ClientSockets.statistics()``, and each partition's stored totals (cached for
``STORAGE_TTL`` seconds: that one is a query per partition).

Guarantees: no metric call on the request path takes a lock or allocates a metric object; a
scrape never wakes an object.

Does not guarantee: namespace latency counts what the gateway's handlers sent through ``env``;
calls between objects are not in it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from durable.errors import Overloaded

if TYPE_CHECKING:
    from starlette.requests import Request

    from durable.fanout import ClientSockets
    from durable.host import Host
    from durable.ids import ObjectId
    from durable.namespace import FetchResponse, Transport

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORAGE_TTL = 15.0


class Histogram:
    """Counts per bucket, a sum and a count; no labels, no locks (one event loop)."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class RequestStats:
    """HTTP requests through the gateway, by route template."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = Histogram()
        histogram.observe(seconds)


class FrontDoorStats:
    """The gateway's connections: how many are open, and why some were refused or closed.

    Reasons: ``header_timeout`` (408), ``body_timeout`` (a body paused past its limit: closed),
    ``headers_too_large`` (431), ``over_capacity`` (503),
    ``evicted`` (an idle connection closed to admit a new one at the cap), ``dropped`` (a new
    connection closed at once: the cap was reached and none was idle), ``bad_request`` (400 from
    the HTTP parser), ``invalid_path`` (400: not UTF-8), ``client_disconnect`` (the client left
    before its request was read).
    """

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        self.connections: set[Any] = set()  # uvicorn's live connections, bound by the first one

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class NamespaceStats:
    __slots__ = ("errors", "latency", "overloads", "requests")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {"fetch": 0, "call": 0}
        self.errors = 0
        self.overloads = 0
        self.latency = Histogram()


class MeteredTransport:
    """A ``Transport`` that counts what goes through it, per namespace; the rest passes through."""

    def __init__(self, inner: Transport, stats: NamespaceStats) -> None:
        self._inner = inner
        self._stats = stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    # ``invoke`` and ``fetch`` return ``_timed``'s coroutine: one frame fewer to resume.
    def invoke(
        self,
        oid: ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        limit: int,
    ) -> Coroutine[Any, Any, Any]:
        return self._timed("call", self._inner.invoke, oid, method, args, kwargs, limit)

    def fetch(self, oid: ObjectId, request: Request) -> Coroutine[Any, Any, FetchResponse]:
        return self._timed("fetch", self._inner.fetch, oid, request)

    async def _timed(self, kind: str, send: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await send(*args)``, counted: a call that fails before it is sent counts too."""
        stats = self._stats
        stats.requests[kind] += 1
        start = time.perf_counter()
        try:
            return await send(*args)
        except Overloaded:
            stats.overloads += 1
            raise
        except Exception:
            stats.errors += 1
            raise
        finally:
            stats.latency.observe(time.perf_counter() - start)


class DurableCollector(Collector):
    """Reads the gateway's counters and the host's statistics when Prometheus scrapes."""

    def __init__(
        self,
        requests: RequestStats,
        namespaces: dict[str, NamespaceStats],
        clients: ClientSockets | None,
        host: Host | None,
        clock: Callable[[], float] = time.monotonic,
        front_door: FrontDoorStats | None = None,
    ) -> None:
        self.front_door = front_door
        self.requests = requests
        self.namespaces = namespaces
        self.clients = clients
        self.host = host
        self._clock = clock
        self._storage: tuple[float, int, int] | None = None

    def collect(self) -> Iterator[Any]:
        yield from self._http()
        if self.front_door is not None:
            yield from self._front_door(self.front_door)
        yield from self._namespaces()
        if self.clients is not None:
            yield from self._held()
        if self.host is not None:
            yield from self._host(self.host)

    def _http(self) -> Iterator[Any]:
        total = CounterMetricFamily(
            "durable_http_requests", "HTTP requests by route", labels=["route", "method", "status"]
        )
        for (route, method, status), n in sorted(self.requests.requests.items()):
            total.add_metric([route, method, str(status)], n)
        yield total
        latency = HistogramMetricFamily(
            "durable_http_request_duration_seconds", "HTTP request latency", labels=["route"]
        )
        for route, histogram in sorted(self.requests.latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.total)
        yield latency

    def _front_door(self, stats: FrontDoorStats) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "durable_gateway_connections", "open client connections", len(stats.connections)
        )
        refused = CounterMetricFamily(
            "durable_gateway_refused", "connections refused or closed by a limit", labels=["reason"]
        )
        for reason, n in sorted(stats.refused.items()):
            refused.add_metric([reason], n)
        yield refused

    def _namespaces(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "durable_namespace_requests", "requests to objects", labels=["namespace", "kind"]
        )
        errors = CounterMetricFamily(
            "durable_namespace_errors", "requests that raised", labels=["namespace"]
        )
        overloads = CounterMetricFamily(
            "durable_overloads", "requests refused with Overloaded (503)", labels=["namespace"]
        )
        latency = HistogramMetricFamily(
            "durable_namespace_request_duration_seconds", "object latency", labels=["namespace"]
        )
        for ns, stats in sorted(self.namespaces.items()):
            for kind, n in stats.requests.items():
                requests.add_metric([ns, kind], n)
            errors.add_metric([ns], stats.errors)
            overloads.add_metric([ns], stats.overloads)
            latency.add_metric([ns], stats.latency.buckets(), stats.latency.total)
        yield from (requests, errors, overloads, latency)

    def _held(self) -> Iterator[Any]:
        assert self.clients is not None
        held = self.clients.statistics()
        yield GaugeMetricFamily("durable_gateway_websockets", "client sockets held", held.held)
        yield CounterMetricFamily(
            "durable_gateway_websocket_frames", "frames written to clients", held.frames
        )
        yield CounterMetricFamily(
            "durable_gateway_auto_responses", "auto-responses answered", held.auto_responses
        )

    def _host(self, host: Host) -> Iterator[Any]:
        stats = host.statistics()
        sockets = host.sockets.statistics()
        alarms = host.alarms.statistics()
        checkpoints = host.checkpointer.statistics()
        objects, size = self._stored(host)
        gauges = {
            "durable_objects_active": ("objects with a live instance", stats.active_objects),
            "durable_objects_hibernated": (
                "objects with open WebSockets and no live instance", sockets.hibernated),
            "durable_objects_stored": ("objects with a row in a partition", objects),
            "durable_storage_bytes": ("bytes stored by objects (KV and SQL)", size),
            "durable_open_files": ("open object database files", stats.open_files),
            "durable_websockets_open": ("hibernatable WebSockets registered", sockets.open),
            "durable_alarms_pending": ("alarms scheduled", alarms.pending),
            "durable_alarm_lateness_max_seconds": (
                "largest alarm lateness seen", alarms.lateness_ms_max / 1000),
            "durable_checkpoint_max_seconds": (
                "longest WAL checkpoint (on its own thread)", checkpoints.max_ms / 1000),
            "durable_wal_max_frames": ("longest partition log seen", checkpoints.max_log_frames),
        }  # fmt: skip
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(name, text, value)
        counters = {
            "durable_activations": ("objects activated", stats.activations),
            "durable_evictions": ("objects evicted (hibernated)", stats.evictions),
            "durable_resets": ("objects reset", stats.resets),
            "durable_commits": ("group commits", stats.commits),
            "durable_alarms_fired": ("alarm invocations", alarms.fired),
            "durable_alarms_retried": (
                "alarm invocations that failed and were retried", alarms.retried),
            "durable_alarms_dropped": ("alarms dropped after their last retry", alarms.dropped),
            "durable_checkpoints": ("WAL checkpoints of partitions", checkpoints.checkpoints),
            "durable_checkpoint_failures": ("WAL checkpoints that failed", checkpoints.failures),
            "durable_wal_rewinds": (
                "logs rewound by their partition (over the bound)", checkpoints.flagged),
            "durable_websocket_messages": ("client messages delivered", sockets.messages),
            "durable_websocket_pushes": ("pushes to gateways", sockets.pushes),
        }  # fmt: skip
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(name, text, value)

    def _stored(self, host: Host) -> tuple[int, int]:
        now = self._clock()
        if self._storage is None or now - self._storage[0] > STORAGE_TTL:
            objects = size = 0
            for partition in list(host.partitions.values()):
                if not partition.closed:
                    o, s = partition.stored_totals()
                    objects, size = objects + o, size + s
            self._storage = (now, objects, size)
        return self._storage[1], self._storage[2]


def registry_for(collector: DurableCollector) -> CollectorRegistry:
    """A registry of its own per gateway (tests build many), with the process collector."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
