"""A host slot as a Ray actor: a Host, its channel server and the HTTP gateway in one process.

Guarantees:
- The slot starts itself from ``__init__`` (Ray runs an async actor's ``__init__`` on the
  actor's running loop), so a slot restarted by Ray after a crash re-registers, reopens its
  partitions and serves again with nobody asking it to.
- It serves a partition only while it holds the partition's lease and its ``flock``: calls for
  any other (partition, epoch) are answered ``not_owner`` without running anything. When its lease
  lapses (no successful renewal for ``lease_ttl``) it stops serving every partition.
- The HTTP port is bound (``SO_REUSEPORT``, so several slots of one node share it) only once every
  partition of the cluster has an owner; ``/healthz`` then answers 200.
- ``stop()`` stops HTTP, commits, closes every database and releases every lock.

Does not guarantee: a call already running when its partition moves away completes or fails
with ``ObjectReset``; it is not moved with the partition.

On failure: a partition whose lock is still held (its previous owner is shutting down) is retried
on the next renewal; meanwhile callers get ``not_owner`` and re-resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import uvicorn

from durable.channel import (
    ChannelServer,
    Frame,
    NotOwner,
    request_from,
    response_frames,
)
from durable.clock import SystemClock
from durable.cluster import (
    DIRECTORY,
    RAY_NAMESPACE,
    ClusterConfig,
    ClusterTransport,
    LocalOwner,
    dedicated_for,
)
from durable.collector import Collector
from durable.connection import build_env, read_meta
from durable.cron import CronScheduler
from durable.errors import DataDirInUse
from durable.gateway import Health, build_app, server_config
from durable.host import Host
from durable.ids import ObjectId
from durable.worker import Worker, load_worker

log = logging.getLogger("durable.ray_host")
LEASE_MARGIN = 0.9  # serve only until 90 % of the TTL after the renewal request left


class HostSlot:
    """The body of a host slot actor (plain class, so it can be tested and profiled without Ray)."""

    def __init__(self, slot: int, config: ClusterConfig, directory: Any) -> None:
        self.slot = slot
        self.config = config
        self.directory = directory
        self.owned: dict[int, int] = {}
        self.health = Health()
        self.host: Host | None = None
        self.transport: ClusterTransport | None = None
        self.server: ChannelServer | None = None
        self._http: Any = None
        self._http_task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.crons: CronScheduler | None = None
        self.collector = Collector()
        self._lease_until = 0.0  # monotonic time our leases end, as we must assume

    async def start(self) -> None:
        cfg = self.config
        worker = load_worker(cfg.target, cfg.sys_path)
        read_meta(Path(cfg.data_dir), cfg.partitions)
        self.host = Host.for_worker(worker, Path(cfg.data_dir), [], cfg.partitions, SystemClock())
        await self.host.open()
        local = LocalOwner(self.host, self.owned)
        self.transport = ClusterTransport(
            self.directory, cfg.token, cfg.partitions, local, dedicated_for(worker, cfg),
            cfg.lease_ttl,
        )  # fmt: skip
        env = build_env(worker, self.transport)
        self.host.env = env
        self.server = ChannelServer(cfg.token, self._handle)
        cfg.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        address = await self.server.start_unix(cfg.runtime_dir / f"host-{self.slot}.sock")
        asked_at = time.monotonic()
        self._apply(await self.directory.register.remote(self.slot, address), asked_at)
        self._renewer = asyncio.ensure_future(self._renew_forever(address))
        await self._wait_complete()
        if self.slot == 0:  # one process fires the crons: slot 0 (restarted with it by Ray)
            self.crons = CronScheduler(worker, env, self.host.clock)
            self.crons.start()
        await self._serve_http(worker, env)
        # A Ray worker tracks ~72k objects of its own: full collections on a schedule only.
        self.collector.start()

    # -- leases ---------------------------------------------------------------------------------
    def _apply(self, grants: dict[int, int], asked_at: float) -> None:
        """Serve exactly ``grants``; the leases run from when they were asked for (``asked_at``)."""
        assert self.host is not None
        for partition in [p for p in self.owned if p not in grants]:
            del self.owned[partition]
            self.host.remove_partition(partition)
            self.directory.release.remote(self.slot, [partition])
        for partition, epoch in grants.items():
            try:
                self.host.add_partition(partition)
            except DataDirInUse:
                continue  # the previous owner still closes it: try again at the next renewal
            except (OSError, sqlite3.Error):  # e.g. a read-only disk: keep serving the others
                log.warning("partition %d cannot be opened; retried at the next renewal",
                            partition, exc_info=True)  # fmt: skip
                continue
            self.owned[partition] = epoch
        # The directory counts the TTL from its reply; counting from our request, minus a
        # margin, makes our view of the lease end first.
        self._lease_until = asked_at + self.config.lease_ttl * LEASE_MARGIN

    async def _renew_forever(self, address: str) -> None:
        period = self.config.lease_ttl / 3
        while True:
            await asyncio.sleep(period)
            asked_at = time.monotonic()
            try:
                grants = await self.directory.renew.remote(self.slot)
                if grants is None:  # the directory restarted and forgot us
                    grants = await self.directory.register.remote(self.slot, address)
                self._apply(grants, asked_at)
            except Exception:
                log.warning("lease renewal failed", exc_info=True)
                if time.monotonic() > self._lease_until:
                    self._apply({}, asked_at)  # our leases lapsed: stop serving everything

    async def _wait_complete(self) -> None:
        while not (await self.directory.status.remote())["complete"]:
            await asyncio.sleep(0.05)

    # -- the channel ----------------------------------------------------------------------------
    async def _handle(self, frame: list[Any]) -> list[list[Any]]:
        kind, rid, partition, epoch, ns, raw, name = frame[:7]
        if self.owned.get(partition) != epoch or self.host is None:
            raise NotOwner(partition, epoch)
        if time.monotonic() > self._lease_until:
            raise NotOwner(partition, epoch)  # lapsed (e.g. we were paused): maybe granted on
        oid = ObjectId(bytes(raw), ns, name)
        if kind == Frame.CALL:
            return [[Frame.REPLY, rid, await self.host.call(oid, frame[7], bytes(frame[8]))]]
        response = await self.host.fetch(oid, request_from(frame[7], bytes(frame[8])))
        return response_frames(rid, response)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _serve_http(self, worker: Worker, env: Any) -> None:
        # Sockets live in the slot's own Host; across slots they need the channel's push frames
        # (TODO(#5)), so a single-slot cluster (the default on 2 cores) is their sole holder.
        app = build_app(worker, env, self.health, self.host, sole_holder=self.config.slots == 1)
        # The same front door as in process: connection limits, workerd's WebSocket close
        # handshake and message limit (``server_config``); the socket below replaces host/port.
        config = server_config(app, self.config.http_host, self.config.http_port, access_log=False)
        self._http = uvicorn.Server(config)
        sock = _reuseport_socket(self.config.http_host, self.config.http_port)
        self._http_task = asyncio.ensure_future(self._run_http(sock))
        while not self._http.started and not self._http_task.done():
            await asyncio.sleep(0.01)
        self.health.ready = True

    async def _run_http(self, sock: socket.socket) -> None:
        try:
            await self._http.serve(sockets=[sock])
        except SystemExit:  # uvicorn exits on startup errors; that would kill the actor
            log.error("the HTTP server of slot %d stopped", self.slot)

    async def stop(self) -> None:
        self.health.ready = False
        self.collector.stop()
        if self.crons is not None:
            await self.crons.close()
        if self._http is not None:
            self._http.should_exit = True
        if self._renewer is not None:
            self._renewer.cancel()
        if self.server is not None:
            await self.server.close()
            with contextlib.suppress(OSError):
                self.config.runtime_dir.rmdir()  # the last slot of the cluster removes it
        if self.transport is not None:
            await self.transport.close()
        if self.host is not None:
            released = list(self.owned)
            self.owned.clear()
            await self.host.close()
            self.directory.release.remote(self.slot, released)
        if self._http_task is not None:
            await asyncio.gather(self._http_task, return_exceptions=True)

    def statistics(self) -> dict[str, Any]:
        assert self.host is not None and self.server is not None
        return {
            "host": self.host.statistics(),
            "channel": self.server.statistics(),
            "collector": self.collector.statistics(),
            "owned": dict(self.owned),
        }


def _reuseport_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, so accepted sockets get TCP_NODELAY (see ``cli._bind``).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def host_actor_class() -> Any:
    """The Ray actor class (built lazily so importing durable never imports Ray)."""
    import ray

    remote: Any = ray.remote  # Ray's typed overloads do not cover every actor option

    @remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=1000)
    class HostActor:
        def __init__(self, slot: int, config: ClusterConfig) -> None:
            directory = ray.get_actor(DIRECTORY, namespace=RAY_NAMESPACE)
            self.slot = HostSlot(slot, config, directory)
            self.started = asyncio.ensure_future(self.slot.start())

        async def ready(self) -> dict[str, Any]:
            await asyncio.shield(self.started)
            return {
                "owned": dict(self.slot.owned),
                "address": self.slot.server and self.slot.server.address,
            }

        async def stop(self) -> None:
            await self.slot.stop()

        async def statistics(self) -> dict[str, Any]:
            return self.slot.statistics()

        async def pid(self) -> int:
            """This slot's process id (crash tests kill it with SIGKILL)."""
            return os.getpid()

    return HostActor
