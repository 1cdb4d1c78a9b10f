"""How stubs reach objects on a cluster: the partition's owner over its channel, or the object's
own actor (``placement="dedicated"``), or this process's Host when it owns the partition.

Guarantees:
- ``ClusterTransport`` sends a call to the partition's owner at the epoch it resolved; on
  ``not_owner``, or when the connection failed before the frame was written, it re-resolves
  through the directory and resends (bounded); a call in flight when a connection drops fails
  with ``ConnectionLost`` and is never resent. Calls for partitions owned by this very process
  are direct calls into its Host (no socket, no msgpack).
- A host on this process's Ray node is dialled on its Unix socket, others over TCP (TLS when the
  cluster has ``tls_cert``); ``channel="tcp"`` forces TCP everywhere (``Endpoint.dial``).
- One channel connection per host per process; concurrent callers that find no owner share one
  read of the directory's table.
- Hibernatable WebSockets (``relay.py``): once ``hold_sockets`` is called, every connection
  attaches this process's gateway as a holder; a socket event is routed and resent as a call.

Does not guarantee: knowing whether a call that failed with ``ConnectionLost`` ran: it may
have; it is not resent, and its caller decides.

On failure: no reachable owner within 1.5 lease TTLs → ``Unavailable`` (retryable, nothing ran).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from durable import messages
from durable.channel import (
    ChannelClient,
    Frame,
    NotOwner,
    NotSent,
    answer,
    fetch_head,
    response_from,
)
from durable.directory import LEASE_TTL
from durable.endpoint import Endpoint, client_tls
from durable.errors import Unavailable
from durable.host import Host
from durable.ids import ObjectId
from durable.namespace import FetchResponse

if TYPE_CHECKING:
    # Type only: a dedicated object's actor calls other objects through a ClusterTransport.
    from durable.dedicated import Dedicated


LostHandler = Callable[[ChannelClient], None]  # a holder's connection to a host ended
Holding = tuple[str, Callable[[list[Any]], None], LostHandler]


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
        channel: str = "auto",
        tls_cert: str = "",
    ) -> None:
        self._directory = directory
        self._token = token
        self._partitions = partitions
        self._local = local
        self._dedicated = dedicated
        self._table: dict[int, tuple[int, str]] = {}
        self._clients: dict[str, ChannelClient] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._node = this_node()
        self._channel = channel
        self._tls: ssl.SSLContext | None = client_tls(tls_cert) if tls_cert else None
        # How long a call waits for a partition to get a reachable owner: a restart or a
        # move takes about one lease TTL.
        self._patience = 1.5 * lease_ttl
        self._holding: Holding | None = None  # hold_sockets(...)

    async def invoke(
        self,
        oid: ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        limit: int,
    ) -> Any:
        if self._dedicated is not None and self._dedicated.handles(oid):
            return await self._dedicated.invoke(oid, method, args, kwargs, limit)
        local = self._local_host(oid)
        if local is not None:
            return await local.invoke(oid, method, args, kwargs, limit)
        return await messages.call_encoded(self.call, oid, method, args, kwargs, limit)

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
        """The connection to a host by its registered address (``Endpoint``), made once."""
        client = self._clients.get(address)
        if client is None:
            dial = Endpoint.parse(address).dial(self._node, self._channel)
            client = ChannelClient(dial, self._token, tls=self._tls)
            self._clients[address] = client
            if self._holding is not None:
                self._hold(client)
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

    # -- hibernatable WebSockets across slots (relay.py) ----------------------------------------
    def hold_sockets(
        self, holder: str, on_push: Callable[[list[Any]], None], on_lost: LostHandler
    ) -> None:
        """Attach ``holder`` on every connection to a host: now on those open, and first thing
        (the greeting after the hello) on each opened later."""
        self._holding = (holder, on_push, on_lost)
        for client in self._clients.values():
            self._hold(client)
            client.notify([Frame.ATTACH, 0, holder])

    def _hold(self, client: ChannelClient) -> None:
        assert self._holding is not None
        holder, on_push, on_lost = self._holding
        client.greeting = [Frame.ATTACH, 0, holder]
        client.on_push = on_push
        client.on_lost = partial(on_lost, client)

    def host_for(self, oid: ObjectId) -> Host | None:
        """This process's Host when it owns ``oid``'s partition now (no channel needed)."""
        return self._local_host(oid)

    async def socket_event(self, oid: ObjectId, event: str, args: list[Any]) -> None:
        """A held socket's event for ``oid``'s owner: routed, and resent on ``not_owner``."""
        await self._send(oid, [Frame.SOCKET], [event, args], None)

    def notify_all(self, frame: list[Any]) -> None:
        """Send an unanswered frame on every open connection (none is opened for it)."""
        for client in self._clients.values():
            client.notify(frame)

    def partitions_at(self, client: ChannelClient) -> set[int]:
        """The partitions the table last said ``client``'s host owns."""
        addresses = {a for a, c in self._clients.items() if c is client}
        return {p for p, (_, a) in self._table.items() if a in addresses}

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients.values()))
        self._clients.clear()


def this_node() -> str:
    """This process's Ray node id ("" outside Ray: every host is then dialled over TCP)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
