"""The WebSocket synchronizer at ``/ws/{room}`` (``examples/todos/sync.py``) with real clients.

The TinyBase tests run ``tests/todos/js/sync_*.mjs`` (the npm ``tinybase`` client over ``ws``)
against a real uvicorn serving ``examples.todos.app:worker``, or against ``durable serve
--in-process`` for the restart. The bad-input tests speak the wire protocol with ``websockets``.
The virtual clock starts at the real time: TinyBase's HLCs are wall-clock times and the room
refuses ones more than five minutes ahead of its clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from durable.testing import VirtualClock
from examples.todos.mergeable import encode_hlc
from tests.live_server import Live
from tests.todos.conftest import LiveApp, node, served


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()  # real time now, moved only by advance()


def room(server: Live, name: str) -> Any:
    return server.env.ROOM.get_by_name(name)


async def until(check: Callable[[], Any], what: str, polls: int = 500) -> None:
    """Bounded polling (10 ms apart) for state the clients cannot wait on."""
    for _ in range(polls):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# -- TinyBase clients -------------------------------------------------------------------------
async def test_two_clients_sync_both_ways(live_app: LiveApp) -> None:
    async with live_app() as server:
        report = await node("sync_two_way.mjs", server.ws, "list-1")
        assert report["errors"] == []
        assert report["both"] == {"todos": {"t1": {"text": "from A", "done": True},
                                            "t2": {"text": "from B", "done": False}}}  # fmt: skip
        only_t1 = {"todos": {"t1": {"text": "from A", "done": True}}}
        assert report["afterDelete"] == {"a": only_t1, "b": only_t1}
        assert await room(server, "list-1").tables() == only_t1


async def test_concurrent_writes_to_one_cell_end_identical_by_hlc(live_app: LiveApp) -> None:
    """A and B write 20 cells in the same tick; both keep, per cell, the larger HLC's write."""
    async with live_app() as server:
        report = await node("sync_concurrent.mjs", server.ws, "list-c", "20")
        assert report["errors"] == [] and report["a"] == report["b"]
        row = report["a"]["todos"]["t1"]
        for i, write in enumerate(report["writes"]):
            assert row[write["cell"]] == (f"A{i}" if write["a"] > write["b"] else f"B{i}")
        assert await room(server, "list-c").tables() == report["a"]


async def test_late_joiner_with_offline_edits(live_app: LiveApp) -> None:
    """C gets A's and B's rows; its offline row and its later edit of A's row reach A, B and the
    server's store (which pulled them because C's hashes differed)."""
    async with live_app() as server:
        report = await node("sync_late_joiner.mjs", server.ws, "list-l")
        expected = {"todos": {"t1": {"text": "from A", "done": True},
                              "t2": {"text": "from B", "done": False},
                              "c1": {"text": "offline on C", "done": False}}}  # fmt: skip
        assert report["errors"] == []
        assert report["a"] == report["b"] == report["c"] == expected
        assert report["values"] == {"owner": "bob"}
        await until(lambda: _has(server, "list-l", expected), "the server to pull C's edits")


async def _has(server: Live, name: str, expected: dict[str, Any]) -> bool:
    return bool(await room(server, name).tables() == expected)


async def test_rooms_are_isolated(live_app: LiveApp) -> None:
    async with live_app() as server:
        report = await node("sync_rooms.mjs", server.ws, "room-a", "room-b")
        assert report["errors"] == []
        only_a = {"todos": {"x": {"text": "only in room-a"}}}
        only_b = {"todos": {"y": {"text": "only in room-b"}, "z": {"text": "later in room-b"}}}
        assert report["room-a"] == [only_a, only_a] and report["room-b"] == [only_b, only_b]
        assert await room(server, "room-a").tables() == only_a
        assert await room(server, "room-b").tables() == only_b


def _todos(n: int) -> dict[str, Any]:
    rows = {f"t{i}": {"text": f"todo {i}", "done": i % 2 == 0} for i in range(n)}
    return {"todos": rows}


async def _write_and_leave(server: Live, name: str, n: int) -> None:
    report = await node("sync_write.mjs", server.ws, name, str(n))
    assert report["errors"] == [] and report["tables"] == _todos(n)
    await until(lambda: _has(server, name, _todos(n)), "the room to store the writes")
    await until(lambda: _no_sockets(server), "the writer's socket to close")


async def _no_sockets(server: Live) -> bool:
    return not server.host.sockets.statistics().open


async def _read_alone(ws_base: str, name: str, n: int) -> None:
    report = await node("sync_read.mjs", ws_base, name, str(n))
    assert report["errors"] == [] and report["tables"] == _todos(n)
    assert report["values"] == {"title": f"list {name}"}


async def test_a_client_after_everyone_left_gets_the_servers_content(live_app: LiveApp) -> None:
    async with live_app() as server:
        await _write_and_leave(server, "list-s", 30)
        await _read_alone(server.ws, "list-s", 30)


async def test_content_outlives_eviction_of_the_room(
    live_app: LiveApp, clock: VirtualClock
) -> None:
    async with live_app() as server:
        await _write_and_leave(server, "list-e", 30)
        evictions = server.host.statistics().evictions
        await clock.advance(server.host.idle_timeout_of("ROOM") + 1)
        assert server.host.active(room(server, "list-e").id) is None
        assert server.host.statistics().evictions > evictions
        await _read_alone(server.ws, "list-e", 30)


async def test_content_outlives_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with served(data_dir) as ws_base:
        report = await node("sync_write.mjs", ws_base, "list-r", "30")
        assert report["errors"] == []
        await _read_alone(ws_base, "list-r", 30)  # the write reached the server
    async with served(data_dir) as ws_base:
        await _read_alone(ws_base, "list-r", 30)


# -- the wire protocol, and bad input -----------------------------------------------------------
HASHES_REQUEST = '\n["tx.0001",1,""]'


async def _frame(client: ClientConnection) -> tuple[str, Any]:
    text = await asyncio.wait_for(client.recv(), 5)
    assert isinstance(text, str)
    sender, _, rest = text.partition("\n")
    return sender, json.loads(rest)


async def test_the_room_answers_as_client_s_and_relays_with_the_senders_id(
    live_app: LiveApp,
) -> None:
    async with live_app() as server:
        url = server.ws + "/ws/list-p?token=ignored"
        async with ws_connect(url) as a, ws_connect(server.ws + "/ws/list-p") as b:
            await a.send(HASHES_REQUEST)
            assert await _frame(a) == ("S", ["tx.0001", 0, [0, 0]])  # empty store
            sender, message = await _frame(b)  # the broadcast reached B too
            assert message == ["tx.0001", 1, ""] and sender not in ("", "S")
            await b.send(f'{sender}\n["tx.0001",0,[0,0]]')  # B answers A directly
            assert await _frame(a) == (await _id_of(b, a), ["tx.0001", 0, [0, 0]])


async def _id_of(client: ClientConnection, peer: ClientConnection) -> str:
    """``client``'s id as the room shows it: the prefix of a frame it sends to ``peer``."""
    await client.send('\n["id",2,[0,0]]')
    sender, _ = await _frame(peer)
    return sender


async def test_the_room_pulls_from_a_client_whose_hashes_differ(live_app: LiveApp) -> None:
    """A ContentHashes that differs from the room's makes it ask the sender (GetTableDiff, as
    ``S``, within the sender's transaction) and store the answer; an answer of the wrong shape
    ends the pull with nothing stored and the socket open."""
    async with live_app() as server, ws_connect(server.ws + "/ws/list-pull") as client:
        await client.send('\n["abcdefghijk",2,[1,0]]')
        sender, (request_id, kind, body) = await _frame(client)
        assert (sender, kind, body) == ("S", 4, {})
        assert request_id.startswith("abcdefghijk.") and len(request_id) == 16
        await client.send(f'S\n["{request_id}",0,[1,2]]')  # a valid frame, a wrong answer
        await client.send('\n["abcdefghijk",2,[1,0]]')
        request_id = (await _frame(client))[1][0]  # the first pull ended: a second one asks
        assert await room(server, "list-pull").tables() == {}
        hlc = encode_hlc(int(VirtualClock().now() * 1000), 0, "pyc01")
        rows = {"todos": [{"t1": [{"text": ["pulled", hlc]}]}]}
        await client.send(f"S\n{json.dumps([request_id, 0, [[rows], {}]])}")
        pulled = {"todos": {"t1": {"text": "pulled"}}}
        await until(lambda: _has(server, "list-pull", pulled), "the room to store the pull")
        await client.send(HASHES_REQUEST.replace("\n", "S\n", 1))
        hashes = await room(server, "list-pull").content_hashes()
        assert await _frame(client) == ("S", ["tx.0001", 0, hashes]) and hashes[0] != 0


async def test_a_plain_http_request_to_the_socket_route_gets_426(live_app: LiveApp) -> None:
    async with live_app() as server:
        response = await server.client.get("/ws/list-h")
        assert response.status_code == 426
        assert response.json()["error"] == "UpgradeRequired"


def _changes(hlc: str, text: str = "x") -> str:
    return json.dumps([[{"todos": [{"t1": [{"text": [text, hlc]}]}]}], [{}], 1])


FUTURE = encode_hlc(int((VirtualClock().now() + 3600) * 1000), 0, "zzzzz")
INVALID = {
    "no recipient line": '["t",1,""]',
    "not a message": '\n{"type":"hello"}',
    "not JSON": "\n[1,2",
    "unknown message type": '\n["t",9,""]',
    "requestId not a string": '\n[5,1,""]',
    "non-integer hash": '\n["t",2,[1.5,0]]',
    "NaN hash": '\n["t",2,[NaN,0]]',
    "hash out of range": '\n["t",2,[4294967296,0]]',
    "malformed HLC": '\n["t",3,' + _changes("yesterday") + "]",
    "stamp with a hash": '\n["t",3,[[{"todos":[{"t1":[{"text":["x","",1]}]}]}],[{}],1]]',
    "raw object cell": '\n["t",3,[[{"todos":[{"t1":[{"text":[{"a":1}]}]}]}],[{}],1]]',
    "HLC an hour ahead": '\n["t",3,' + _changes(FUTURE) + "]",
    "lone surrogate": '\n["t",3,[[{"todos":[{"t1":[{"text":["\\ud800"]}]}]}],[{}],1]]',  # JSON escape
    "fragment": "\nabcdefghijklmnop\n0\n2\n[1,",
    "binary, not UTF-8": b"\n\xff\xfe",
}


@pytest.mark.parametrize("frame", INVALID.values(), ids=INVALID.keys())
async def test_invalid_frames_close_1007_and_change_nothing(
    live_app: LiveApp, frame: str | bytes
) -> None:
    """The sender is closed with 1007; the peer gets nothing from it (its next frame is a later
    one from a third client) and the room's content and hashes are unchanged."""
    async with live_app() as server:
        await _write_and_leave(server, "list-v", 3)
        before = await room(server, "list-v").content_hashes()
        url = server.ws + "/ws/list-v"
        async with ws_connect(url) as peer, ws_connect(url) as bad, ws_connect(url) as good:
            await bad.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(bad.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
            await good.send('\n["after",2,[0,0]]')
            assert (await _frame(peer))[1] == ["after", 2, [0, 0]]
        assert await room(server, "list-v").content_hashes() == before
        assert await room(server, "list-v").tables() == _todos(3)


async def test_a_frame_over_the_limit_closes_1009(live_app: LiveApp) -> None:
    async with live_app() as server:
        async with ws_connect(server.ws + "/ws/list-big", max_size=None) as client:
            await client.send('\n["t",3,' + _changes("", "x" * 2**20) + "]")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert await room(server, "list-big").tables() == {}


async def test_a_cell_over_the_storage_limit_closes_1009_and_stores_nothing(
    live_app: LiveApp, clock: VirtualClock
) -> None:
    """A 200 KiB cell fits a frame but not a KV value (128 KiB): nothing of the frame is
    stored (not even its small row), merged or relayed; the room, rebuilt from storage after
    an eviction, serves its old content."""
    async with live_app() as server:
        await _write_and_leave(server, "list-kv", 3)
        before = await room(server, "list-kv").content_hashes()
        url = server.ws + "/ws/list-kv"
        async with ws_connect(url) as peer, ws_connect(url) as big:
            hlc = encode_hlc(int(VirtualClock().now() * 1000), 0, "bigcl")
            changes = [[{"todos": [{"t1": [{"text": ["y" * 200_000, hlc]}],
                                    "t9": [{"text": ["small", hlc]}]}]}], [{}], 1]  # fmt: skip
            await big.send('\n["t",3,' + json.dumps(changes) + "]")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(big.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await peer.send(HASHES_REQUEST.replace("\n", "S\n", 1))
            assert await _frame(peer) == ("S", ["tx.0001", 0, before])  # nothing was relayed
        await until(lambda: _no_sockets(server), "the sockets to close")
        await clock.advance(server.host.idle_timeout_of("ROOM") + 1)
        assert server.host.active(room(server, "list-kv").id) is None
        assert await room(server, "list-kv").content_hashes() == before
        await _read_alone(server.ws, "list-kv", 3)
