"""The seed's metrics for the todo backend, in Prometheus form (``alerts.rules.yml`` reads them).

``TodoMetrics().registry`` is a ``prometheus_client.CollectorRegistry``; the app adds it to the
gateway's ``/metrics`` (``app.py``). The series, as the seed lists them:

- request rate and error rate: ``todos_requests_total{op, status}`` (op: load, save, …);
- latency: ``todos_request_duration_seconds{op}`` (histogram);
- storage per object: ``todos_object_storage_bytes{object}`` (content bytes, as each save or
  restore reports it);
- user count: ``todos_users`` (lists in the directory, as the last registration reported).

Guarantees: recording never blocks and never calls an object; at most ``MAX_OBJECTS`` object
series exist (past it, new objects are not added), so a million users cannot blow up a scrape.

Does not guarantee: values are this process's view: an object not saved to since the process
started has no storage series yet.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_OBJECTS = 10_000
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TodoMetrics:
    """The app's series (see module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "todos_requests",
            "Remote Persister and admin requests",
            ["op", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "todos_request_duration_seconds",
            "request latency",
            ["op"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.object_bytes = Gauge(
            "todos_object_storage_bytes",
            "content bytes stored per object",
            ["object"],
            registry=self.registry,
        )
        self.users = Gauge("todos_users", "lists saved at least once", registry=self.registry)
        self._objects: set[str] = set()

    def observe(self, op: str, status: int, seconds: float) -> None:
        self.requests.labels(op, str(status)).inc()
        self.latency.labels(op).observe(seconds)

    def stored(self, objects: dict[str, int]) -> None:
        for name, size in objects.items():
            if name in self._objects or len(self._objects) < MAX_OBJECTS:
                self._objects.add(name)
                self.object_bytes.labels(name).set(size)

    def user_count(self, count: int) -> None:
        self.users.set(count)
