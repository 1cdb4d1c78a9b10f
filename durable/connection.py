"""``durable.connect(worker)``: the same ``env`` a route handler gets, for scripts and tests.

Guarantees:
- ``address=None`` runs every partition in this process on ``data_dir`` (resolved against the
  current directory at call time), so two ``connect`` calls one after the other see the same data.
- The data dir's partition count is fixed when it is created (``meta.json``); later opens use it.
- On exit everything is flushed and closed: locks, databases and descriptors are released.
- A data dir held by another process raises ``DataDirInUse`` (partition ``flock``s).

- ``address="auto"`` or ``"HOST:PORT"``: a client of a running cluster (``durable serve``): calls
  travel over the hosts' channels; nothing runs in this process (``cluster.connect_cluster``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from durable.clock import Clock, SystemClock
from durable.cron import CronScheduler
from durable.database import Database, databases_of
from durable.host import Host
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
        bindings[binding] = Database.from_url(url)  # env.DB (D1-like), closed by connect
    return Env(bindings)


@asynccontextmanager
async def connect(
    worker: Worker,
    *,
    data_dir: str | Path = ".durable",
    address: str | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Env]:
    """Run ``worker``'s objects in this process (``address=None``) or reach a running cluster."""
    if address is not None:
        from durable.cluster import connect_cluster

        async with connect_cluster(worker, address) as env:
            yield env
        return
    root = Path(data_dir).resolve()
    meta = read_meta(root)
    count = int(meta["partitions"])
    clock = clock or SystemClock()
    host = Host.for_worker(worker, root, list(range(count)), count, clock)
    await host.open()
    env = build_env(worker, host)
    host.env = env
    crons = CronScheduler(worker, env, clock)
    try:
        crons.start()
        yield env
    finally:
        await crons.close()
        await host.close()
        for database in databases_of(env):
            database.close()
