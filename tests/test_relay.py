"""WebSockets across slots without Ray: two in-process Hosts, each with a real ChannelServer on
TCP and a gateway (``SocketRelay``) under uvicorn, reached by the ``websockets`` client.

Host A owns partition 0 and host B partition 1 (a fake directory's table says so); the room
lives in partition 1, so clients of gateway A reach it over the channel (SOCKET frames out,
PUSH frames back) and clients of gateway B in process. Nothing sleeps: tests wait for frames,
or poll a condition with a bound (``until``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

import durable
from durable import channel
from durable.endpoint import Endpoint
from durable.env import start_host
from durable.fanout import ClientSockets
from durable.gateway import Gateway, Health, build_app
from durable.host import Host
from durable.ids import ObjectId, id_from_name
from durable.relay import HolderLinks, SocketRelay, socket_reply
from durable.sockets import SocketRecord
from durable.testing import VirtualClock
from durable.transport import ClusterTransport, LocalOwner
from tests.live_server import serving
from tests.test_sockets import until

TOKEN = "relay-test-token"
LOG: list[tuple[Any, ...]] = []


class Room(durable.DurableObject):
    async def fetch(self, request: durable.Request) -> durable.Response:
        return self.ctx.accept_websocket(request)

    async def websocket_message(self, ws: durable.HibernatableWebSocket, message: Any) -> None:
        verb, _, arg = str(message).partition(":")
        if verb == "count":  # n frames to this socket, queued in one turn
            for i in range(int(arg)):
                ws.send(f"{i}")
        elif verb == "auto":
            self.ctx.set_websocket_auto_response(("ping", "pong"))
            ws.send("auto set")
        elif verb == "write":  # a write, then a frame: the frame leaves after the commit
            await self.ctx.storage.put("k", arg)
            ws.send(f"wrote {arg}")
        else:  # everyone in the room, this socket included
            for peer in self.ctx.get_websockets():
                peer.send(message)

    async def websocket_close(
        self, ws: durable.HibernatableWebSocket, code: int, reason: str, was_clean: bool
    ) -> None:
        LOG.append(("close", code))


worker = durable.Worker(objects={"ROOM": Room})


@worker.websocket_route("/room/{name}")
async def room_route(websocket: durable.WebSocket, env: Any) -> Any:
    return await env.ROOM.get_by_name(websocket.path_params["name"]).fetch(websocket)


class FakeDirectory:
    """The directory's ``table`` as a Ray actor answers it: partition -> (epoch, address)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, str]] = {}

    @property
    def table(self) -> Any:
        entries = self.entries

        class Remote:
            async def remote(self) -> dict[int, tuple[int, str]]:
                return dict(entries)

        return Remote()


@dataclass
class Slot:
    """One in-process slot: a Host owning some partitions, its channel, its gateway."""

    host: Host
    owned: dict[int, int]
    server: channel.ChannelServer
    transport: ClusterTransport
    gateway: Gateway
    directory: FakeDirectory
    address: str
    ws: str = ""

    @property
    def clients(self) -> ClientSockets:
        return self.gateway.clients

    async def handle(self, frame: list[Any]) -> list[list[Any]]:
        kind, rid, partition, epoch, ns, raw, name = frame[:7]
        if self.owned.get(partition) != epoch:
            raise channel.NotOwner(partition, epoch)
        if kind == channel.Frame.SOCKET:
            return await socket_reply(self.host, frame)
        assert kind == channel.Frame.FETCH, kind  # the tests make no RPC across slots
        request = channel.request_from(frame[7], bytes(frame[8]))
        response = await self.host.fetch(ObjectId(bytes(raw), ns, name), request)
        return channel.response_frames(rid, response)


@asynccontextmanager
async def slot(directory: FakeDirectory, data_dir: Path, owned: list[int]) -> AsyncIterator[Slot]:
    epochs = dict.fromkeys(owned, 1)
    transports: list[ClusterTransport] = []

    def transport(host: Host) -> ClusterTransport:
        transports.append(ClusterTransport(directory, TOKEN, 2, LocalOwner(host, epochs)))
        return transports[0]

    host, env = await start_host(
        worker, data_dir, VirtualClock(), partitions=2, owned=owned, transport=transport
    )
    server = channel.ChannelServer(TOKEN, lambda f: made.handle(f), HolderLinks(host))
    gateway = build_app(worker, env, Health(), SocketRelay(host, transports[0]))
    made = Slot(host, epochs, server, transports[0], gateway, directory, "")
    tcp = await made.server.start_tcp("127.0.0.1", 0)
    made.address = str(Endpoint("", "", tcp.removeprefix("tcp:")))
    for partition in owned:
        directory.entries[partition] = (1, made.address)
    try:
        async with serving(made.gateway) as (port, _):
            made.ws = f"ws://127.0.0.1:{port}"
            yield made
    finally:
        await made.transport.close()
        await made.server.close()
        await host.close()


@asynccontextmanager
async def two_slots(tmp_path: Path) -> AsyncIterator[tuple[Slot, Slot]]:
    directory = FakeDirectory()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(slot(directory, tmp_path / "a", [0]))
        b = await stack.enter_async_context(slot(directory, tmp_path / "b", [1]))
        yield a, b


def in_partition(index: int) -> str:
    """A room name whose object lives in partition ``index`` (of 2)."""
    for i in range(100):
        name = f"room-{i}"
        if room_id(name).partition(2) == index:
            return name
    raise AssertionError("no such name")


def room_id(name: str) -> ObjectId:
    return id_from_name("ROOM", name)


async def join(at: Slot, room: str) -> ClientConnection:
    return await ws_connect(f"{at.ws}/room/{room}")


async def recv_all(client: ClientConnection, n: int) -> list[Any]:
    return [await asyncio.wait_for(client.recv(), 10) for _ in range(n)]


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    LOG.clear()


async def test_a_broadcast_reaches_the_clients_of_both_gateways(tmp_path: Path) -> None:
    room = in_partition(1)
    async with two_slots(tmp_path) as (a, b):
        remote = [await join(a, room) for _ in range(3)]  # their object is on host B
        local = [await join(b, room) for _ in range(2)]
        pushes_a = a.clients.pushes
        await remote[0].send("hello")  # through gateway A, over the channel, to host B
        for client in remote + local:
            assert await recv_all(client, 1) == ["hello"]
        # One broadcast: one push to gateway A carrying one op for its 3 sockets.
        assert a.clients.pushes == pushes_a + 1
        assert len(b.host.sockets.by_sid) == 5
        await local[0].send("from b")
        for client in remote + local:
            assert await recv_all(client, 1) == ["from b"]


async def test_frames_keep_their_order_and_follow_the_commit(tmp_path: Path) -> None:
    room = in_partition(1)
    async with two_slots(tmp_path) as (a, b):
        client = await join(a, room)
        await client.send("count:200")
        assert await recv_all(client, 200) == [str(i) for i in range(200)]
        await client.send("write:v1")
        assert await recv_all(client, 1) == ["wrote v1"]
        # The write is in the database (committed) when its frame arrives at the remote gateway.
        path = b.host.partitions[1].path
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            query = "SELECT count(*) FROM kv WHERE ns = 'ROOM' AND id = ?"
            assert db.execute(query, (room_id(room).raw,)).fetchone() == (1,)


async def test_a_client_close_runs_the_handler_on_the_remote_host(tmp_path: Path) -> None:
    async with two_slots(tmp_path) as (a, b):
        client = await join(a, in_partition(1))
        assert len(b.host.sockets.by_sid) == 1  # accepted there, before the 101
        await client.close(4001, "bye")
        await until(lambda: ("close", 4001) in LOG, "websocket_close on host B")
        await until(lambda: not b.host.sockets.by_sid, "host B forgets the socket")


async def test_losing_the_connection_closes_that_holders_sockets_1012(tmp_path: Path) -> None:
    room = in_partition(1)
    async with two_slots(tmp_path) as (a, b):
        remote = await join(a, room)
        local = await join(b, room)
        await local.send("hi")
        assert await recv_all(remote, 1) == await recv_all(local, 1) == ["hi"]
        assert len(b.host.sockets.sinks) == 2
        for link in list(b.server._links):  # gateway A's only connection to host B
            link.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(remote.recv(), 10)
        assert remote.close_code == 1012
        # Host B detached holder A and forgot its socket; B's own client is untouched.
        await until(lambda: len(b.host.sockets.by_sid) == 1, "host B forgets A's socket")
        assert a.clients.holder not in b.host.sockets.sinks
        assert relay(a).statistics().closed_by_loss == 1
        await until(lambda: not a.clients.sockets, "gateway A to finish the close")
        assert relay(a).statistics().remote_events == 0  # its close was not reported to B
        assert not LOG  # no websocket_close ran: B forgot the socket with the connection
        await local.send("still here")
        assert await recv_all(local, 1) == ["still here"]
        again = await join(a, room)  # a new connection attaches gateway A again
        await again.send("back")
        assert await recv_all(again, 1) == await recv_all(local, 1) == ["back"]


async def test_a_partition_leaving_a_host_closes_its_sockets_1012(tmp_path: Path) -> None:
    room, other = in_partition(1), in_partition(0)
    async with two_slots(tmp_path) as (a, b):
        moved = [await join(a, room), await join(b, room)]
        stays = await join(b, other)  # partition 0, on host A: not affected
        del b.owned[1]
        b.host.remove_partition(1)
        for client in moved:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 10)
            assert client.close_code == 1012
        assert not b.host.sockets.by_sid
        # The partition is granted to host A; gateway B learns it from a not_owner.
        a.owned[1] = 2
        a.host.add_partition(1)
        a.directory.entries[1] = (2, a.address)
        for client in [await join(a, room), await join(b, room)]:
            await client.send("new owner")
            assert await recv_all(client, 1) == ["new owner"]
        await stays.send("0")
        assert await recv_all(stays, 1) == ["0"]


async def test_a_holder_attaches_on_each_new_connection(tmp_path: Path) -> None:
    async with two_slots(tmp_path) as (a, b):
        client = await join(a, in_partition(1))
        await client.send("x")
        assert await recv_all(client, 1) == ["x"]
        assert set(b.host.sockets.sinks) == {a.clients.holder, b.clients.holder}
        assert set(a.host.sockets.sinks) == {a.clients.holder}  # B never called host A


async def test_auto_responses_are_answered_by_the_remote_gateway(tmp_path: Path) -> None:
    room = in_partition(1)
    async with two_slots(tmp_path) as (a, b):
        client = await join(a, room)
        await client.send("auto")
        assert await recv_all(client, 1) == ["auto set"]
        events = relay(a).statistics().remote_events
        await client.send("ping")
        assert await recv_all(client, 1) == ["pong"]  # from gateway A: the PUSHed ("auto", ...)
        assert a.clients.auto_responses == 1
        record = next(iter(b.host.sockets.by_sid.values()))
        await until(lambda: record.auto_at is not None, "host B to stamp the auto-response")
        assert relay(a).statistics().remote_events == events + 1  # the stamp, not a message


def relay(at: Slot) -> SocketRelay:
    assert isinstance(at.gateway.sockets, SocketRelay)
    return at.gateway.sockets


# -- the frames alone: a ChannelServer with HolderLinks and a ChannelClient ----------------------


async def test_a_holder_is_attached_per_connection_and_detached_when_it_closes(
    tmp_path: Path,
) -> None:
    host, _ = await start_host(worker, tmp_path, VirtualClock(), partitions=2)
    holders = HolderLinks(host)

    async def handle(frame: list[Any]) -> list[list[Any]]:
        host.sockets.push("gw", [("send", ["s1"], f"before reply {frame[1]}")])
        return [[channel.Frame.REPLY, frame[1], None]]

    server = channel.ChannelServer(TOKEN, handle, holders)
    address = await server.start_tcp("127.0.0.1", 0)
    pushed: list[Any] = []
    lost: list[str] = []
    client = channel.ChannelClient(address, TOKEN)
    client.greeting = [channel.Frame.ATTACH, 0, "gw"]
    client.on_push, client.on_lost = pushed.extend, lambda: lost.append("lost")
    try:
        await client.request([channel.Frame.SOCKET, 0, 1, "ROOM", b"x", None, "message", []])
        assert pushed == [["send", ["s1"], "before reply 1"]]  # attached first; push, then reply
        host.sockets.by_sid["s9"] = SocketRecord("s9", room_id("r"), "gw", (), 1)
        client.notify([channel.Frame.DROPPED, 0, "s9"])
        await until(lambda: "s9" not in host.sockets.by_sid, "the DROPPED frame")
        for link in list(server._links):
            link.close()
        await until(lambda: lost == ["lost"], "on_lost")
        await until(lambda: "gw" not in host.sockets.sinks, "the holder detached")
        await client.request([channel.Frame.SOCKET, 0, 1, "ROOM", b"x", None, "message", []])
        assert "gw" in host.sockets.sinks  # the new connection attached it again, first
    finally:
        await client.close()
        await server.close()
        await host.close()
