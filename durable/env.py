"""``env``: a worker's bindings, and the start-up that gives a Host its env.

Every process that runs objects starts its Host the same way (``start_host``): read the data
dir's ``meta.json`` (creating it for a new data dir), build a ``Host`` for the worker's bindings
(``host_for``), open its partitions, then build the ``env`` its objects and cron handlers see
and hand it to the host. ``connect(address=None)`` (all partitions, in process), a Ray host slot
(partitions granted later by the directory) and a dedicated object's actor (one partition of
its own) all call it; only the transport behind the stubs differs.

Guarantees:
- A data dir's partition count is fixed when ``meta.json`` is first written (atomically: a
  temporary file renamed over it); every later start uses that count, whatever it asks for.
- The host gets its env as soon as ``open`` returns, before the start-up awaits anything else,
  so its first events (alarms re-armed by ``open``) see it.
- ``env`` holds one ``Namespace`` per object binding, one ``Database`` per database binding and
  the worker's vars, as given. Its databases are the caller's to close (``databases_of``).

Does not guarantee: that another process does not hold the data dir: the partitions' ``flock``s
decide that (``DataDirInUse``, raised by ``open``).

On failure: an unknown data format raises ``RuntimeError`` before anything is opened; if
building the env fails, the opened host is closed again before the error propagates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durable.clock import Clock
from durable.database import Database
from durable.host import Host, NamespaceConfig
from durable.namespace import Namespace, Transport
from durable.worker import Worker

FORMAT_VERSION = 1
DEFAULT_PARTITIONS = 16


class Env:
    """The bindings of a worker: ``env.COUNTER`` (Namespace), databases and vars."""

    def __init__(self, bindings: dict[str, Any]) -> None:
        self.__dict__.update(bindings)

    def __repr__(self) -> str:
        return f"Env({', '.join(sorted(self.__dict__))})"


def read_meta(data_dir: Path, partitions: int = DEFAULT_PARTITIONS) -> dict[str, Any]:
    """Read ``meta.json``, creating it (format version, partition count) for a new data dir."""
    path = data_dir / "meta.json"
    if path.exists():
        meta: dict[str, Any] = json.loads(path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise RuntimeError(f"{path}: unknown data format {meta.get('format')!r}")
        return meta
    data_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "partitions": partitions, "created": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(path)
    return meta


def build_env(worker: Worker, transport: Transport) -> Env:
    bindings: dict[str, Any] = dict(worker.vars)
    for binding in worker.objects:
        bindings[binding] = Namespace(binding, transport, worker.limits_for(binding))
    for binding, url in worker.databases.items():
        bindings[binding] = Database.from_url(url)  # env.DB (D1-like), closed by the caller
    return Env(bindings)


def host_for(
    worker: Worker, data_dir: Path, partitions: list[int], count: int, clock: Clock
) -> Host:
    """A host for ``worker``'s bindings with its limits, idle timeouts and memory budget."""
    namespaces = {b: NamespaceConfig(c, worker.limits_for(b)) for b, c in worker.objects.items()}
    return Host(data_dir, partitions, count, namespaces, clock,
                idle_timeout=worker.idle_timeout, idle_timeouts=worker.idle_timeouts,
                max_active_objects=worker.max_active_objects)  # fmt: skip


async def start_host(
    worker: Worker,
    data_dir: Path,
    clock: Clock,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    owned: list[int] | None = None,
    transport: Callable[[Host], Transport] | None = None,
) -> tuple[Host, Env]:
    """Open a Host for ``worker`` on ``data_dir`` and give it its env; returns both.

    ``partitions``: the count of a new data dir. ``owned``: the partitions the host opens now
    (None: every one). ``transport(host)``: what the env's stubs call through (None: the host
    itself, every object in this process).
    """
    count = int(read_meta(data_dir, partitions)["partitions"])
    host = host_for(worker, data_dir, list(range(count)) if owned is None else owned, count, clock)
    await host.open()
    try:
        env = build_env(worker, host if transport is None else transport(host))
    except BaseException:
        await host.close()
        raise
    host.env = env
    return host, env
