"""``durable.connect(worker)``: the same ``env`` a route handler gets, for scripts and tests.

Guarantees:
- ``address=None`` runs every partition in this process on ``data_dir`` (resolved against the
  current directory at call time), so two ``connect`` calls one after the other see the same data.
- The data dir's partition count is fixed when it is created (``meta.json``); later opens use it.
- On exit everything is flushed and closed: locks, databases and descriptors are released.
- A data dir held by another process raises ``DataDirInUse`` (partition ``flock``s).
- ``address="auto"`` or ``"HOST:PORT"``: a client of a running cluster (``durable serve``): calls
  travel over the hosts' channels (``transport.ClusterTransport``), or to a dedicated object's
  own actor; no object runs in this process. Ray is started for the connection if this process
  has not started it already, and shut down on exit.

On failure: no running durable cluster at ``address`` raises Ray's error for the missing
directory actor (``durable-directory``) before anything is yielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from durable.clock import Clock, SystemClock
from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig
from durable.cron import CronScheduler
from durable.database import databases_of
from durable.dedicated import dedicated_for
from durable.env import Env, build_env, start_host
from durable.transport import ClusterTransport
from durable.worker import Worker


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
        async with connect_cluster(worker, address) as env:
            yield env
        return
    clock = clock or SystemClock()
    host, env = await start_host(worker, Path(data_dir).resolve(), clock)
    crons = CronScheduler(worker, env, clock)
    try:
        crons.start()
        yield env
    finally:
        await crons.close()
        await host.close()
        for database in databases_of(env):
            database.close()


@asynccontextmanager
async def connect_cluster(worker: Worker, address: str) -> AsyncIterator[Env]:
    """``connect(worker, address=...)``: an env whose stubs reach a running cluster's hosts."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)
    try:
        directory = ray.get_actor(DIRECTORY, namespace=RAY_NAMESPACE)
        info = await directory.status.remote()
        config = ClusterConfig.from_info(info)
        transport = ClusterTransport(
            directory, config.token, config.partitions, dedicated=dedicated_for(worker, config),
            lease_ttl=config.lease_ttl, channel=config.channel, tls_cert=config.tls_cert,
        )  # fmt: skip
        env = build_env(worker, transport)
        try:
            yield env
        finally:
            await transport.close()
            for database in databases_of(env):
                database.close()
    finally:
        if started:
            ray.shutdown()
