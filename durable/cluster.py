"""Placement on Ray: the cluster's configuration, its launcher, and the transport stubs use.

Objects map to a fixed number of partitions (``ObjectId.partition``); partitions map to host
slots (named Ray actors ``durable-host-<n>``, ``max_restarts=-1``, ``num_cpus=0``) by the
directory's rendezvous hashing and leases (``directory.py``); requests travel over the channel
(``channel.py``), never as one Ray call each. A binding with ``placement="dedicated"`` gets one
Ray actor per object instead: the naive baseline, one Ray call per request.

Guarantees:
- ``ClusterTransport`` sends a call to the partition's owner at the epoch it resolved; on
  ``not_owner``, or when the connection failed before the frame was written, it re-resolves
  through the directory and resends (bounded); a call in flight when a connection drops fails
  with ``ConnectionLost`` and is never resent. Calls for partitions owned by this very process
  are direct calls into its Host (no socket, no msgpack).
- One channel connection per host per process.
- ``Cluster.start`` creates (or finds) the directory and every slot; each slot starts itself
  (also after Ray restarts it); ``wait_ready`` returns once every partition has an owner and
  every slot serves HTTP.

Does not guarantee: one durable cluster per Ray cluster (actors have fixed names in the Ray
namespace ``durable``).

On failure: no reachable owner within 1.5 lease TTLs → ``Unavailable`` (retryable, nothing ran).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from starlette.requests import Request

from durable.channel import (
    ChannelClient,
    Frame,
    NotOwner,
    NotSent,
    answer,
    fetch_head,
    response_from,
)
from durable.connection import Env, build_env, read_meta
from durable.database import databases_of
from durable.dedicated import Dedicated
from durable.directory import LEASE_TTL
from durable.errors import Unavailable
from durable.host import Host
from durable.ids import ObjectId
from durable.namespace import FetchResponse
from durable.worker import Worker, target_paths

RAY_NAMESPACE = "durable"
DIRECTORY = "durable-directory"


@dataclass(frozen=True)
class ClusterConfig:
    """Everything a host slot needs to start itself (passed to its Ray actor)."""

    target: str
    data_dir: str
    sys_path: tuple[str, ...]
    partitions: int
    slots: int
    http_host: str = "127.0.0.1"
    http_port: int = 8787
    token: str = ""
    lease_ttl: float = LEASE_TTL
    placement: tuple[tuple[str, str], ...] = ()

    @property
    def cluster(self) -> str:
        return hashlib.sha256(self.data_dir.encode()).hexdigest()[:12]

    @property
    def runtime_dir(self) -> Path:
        """Short, per data dir: AF_UNIX paths are limited to 107 bytes."""
        return Path(f"/tmp/durable-{os.getuid()}") / self.cluster

    def info(self) -> dict[str, Any]:
        return {**asdict(self), "cluster": self.cluster}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ClusterConfig:
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in info.items() if k in names}
        values["sys_path"] = tuple(values.get("sys_path", ()))
        values["placement"] = tuple(tuple(p) for p in values.get("placement", ()))
        return cls(**values)


def dedicated_for(worker: Worker, config: ClusterConfig) -> Dedicated | None:
    """The per-object actors of the worker's ``placement="dedicated"`` bindings, if any."""
    bindings = {b for b, where in worker.placement.items() if where == "dedicated"}
    return Dedicated(config, bindings) if bindings else None


def default_slots() -> int:
    """One host per CPU left after the gateway and Ray's daemons (1 on a 2-core machine)."""
    return max(1, (os.cpu_count() or 2) - 1)


def new_token() -> str:
    return secrets.token_hex(16)


@dataclass
class LocalOwner:
    """The Host of this process and the partitions it owns now, with their epochs."""

    host: Host
    owned: dict[int, int]


class ClusterTransport:
    """Stubs' transport on a cluster: resolve the partition's owner, send over its channel."""

    def __init__(
        self,
        directory: Any,
        token: str,
        partitions: int,
        local: LocalOwner | None = None,
        dedicated: Dedicated | None = None,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self._directory = directory
        self._token = token
        self._partitions = partitions
        self._local = local
        self._dedicated = dedicated
        self._table: dict[int, tuple[int, str]] = {}
        self._clients: dict[str, ChannelClient] = {}
        self._refreshing: asyncio.Future[None] | None = None
        # How long a call waits for a partition to get a reachable owner: a restart or a
        # move takes about one lease TTL.
        self._patience = 1.5 * lease_ttl

    async def call(self, oid: ObjectId, method: str, payload: bytes) -> bytes:
        if self._dedicated is not None and self._dedicated.handles(oid):
            return await self._dedicated.call(oid, method, payload)
        local = self._local_host(oid)
        if local is not None:
            return await local.call(oid, method, payload)
        frame = await self._send(oid, [Frame.CALL], [method, payload], None)
        return bytes(frame[2])

    async def fetch(self, oid: ObjectId, request: Request) -> FetchResponse:
        if self._dedicated is not None and self._dedicated.handles(oid):
            return await self._dedicated.fetch(oid, request)
        local = self._local_host(oid)
        if local is not None:
            return await local.fetch(oid, request)
        body = await request.body()
        frame = await self._send(oid, [Frame.FETCH], [fetch_head(request)], body)
        return response_from(frame)

    def _local_host(self, oid: ObjectId) -> Host | None:
        if self._local is not None and oid.partition(self._partitions) in self._local.owned:
            return self._local.host
        return None

    async def _send(
        self, oid: ObjectId, kind: list[Any], tail: list[Any], body: bytes | None
    ) -> list[Any]:
        partition = oid.partition(self._partitions)
        deadline = time.monotonic() + self._patience
        delay = 0.01
        while True:
            entry = self._table.get(partition)
            if entry is None:
                await self._refresh()
                entry = self._table.get(partition)
            if entry is not None:
                epoch, address = entry
                frame = [*kind, partition, epoch, oid.namespace, oid.raw, oid.name, *tail]
                try:
                    reply = await self._client(address).request(frame, body)
                    return answer(reply)
                except (NotOwner, NotSent):
                    # Nothing ran (not_owner), or nothing was written (connect failed): resend.
                    self._table.pop(partition, None)
            if time.monotonic() + delay > deadline:
                raise Unavailable(partition, self._patience)
            await asyncio.sleep(delay)  # the owner restarts or the partition moves: back off
            delay = min(delay * 2, 0.5)

    def _client(self, address: str) -> ChannelClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = ChannelClient(address, self._token)
        return client

    async def _refresh(self) -> None:
        """Re-read the directory's table; concurrent callers share one Ray call."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_table())
        try:
            await asyncio.shield(self._refreshing)
        finally:
            self._refreshing = None

    async def _read_table(self) -> None:
        table = await self._directory.table.remote()
        self._table = {int(p): (int(e), str(a)) for p, (e, a) in table.items()}

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients.values()))
        self._clients.clear()


class Cluster:
    """Launches (or finds) the directory and the host slots of one durable cluster on Ray."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.directory: Any = None
        self.hosts: list[Any] = []

    def start(self) -> None:
        from durable.directory import _actor_class
        from durable.ray_host import host_actor_class

        directory_cls = _actor_class()
        self.directory = directory_cls.options(
            name=DIRECTORY, namespace=RAY_NAMESPACE, get_if_exists=True
        ).remote(self.config.partitions, self.config.info(), self.config.lease_ttl)
        host_cls = host_actor_class()
        self.hosts = [
            host_cls.options(
                name=f"durable-host-{slot}", namespace=RAY_NAMESPACE, get_if_exists=True
            ).remote(slot, self.config)
            for slot in range(self.config.slots)
        ]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(host.ready.remote() for host in self.hosts))

    async def stop(self, timeout: float = 1.5) -> None:
        """Ask every slot to flush and close (bounded), then kill the actors."""
        import ray

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(h.stop.remote() for h in self.hosts), return_exceptions=True)
        except TimeoutError:
            pass
        for actor in [*self.hosts, self.directory]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self.hosts = []
        self.directory = None


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
            lease_ttl=config.lease_ttl,
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


async def serve_cluster(
    target: str,
    http_host: str,
    http_port: int,
    data_dir: Path,
    address: str | None,
    *,
    slots: int | None = None,
    partitions: int = 16,
    ready: asyncio.Event | None = None,
) -> None:
    """``durable dev``/``serve``: start (or join) Ray, launch the cluster, serve until a signal.

    SIGTERM/SIGINT: every slot stops HTTP, commits and closes (bounded), then Ray stops.
    """
    import ray

    root = data_dir.resolve()
    meta = read_meta(root, partitions)
    paths = target_paths(target.partition(":")[0] if target.endswith(".py") else target)
    pythonpath = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    ray.init(
        address=address or "local",  # dev: a private local Ray, never a cluster by accident
        namespace=RAY_NAMESPACE,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "RAY_worker_niceness": "0"}},
        log_to_driver=True,
    )
    config = ClusterConfig(
        target=target, data_dir=str(root), sys_path=tuple(paths),
        partitions=int(meta["partitions"]), slots=slots or default_slots(),
        http_host=http_host, http_port=http_port, token=new_token(),
    )  # fmt: skip
    cluster = Cluster(config)
    try:
        cluster.start()
        await cluster.wait_ready()
        print(f"durable: serving {target} on http://{http_host}:{http_port}", flush=True)
        if ready is not None:
            ready.set()
        await _until_signal()
    finally:
        await cluster.stop()
        ray.shutdown()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
