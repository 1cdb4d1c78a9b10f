"""Host slots as Ray actors (a Host, its channel server and the HTTP gateway in one process),
and ``Cluster``, which launches the directory and the slots of one durable cluster.

Guarantees:
- ``Cluster.start`` creates (or finds) the directory and every slot; each slot starts itself
  (also after Ray restarts it); ``wait_ready`` returns once every partition has an owner and
  every slot serves HTTP. ``Cluster.stop`` asks every slot to stop (bounded), then kills the
  actors.
- The slot starts itself from ``__init__`` (Ray runs an async actor's ``__init__`` on the
  actor's running loop), so a slot restarted by Ray after a crash re-registers, reopens its
  partitions and serves again with nobody asking it to.
- Its channel listens on a Unix socket and on TCP at the node's Ray IP (ephemeral port; TLS with
  ``tls_cert``/``tls_key``) and registers one address carrying both and its Ray node id
  (``endpoint.Endpoint``).
- It serves a partition only while it holds the partition's lease and its ``flock``: calls for
  any other (partition, epoch) are answered ``not_owner`` without running anything. When its lease
  lapses (no successful renewal for ``lease_ttl``) it stops serving every partition.
- It never opens a partition whose grant names another node as its home (the data dir's
  ``home-id``, see ``durable.directory``): it logs an error and leaves it unserved, so an empty copy
  of a partition whose files are on another node is never served.
- The HTTP port is bound (``SO_REUSEPORT``, so several slots of one node share it) only once every
  partition of the cluster has an owner; ``/healthz`` then answers 200.
- ``stop()`` stops HTTP (requests in flight finish first, for up to ``HTTP_DRAIN`` s), commits,
  closes every database and releases every lock.
- Hibernatable WebSockets work across slots: the gateway's ``SocketRelay`` sends socket events
  to the slot owning the object (in process when it is this one) and that slot's pushes come
  back as PUSH frames (``relay.py``); a partition leaving a slot, or a slot stopping, closes its
  sockets with 1012 so clients reconnect.
- Planned moves (``durable.moves``): at each renewal the slot asks the directory for a move of
  one of its partitions and runs it in the background (the renewals go on); it receives the
  moves of other slots over its channel (``Arrivals``) and, woken by the source after a switch,
  renews at once to serve what it received. SIGTERM drains its node first (every partition
  homed there moves to other nodes, bounded by ``SIGTERM_DRAIN`` seconds), then stops it.
- The slot starts as every process running objects does (``env.start_host``) and serves HTTP
  as ``durable dev --in-process`` does (``server.GatewayServer``).

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
import sqlite3
import time
from pathlib import Path
from typing import Any

from durable.channel import (
    MOVE_KINDS,
    ChannelClient,
    ChannelServer,
    Frame,
    NotOwner,
    request_from,
    response_frames,
)
from durable.clock import SystemClock
from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig
from durable.cron import CronScheduler
from durable.dedicated import dedicated_for
from durable.directory import directory_actor_class, home_of
from durable.endpoint import Endpoint, client_tls, server_tls
from durable.env import Env, start_host
from durable.errors import DataDirInUse
from durable.gateway import Health, build_app
from durable.host import Host
from durable.ids import ObjectId
from durable.moves import Arrivals, Departures, Order, Outcome, drain_on_sigterm
from durable.relay import HolderLinks, SocketRelay, socket_reply
from durable.server import GatewayServer, bind
from durable.transport import ClusterTransport, LocalOwner, this_node
from durable.worker import Worker, load_worker

log = logging.getLogger("durable.ray_host")
LEASE_MARGIN = 0.9  # serve only until 90 % of the TTL after the renewal request left
SIGTERM_DRAIN = 25.0  # seconds SIGTERM waits for the node's partitions to move
HTTP_DRAIN = 5.0  # seconds ``stop`` lets HTTP requests in flight finish before the channel closes


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
        self.http: GatewayServer | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.crons: CronScheduler | None = None
        self._lease_until = 0.0  # monotonic time our leases end, as we must assume
        self.node = home_of(Path(config.data_dir))  # the node our partitions' files are on
        self.departures = Departures(Path(config.data_dir), directory)
        self.arrivals = Arrivals(Path(config.data_dir), lambda partition: partition in self.owned)
        self._moving: asyncio.Task[Outcome | None] | None = None

    async def start(self) -> None:
        cfg = self.config
        worker = load_worker(cfg.target, cfg.sys_path)

        def transport(host: Host) -> ClusterTransport:
            self.transport = ClusterTransport(
                self.directory, cfg.token, cfg.partitions, LocalOwner(host, self.owned),
                dedicated_for(worker, cfg), cfg.lease_ttl, cfg.channel, cfg.tls_cert,
            )  # fmt: skip
            return self.transport

        # No partition yet: the directory grants them once the channel below is registered.
        self.host, env = await start_host(
            worker, Path(cfg.data_dir), SystemClock(), partitions=cfg.partitions, owned=[],
            transport=transport,
        )  # fmt: skip
        self.server = ChannelServer(cfg.token, self._handle, HolderLinks(self.host))
        cfg.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        address = await self._listen()
        asked_at = time.monotonic()
        self._apply(await self.directory.register.remote(self.slot, address, self.node), asked_at)
        self._renewer = asyncio.ensure_future(self._renew_forever(address))
        await self._wait_complete()
        if self.slot == 0:  # one process fires the crons: slot 0 (restarted with it by Ray)
            self.crons = CronScheduler(worker, env, self.host.clock)
            self.crons.start()
        await self._serve_http(worker, env)

    async def _listen(self) -> str:
        """Listen on the Unix socket and on TCP at the node's IP (ephemeral port, TLS when
        configured); the one address registered carries both and this node's id."""
        import ray

        assert self.server is not None
        cfg = self.config
        unix = await self.server.start_unix(cfg.runtime_dir / f"host-{self.slot}.sock")
        tls = server_tls(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
        ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        tcp = await self.server.start_tcp(ip, 0, tls)
        node = ray.get_runtime_context().get_node_id()
        return str(Endpoint(node, unix.removeprefix("unix:"), tcp.removeprefix("tcp:")))

    # -- leases ---------------------------------------------------------------------------------
    def _apply(self, grants: dict[int, tuple[int, str]], asked_at: float) -> None:
        """Serve exactly ``grants`` (partition -> (epoch, home)) except partitions whose files
        live on another node; the leases run from when they were asked for (``asked_at``)."""
        assert self.host is not None
        grants = {p: grant for p, grant in grants.items() if self._at_home(p, grant[1])}
        # A partition moving away stays closed until the move ends (``Departures.run``).
        grants = {p: grant for p, grant in grants.items() if p not in self.departures.gates}
        for partition in [p for p in self.owned if p not in grants]:
            del self.owned[partition]
            self.host.remove_partition(partition)
            self.directory.release.remote(self.slot, [partition])
        for partition, (epoch, _) in grants.items():
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

    def _at_home(self, partition: int, home: str) -> bool:
        """Opening a partition that lives elsewhere would serve an empty copy of it: refuse."""
        if home == self.node:
            return True
        log.error("partition %d lives on node %s, not on this one (%s): refused",
                  partition, home, self.node)  # fmt: skip
        return False

    async def _renew_forever(self, address: str) -> None:
        period = self.config.lease_ttl / 3
        while True:
            await asyncio.sleep(period)
            asked_at = time.monotonic()
            try:
                grants = await self.directory.renew.remote(self.slot)
                if grants is None:  # the directory restarted and forgot us
                    grants = await self.directory.register.remote(self.slot, address, self.node)
                self._apply(grants, asked_at)
                self._take_move()
            except Exception:
                log.warning("lease renewal failed", exc_info=True)
                if time.monotonic() > self._lease_until:
                    self._apply({}, asked_at)  # our leases lapsed: stop serving everything

    async def _wait_complete(self) -> None:
        while not (await self.directory.status.remote())["complete"]:
            await asyncio.sleep(0.05)

    # -- the channel ----------------------------------------------------------------------------
    async def _handle(self, frame: list[Any]) -> list[list[Any]]:
        if frame[0] in MOVE_KINDS:  # a partition moving here from another slot
            return await self.arrivals.receive(frame)
        kind, rid, partition, epoch, ns, raw, name = frame[:7]
        await self.departures.settled(partition)  # moving: wait, then not_owner or run here
        if self.owned.get(partition) != epoch or self.host is None:
            raise NotOwner(partition, epoch)
        if time.monotonic() > self._lease_until:
            raise NotOwner(partition, epoch)  # lapsed (e.g. we were paused): maybe granted on
        oid = ObjectId(bytes(raw), ns, name)
        if kind == Frame.CALL:
            return [[Frame.REPLY, rid, await self.host.call(oid, frame[7], bytes(frame[8]))]]
        if kind == Frame.SOCKET:
            return await socket_reply(self.host, frame)
        response = await self.host.fetch(oid, request_from(frame[7], bytes(frame[8])))
        return response_frames(rid, response)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _serve_http(self, worker: Worker, env: Env) -> None:
        # Any slot's gateway holds sockets of any object: the relay calls this slot's Host in
        # process and other slots over the channel (relay.py). No gateway is a sole holder:
        # stale socket rows are dropped as partitions open (SocketRegistry.opened).
        assert self.host is not None and self.transport is not None
        app = build_app(worker, env, self.health, SocketRelay(self.host, self.transport))
        # The same front door as in process: connection limits, workerd's WebSocket close
        # handshake and message limit (``server_config``); the slots of a node share the port.
        host, port = self.config.http_host, self.config.http_port
        self.http = GatewayServer(app, host, port, access_log=False)
        await self.http.start(bind(host, port, reuse_port=True))

    async def stop(self) -> None:
        self.health.ready = False
        if self.crons is not None:
            await self.crons.close()
        if self.http is not None:
            self.http.exit()
            # Requests in flight still call objects over this slot's channel clients: let them
            # finish (bounded) before those close, or their callers get ConnectionLost (500).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HTTP_DRAIN):
                    await asyncio.shield(self.http.wait())
        if self._renewer is not None:
            self._renewer.cancel()
        if self._moving is not None:  # aborted at the source; the directory ends it
            self._moving.cancel()
            await asyncio.gather(self._moving, return_exceptions=True)
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
        if self.http is not None:
            await self.http.wait()

    # -- planned moves (``durable.moves``) ---------------------------------------------------
    def _take_move(self) -> None:
        """Run the next move the directory planned for one of our partitions, in the
        background (a copy may outlast a renewal period); one at a time."""
        if self._moving is None or self._moving.done():
            self._moving = asyncio.ensure_future(self._move_next())

    async def _move_next(self) -> Outcome | None:
        try:
            handed = await self.directory.next_move.remote(self.slot)
        except Exception:  # the directory restarts: ask again at the next renewal
            log.warning("no planned move could be fetched", exc_info=True)
            return None
        if handed is None or self.host is None:
            return None
        order = Order(*handed)
        cfg = self.config
        dial = Endpoint.parse(order.address).dial(this_node(), cfg.channel)
        client = ChannelClient(
            dial, cfg.token, tls=client_tls(cfg.tls_cert) if cfg.tls_cert else None
        )
        try:
            outcome = await self.departures.run(self.host, self.owned, order, client)
        finally:
            await client.close()
        if outcome is Outcome.SWITCHED:
            self._wake(order.target)
        return outcome

    def _wake(self, slot: int) -> None:
        """Tell the target slot to renew now: it serves the partition without waiting for its
        next renewal (calls for it meanwhile get not_owner and retry)."""
        import ray

        with contextlib.suppress(ValueError):  # not found: its renewal picks it up
            ray.get_actor(f"durable-host-{slot}", namespace=RAY_NAMESPACE).renew_now.remote()

    async def renew_now(self) -> None:
        asked_at = time.monotonic()
        grants = await self.directory.renew.remote(self.slot)
        if grants is not None:
            self._apply(grants, asked_at)

    async def drain(self, timeout: float = SIGTERM_DRAIN) -> int:
        """Move every partition of this slot's node to other nodes, one at a time, for at most
        ``timeout`` seconds; the partitions this slot still serves."""
        try:
            await self.directory.drain.remote(self.node)
        except ValueError as error:  # no other node: stop as without a drain
            log.warning("not drained: %s", error)
            return len(self.owned)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.owned:
                    self._take_move()
                    assert self._moving is not None
                    if await asyncio.shield(self._moving) is None:
                        await asyncio.sleep(0.1)  # another slot's move runs first
        return len(self.owned)

    async def drain_and_stop(self) -> None:
        """SIGTERM: drain (bounded), then stop as ``stop`` does."""
        left = await self.drain()
        log.info("SIGTERM: drained, %d partitions left here; stopping", left)
        await self.stop()

    def statistics(self) -> dict[str, Any]:
        assert self.host is not None and self.server is not None
        return {
            "host": self.host.statistics(),
            "channel": self.server.statistics(),
            "collector": self.http.collector.statistics() if self.http else None,
            "owned": dict(self.owned),
        }


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
            drain_on_sigterm(
                asyncio.get_running_loop(), self.slot.drain_and_stop, SIGTERM_DRAIN + 5
            )

        async def ready(self) -> dict[str, Any]:
            await asyncio.shield(self.started)
            return {
                "owned": dict(self.slot.owned),
                "address": self.slot.server and self.slot.server.address,
                "healthy": self.slot.health.ready,  # what its gateway's /healthz answers
                "pid": os.getpid(),
            }

        async def stop(self) -> None:
            await self.slot.stop()

        async def statistics(self) -> dict[str, Any]:
            return self.slot.statistics()

        async def renew_now(self) -> None:
            await self.slot.renew_now()

        async def drain(self, timeout: float = SIGTERM_DRAIN) -> int:
            return await self.slot.drain(timeout)

        async def pid(self) -> int:
            """This slot's process id (crash tests kill it with SIGKILL)."""
            return os.getpid()

    return HostActor


class Cluster:
    """Launches (or finds) the directory and the host slots of one durable cluster on Ray."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.directory: Any = None
        self.hosts: list[Any] = []

    def start(self) -> None:
        self.directory = (
            directory_actor_class()
            .options(name=DIRECTORY, namespace=RAY_NAMESPACE, get_if_exists=True)
            .remote(self.config.partitions, self.config.info(), self.config.lease_ttl)
        )
        host_cls = host_actor_class()
        self.hosts = [
            # SPREAD: one gateway and a share of the partitions on as many nodes as there are
            host_cls.options(
                name=f"durable-host-{slot}",
                namespace=RAY_NAMESPACE,
                get_if_exists=True,
                scheduling_strategy="SPREAD",
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
