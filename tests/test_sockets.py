"""Hibernatable WebSockets against a real uvicorn server and the ``websockets`` client.

One test per row of ``reference/semantics.md`` "WebSocket hibernation API" (the row is quoted in
the docstring), then limits, hibernation, broadcast, the output gate and persistence. Objects
record what happens to them in ``LOG`` so a test asserts the list; nothing sleeps: each test waits
for a frame the server sends, or polls a condition with a bound (``until``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import durable
from durable import values
from durable.faults import faults
from durable.sockets import OFFER_HEADER, SocketState, check_close
from durable.testing import VirtualClock
from tests.live_server import Live, live

LOG: list[tuple[Any, ...]] = []


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    LOG.clear()


class Chat(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        LOG.append(("init", len(ctx.get_websockets())))
        self.mem = "fresh"

    async def fetch(self, request: Request) -> durable.Response:
        query = request.query_params
        accepted = self.ctx.accept_websocket(request, tags=query.getlist("tag"))
        if "user" in query:
            accepted.websocket.serialize_attachment({"user": query["user"], "n": {1, 2}})
        return accepted

    # -- RPC used by the tests to look inside ------------------------------------------------
    async def count(self, tag: str | None = None) -> int:
        return len(self.ctx.get_websockets(tag))

    async def tags(self) -> list[list[str]]:
        return [self.ctx.get_tags(ws) for ws in self.ctx.get_websockets()]

    async def attachments(self) -> list[Any]:
        return [ws.deserialize_attachment() for ws in self.ctx.get_websockets()]

    async def broadcast(self, text: str, tag: str | None = None) -> int:
        sockets = self.ctx.get_websockets(tag)
        for ws in sockets:
            ws.send(text)
        return len(sockets)

    async def set_auto(self, pair: tuple[str, str] | None) -> None:
        self.ctx.set_websocket_auto_response(pair)

    async def get_auto(self) -> tuple[str, str] | None:
        return self.ctx.get_websocket_auto_response()

    async def stamps(self) -> list[datetime | None]:
        ctx = self.ctx
        return [ctx.get_websocket_auto_response_timestamp(ws) for ws in ctx.get_websockets()]

    async def accept_many(self, n: int) -> str:
        """Accept ``n`` sockets offered by a holder that is not attached (limit tests)."""
        for i in range(n):
            headers = [(OFFER_HEADER.encode(), f"nobody s{i}".encode())]
            try:
                request = Request({"type": "http", "headers": headers})
                accepted = self.ctx.accept_websocket(request, tags=["many", f"n{i}"])
            except durable.WebSocketError as error:
                return f"{i}: {error}"
            accepted.websocket.serialize_attachment(i)
        return "ok"

    # -- handlers --------------------------------------------------------------------------------
    async def websocket_message(self, ws: durable.HibernatableWebSocket, message: Any) -> None:
        LOG.append(("message", type(message).__name__, message))
        if isinstance(message, bytes):
            ws.send(message[::-1])
            return
        verb, _, arg = message.partition(":")
        if verb == "echo":
            ws.send(message)
        elif verb == "write":
            await self.ctx.storage.put("k", arg)
            ws.send("written")
        elif verb == "close":
            ws.close(int(arg), "server closing")
        elif verb == "mem":
            ws.send(f"{self.mem} {self.ctx.get_tags(ws)} {json.dumps(self._attachment(ws))}")
        elif verb == "setmem":
            self.mem = arg
            ws.send("ok")
        elif verb == "sendafterclose":
            ws.close(1000)
            try:
                ws.send("x")
            except durable.InvalidArgument as error:
                LOG.append(("refused", str(error)))

    def _attachment(self, ws: durable.HibernatableWebSocket) -> Any:
        value = ws.deserialize_attachment()
        return None if value is None else value["user"]

    async def websocket_close(
        self, ws: durable.HibernatableWebSocket, code: int, reason: str, was_clean: bool
    ) -> None:
        LOG.append(("close", code, reason, was_clean, ws.state))
        if code == 4000:
            ws.close(4000, "bye")

    async def websocket_error(self, ws: durable.HibernatableWebSocket, error: Exception) -> None:
        LOG.append(("error", type(error).__name__, str(error)))


worker = durable.Worker(objects={"CHAT": Chat}, idle_timeout=10.0, max_message_bytes=4096)


@worker.websocket_route("/ws/{room}")
async def chat(websocket: durable.WebSocket, env: Any) -> Any:
    return await env.CHAT.get_by_name(websocket.path_params["room"]).fetch(websocket)


@worker.websocket_route("/id/{hex}")
async def by_id(websocket: durable.WebSocket, env: Any) -> Any:
    return await env.CHAT.get(websocket.path_params["hex"]).fetch(websocket)


async def until(check: Callable[[], bool], what: str, polls: int = 500) -> None:
    """Poll ``check`` (10 ms apart, bounded): for effects the client cannot wait on as a frame."""
    for _ in range(polls):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def room(server: Live, name: str = "r") -> Any:
    return server.env.CHAT.get_by_name(name)


async def test_tags_counts_and_attachments(tmp_path: Path) -> None:
    """`acceptWebSocket(server, ['a','b'])` + `serializeAttachment({user})`: `getWebSockets()` → 2,
    `('a')` → 1, `('b')` → 2, unknown tag → 0; `getTags(ws)` → `['a','b']`; attachments round-trip
    (a `Map` attachment works; a function → `DataCloneError`)."""
    async with live(worker, tmp_path) as server:
        url = server.ws + "/ws/r"
        async with ws_connect(url + "?tag=a&tag=b&user=ann"), ws_connect(url + "?tag=b&user=bo"):
            stub = room(server)
            counts = [await stub.count(), await stub.count("a"), await stub.count("b")]
            assert [*counts, await stub.count("nope")] == [2, 1, 2, 0]
            assert await stub.tags() == [["b"], ["a", "b"]]  # newest first
            assert await stub.attachments() == [
                {"user": "bo", "n": {1, 2}},
                {"user": "ann", "n": {1, 2}},
            ]
            with pytest.raises(durable.DataCloneError):
                _a_socket(server).serialize_attachment(lambda: None)


def _a_socket(server: Live, name: str = "r") -> durable.HibernatableWebSocket:
    """The ``ws`` of one of ``name``'s sockets, as its live activation sees it."""
    group = server.host.sockets.group(room(server, name).id)
    record = next(iter(group.records.values()))
    return group.view(server.host.activate(record.oid), record)


async def test_broadcast_by_tag_reaches_only_tagged_sockets(tmp_path: Path) -> None:
    """Broadcast through `getWebSockets('b')` from an HTTP request reached both clients; tag `a`
    reached only the first."""
    async with live(worker, tmp_path) as server:
        url = server.ws + "/ws/r"
        async with ws_connect(url + "?tag=a&tag=b") as first, ws_connect(url + "?tag=b") as second:
            assert await room(server).broadcast("to-b", "b") == 2
            assert [await first.recv(), await second.recv()] == ["to-b", "to-b"]
            assert await room(server).broadcast("to-a", "a") == 1
            await room(server).broadcast("marker", "b")
            assert [await first.recv(), await first.recv()] == ["to-a", "marker"]
            assert await second.recv() == "marker"  # "to-a" never reached the second


async def test_auto_response_answers_without_the_handler(tmp_path: Path) -> None:
    """`getWebSocketAutoResponse()` before setting → null; after setting the pair it returns it.
    Client 'ping' → 'pong' without calling `webSocketMessage`; `getWebSocketAutoResponseTimestamp`
    → a Date. 'ping ' (not exact) goes to the handler."""
    async with live(worker, tmp_path) as server, ws_connect(server.ws + "/ws/r") as client:
        stub = room(server)
        assert await stub.get_auto() is None
        assert await stub.stamps() == [None]
        await stub.set_auto(("ping", "pong"))
        assert await stub.get_auto() == ("ping", "pong")
        await client.send("ping")
        assert await client.recv() == "pong"
        assert not [e for e in LOG if e[0] == "message"]
        (stamp,) = await stub.stamps()
        assert isinstance(stamp, datetime) and stamp.tzinfo is not None
        await client.send("ping ")
        await client.send("echo:after")
        assert await client.recv() == "echo:after"
        assert [e[2] for e in LOG if e[0] == "message"] == ["ping ", "echo:after"]
        await stub.set_auto(None)
        await client.send("ping")
        await client.send("echo:x")
        assert await client.recv() == "echo:x"
        assert [e[2] for e in LOG if e[0] == "message"][-2:] == ["ping", "echo:x"]


async def test_binary_frames_arrive_as_bytes(tmp_path: Path) -> None:
    """Binary frames arrive as `ArrayBuffer` (here: ``bytes``); a binary send is a binary frame."""
    async with live(worker, tmp_path) as server, ws_connect(server.ws + "/ws/r") as client:
        await client.send(b"\x00\x01\xff")
        assert await client.recv() == b"\xff\x01\x00"
        assert LOG[-1] == ("message", "bytes", b"\x00\x01\xff")


@pytest.mark.parametrize(
    ("tags", "status", "message"),
    [
        ([f"t{i}" for i in range(10)], 101, None),
        ([f"t{i}" for i in range(11)], 500, "a Hibernatable WebSocket cannot have more than 10 tags"),
        (["x" * 256], 101, None),
        (["x" * 257], 500, f'"{"x" * 257}" is longer than the max tag length (256 characters).'),
        (["dup", "dup", ""], 101, None),
    ],
)  # fmt: skip
async def test_tag_limits(
    tmp_path: Path, tags: list[str], status: int, message: str | None
) -> None:
    """Tags: 10 accepted; 11 → `Error: a Hibernatable WebSocket cannot have more than 10 tags`;
    256-char tag accepted; 257 → `Error: "xxx…" is longer than the max tag length (256
    characters).`; duplicate and empty tags accepted."""
    query = "&".join(f"tag={t}" for t in tags)
    async with live(worker, tmp_path) as server:
        if status == 101:
            async with ws_connect(f"{server.ws}/ws/r?{query}"):
                assert await room(server).tags() == [list(dict.fromkeys(tags))]
            return
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(f"{server.ws}/ws/r?{query}"):
                pass
        assert refused.value.response.status_code == status
        body = json.loads(refused.value.response.body)
        assert body == {"error": "WebSocketError", "message": message}
        assert await room(server).count() == 0


async def test_client_close_reaches_handler_and_its_reply_reaches_client(tmp_path: Path) -> None:
    """Client closes with 4000 → `webSocketClose(ws, 4000, 'client bye', wasClean=true)`; the
    reply `ws.close(4000,'bye')` reaches the client."""
    async with live(worker, tmp_path) as server:
        client = await ws_connect(server.ws + "/ws/r")
        await client.close(4000, "client bye")
        assert (client.close_code, client.close_reason) == (4000, "bye")
        await until(lambda: any(e[0] == "close" for e in LOG), "websocket_close")
        assert ("close", 4000, "client bye", True, SocketState.CLOSE_RECEIVED) in LOG
        await until(lambda: not server.host.sockets.by_sid, "the socket to be forgotten")


async def test_client_close_without_reply_is_echoed(tmp_path: Path) -> None:
    async with live(worker, tmp_path) as server:
        client = await ws_connect(server.ws + "/ws/r")
        await client.close(4100, "plain")
        assert (client.close_code, client.close_reason) == (4100, "plain")
        assert ("close", 4100, "plain", True, SocketState.CLOSE_RECEIVED) in LOG


async def test_server_close_reaches_client_and_handler_still_runs(tmp_path: Path) -> None:
    """Server `ws.close(4001,'server closing')` → client sees 4001, and `webSocketClose` is
    still called (4001, wasClean true)."""
    async with live(worker, tmp_path) as server:
        async with ws_connect(server.ws + "/ws/r") as client:
            await client.send("close:4001")
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert (client.close_code, client.close_reason) == (4001, "server closing")
        await until(lambda: any(e[0] == "close" for e in LOG), "websocket_close")
        assert ("close", 4001, "server closing", True, SocketState.CLOSE_SENT) in LOG


async def test_abrupt_disconnect_is_an_unclean_1006(tmp_path: Path) -> None:
    async with live(worker, tmp_path) as server:
        client = await ws_connect(server.ws + "/ws/r")
        await client.send("echo:x")
        await client.recv()
        client.transport.abort()
        await until(lambda: any(e[0] == "close" for e in LOG), "websocket_close")
        reason = "WebSocket disconnected without sending Close frame."
        assert ("close", 1006, reason, False, SocketState.CLOSE_RECEIVED) in LOG


async def test_send_after_close_and_bad_close_codes_are_refused(tmp_path: Path) -> None:
    async with live(worker, tmp_path) as server:
        async with ws_connect(server.ws + "/ws/r") as client:
            await client.send("sendafterclose")
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert client.close_code == 1000
        assert ("refused", "Can't call WebSocket send() after close().") in LOG
    for code in (999, 1004, 1005, 1006, 1015, 5000):
        with pytest.raises(durable.InvalidArgument) as error:
            check_close(code, None)
        assert str(error.value) == f"Invalid WebSocket close code: {code}."
    with pytest.raises(durable.InvalidArgument) as error:
        check_close(None, "why")
    assert (
        str(error.value) == "If you specify a WebSocket close reason, you must also specify a code."
    )
    assert check_close(None, None) == (1005, "") and check_close(4000, "ok") == (4000, "ok")


async def test_hibernation_keeps_sockets_tags_and_attachment(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """After 12 s idle the connected client's 'ping' got 'pong' while the object was hibernated
    (no constructor); the next real message re-ran the constructor (in-memory fields reset,
    `getWebSockets()` already 1 inside the constructor) and the attachment and tags survived."""
    url = "/ws/r?tag=t1&user=ann"
    async with live(worker, tmp_path, clock) as server, ws_connect(server.ws + url) as client:
        await room(server).set_auto(("ping", "pong"))
        await client.send("setmem:changed")
        assert await client.recv() == "ok"
        assert LOG.count(("init", 0)) == 1
        activations = server.host.statistics().activations
        await clock.advance(12)
        assert server.host.active(room(server).id) is None  # hibernated, socket open
        assert server.host.sockets.statistics().hibernated == 1
        metrics = (await server.client.get("/metrics")).text
        assert "durable_objects_hibernated 1.0" in metrics
        assert "durable_websockets_open 1.0" in metrics
        await client.send("ping")
        assert await client.recv() == "pong"
        assert server.host.statistics().activations == activations  # not woken
        assert [e for e in LOG if e[0] == "init"] == [("init", 0)]
        await client.send("mem")
        assert await client.recv() == "fresh ['t1'] \"ann\""
        assert [e for e in LOG if e[0] == "init"] == [("init", 0), ("init", 1)]


async def test_broadcast_is_one_push_with_one_op(tmp_path: Path) -> None:
    """A broadcast to N sockets leaves the host as one message to the gateway, not N."""
    async with live(worker, tmp_path) as server:
        url = server.ws + "/ws/r?tag=all"
        clients = [await ws_connect(url) for _ in range(5)]
        try:
            seen: list[list[Any]] = []
            original = server.gateway.clients.push
            server.gateway.clients.push = lambda ops: (seen.append(ops), original(ops))[1]  # type: ignore[method-assign]
            assert await room(server).broadcast("hello", "all") == 5
            assert [await c.recv() for c in clients] == ["hello"] * 5
            assert len(seen) == 1 and len(seen[0]) == 1
            op = seen[0][0]
            assert op[0] == "send" and len(op[1]) == 5 and op[2] == "hello"
        finally:
            for c in clients:
                await c.close()


async def test_frames_wait_for_the_commit_and_die_with_it(tmp_path: Path) -> None:
    """Output gate: a frame queued after a write leaves only once the write committed; if the
    commit fails the object is reset and the frame is never sent."""

    def fail() -> None:
        raise OSError("disk full")

    async with live(worker, tmp_path) as server, ws_connect(server.ws + "/ws/r") as client:
        await client.send("write:1")
        assert await client.recv() == "written"
        faults.arm("commit.before", fail)
        try:
            await client.send("write:2")
            await until(lambda: server.host.statistics().resets >= 1, "the reset")
        finally:
            faults.disarm()
        await client.send("echo:next")
        assert await client.recv() == "echo:next"  # "written" for write:2 never came


async def test_message_over_the_limit_closes_1009_and_calls_websocket_error(
    tmp_path: Path,
) -> None:
    """Max frame size (``Worker(max_message_bytes=4096)``) → close 1009; ``websocket_error``."""
    async with live(worker, tmp_path) as server:
        async with ws_connect(server.ws + "/ws/r", max_size=None) as client:
            await client.send("x" * 5000)
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert client.close_code == 1009
        await until(lambda: any(e[0] == "error" for e in LOG), "websocket_error")
        assert not [e for e in LOG if e[0] == "message"]
        await until(lambda: not server.host.sockets.by_sid, "the socket to be forgotten")


async def test_message_over_the_limit_is_caught_by_the_gateway_too(tmp_path: Path) -> None:
    """Under a server whose own limit is larger, the gateway enforces the worker's limit."""
    async with live(worker, tmp_path, ws_max_size=2**20) as server:
        async with ws_connect(server.ws + "/ws/r", max_size=None) as client:
            await client.send(b"y" * 5000)
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert (client.close_code, client.close_reason) == (1009, "Message too big")
        await until(lambda: any(e[0] == "error" for e in LOG), "websocket_error")
        message = "WebSocket message is 5000 bytes, over the limit of 4096 bytes."
        assert ("error", "WebSocketError", message) in LOG


async def test_attachment_limit_has_the_reference_message(tmp_path: Path) -> None:
    async with live(worker, tmp_path) as server, ws_connect(server.ws + "/ws/r"):
        ws = _a_socket(server)
        ws.serialize_attachment("x" * 16_000)
        with pytest.raises(durable.WebSocketError) as error:
            ws.serialize_attachment("x" * 16_500)
        size = len(values.encode("x" * 16_500))  # the size after the value codec
        assert str(error.value) == (
            "A WebSocket 'attachment' cannot be larger than 16384 bytes."
            f"'attachment' was {size} bytes."
        )
        assert ws.deserialize_attachment() == "x" * 16_000


async def test_socket_limit_per_object(tmp_path: Path) -> None:
    """32,768 sockets per object; one more → workerd's message."""
    async with durable.connect(worker, data_dir=tmp_path) as env:
        result = await env.CHAT.get_by_name("big").accept_many(32_769)
    assert result == (
        "32768: only 32768 websockets can be accepted on a single Durable Object instance"
    )


async def test_registry_is_persisted_and_reloaded_by_a_restarted_host(tmp_path: Path) -> None:
    """The socket registry lives in the partition database: a host opened on the same data dir
    (before any gateway re-announces) knows the sockets, their tags and attachments."""
    async with durable.connect(worker, data_dir=tmp_path) as env:
        assert await env.CHAT.get_by_name("p").accept_many(3) == "ok"
        await env.CHAT.get_by_name("p").set_auto(("a", "b"))
    LOG.clear()
    async with durable.connect(worker, data_dir=tmp_path) as env:
        stub = env.CHAT.get_by_name("p")
        assert [await stub.count(), await stub.count("many"), await stub.count("n1")] == [3, 3, 1]
        assert await stub.tags() == [["many", "n2"], ["many", "n1"], ["many", "n0"]]
        assert await stub.attachments() == [2, 1, 0]
        assert await stub.get_auto() == ("a", "b")
        assert LOG == [("init", 3)]


async def test_a_gateway_drops_stale_sockets_of_earlier_runs(tmp_path: Path) -> None:
    async with durable.connect(worker, data_dir=tmp_path) as env:
        assert await env.CHAT.get_by_name("p").accept_many(2) == "ok"
    async with live(worker, tmp_path) as server:
        assert await room(server, "p").count() == 0


async def test_unknown_ids_and_failed_upgrades_write_nothing(tmp_path: Path) -> None:
    async with live(worker, tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server.ws + "/id/zz"):
                pass
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body)["error"] == "InvalidObjectId"
        assert server.host.statistics().activations == 0
        assert not server.host.sockets.by_sid
        response = await server.client.get("/ws/r")
        assert response.status_code == 426
        assert response.json()["error"] == "UpgradeRequired"
        assert server.host.statistics().activations == 0


async def test_forged_socket_offers_are_stripped(tmp_path: Path) -> None:
    """A client cannot pose as the gateway: its own offer header never reaches the object."""
    seen: list[str | None] = []

    class Peek(durable.DurableObject):
        async def fetch(self, request: Request) -> durable.Response:
            seen.append(request.headers.get(OFFER_HEADER))
            return self.ctx.accept_websocket(request)

    peek = durable.Worker(objects={"P": Peek})

    @peek.websocket_route("/p")
    async def route(websocket: durable.WebSocket, env: Any) -> Any:
        return await env.P.get_by_name("x").fetch(websocket)

    async with live(peek, tmp_path) as server:
        headers = {OFFER_HEADER: "evil s1"}
        async with ws_connect(server.ws + "/p", additional_headers=headers):
            pass
    assert len(seen) == 1 and seen[0] is not None and not seen[0].startswith("evil")


class Strict(durable.DurableObject):
    """Refuses upgrades without a ``?ok`` query; ``hold`` blocks until ``release``."""

    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.gate = asyncio.Event()

    async def fetch(self, request: Request) -> durable.Response:
        if "ok" not in request.query_params:
            return durable.JSONResponse({"error": "Forbidden", "message": "no"}, 403)
        return self.ctx.accept_websocket(request)

    async def websocket_message(self, ws: durable.HibernatableWebSocket, message: Any) -> None:
        if message == "boom":
            raise RuntimeError("handler failed")
        if message == "hold":
            await self.gate.wait()
        if message == "release":
            self.gate.set()
        ws.send(f"done:{message}")


strict = durable.Worker(objects={"S": Strict}, limits={"S": durable.Limits(max_pending_events=1)})


@strict.websocket_route("/s")
async def strict_route(websocket: durable.WebSocket, env: Any) -> Any:
    return await env.S.get_by_name("x").fetch(websocket)


@strict.websocket_route("/plain")
async def plain_route(websocket: durable.WebSocket, env: Any) -> None:
    await websocket.accept()
    await websocket.send_text("not hibernatable")
    await websocket.close(1000)


async def test_an_object_can_refuse_an_upgrade_with_any_response(tmp_path: Path) -> None:
    async with live(strict, tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server.ws + "/s"):
                pass
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body) == {"error": "Forbidden", "message": "no"}
        with pytest.raises(InvalidStatus) as unknown:
            async with ws_connect(server.ws + "/nowhere"):
                pass
        assert unknown.value.response.status_code == 404
        assert json.loads(unknown.value.response.body)["error"] == "NotFound"
        assert not server.host.sockets.by_sid


async def test_a_handler_error_is_logged_and_the_socket_stays_open(tmp_path: Path) -> None:
    """As workerd's read loop: an exception in ``websocket_message`` does not close the socket."""
    async with live(strict, tmp_path) as server, ws_connect(server.ws + "/s?ok") as client:
        await client.send("boom")
        await client.send("after")
        assert await client.recv() == "done:after"


async def test_an_overloaded_object_closes_the_socket_1013(tmp_path: Path) -> None:
    async with (
        live(strict, tmp_path) as server,
        ws_connect(server.ws + "/s?ok") as first,
        ws_connect(server.ws + "/s?ok") as b,
    ):
        await first.send("hold")  # the one pending event the limit allows
        await until(lambda: server.host.statistics().active_objects == 1, "activation")
        await b.send("more")
        with pytest.raises(ConnectionClosed):
            await b.recv()
        assert (b.close_code, b.close_reason) == (1013, "Overloaded")
        activation = server.host.active(server.env.S.get_by_name("x").id)
        assert activation is not None
        activation.instance.gate.set()  # type: ignore[attr-defined]
        assert await first.recv() == "done:hold"


async def test_a_handler_may_serve_a_plain_socket_itself(tmp_path: Path) -> None:
    async with live(strict, tmp_path) as server:
        async with ws_connect(server.ws + "/plain") as client:
            assert await client.recv() == "not hibernatable"
        assert not server.host.sockets.by_sid and not server.gateway.clients.sockets


async def test_stopping_the_server_closes_sockets_1012_and_forgets_them(tmp_path: Path) -> None:
    async with live(strict, tmp_path) as server:
        client = await ws_connect(server.ws + "/s?ok")
        host = server.host
        assert len(host.sockets.by_sid) == 1
    with pytest.raises(ConnectionClosed):
        await client.recv()
    assert client.close_code == 1012
    assert not host.sockets.by_sid and not host.sockets.sinks


async def test_under_uvicorns_own_protocol_sockets_still_work(tmp_path: Path) -> None:
    """Without ``DurableWebSocketProtocol`` the gateway falls back to a receive loop per socket;
    only the close handshake differs (the server echoes the client's close itself)."""
    async with live(worker, tmp_path, ws="websockets-sansio") as server:
        url = server.ws + "/ws/r?tag=t"
        async with ws_connect(url) as first, ws_connect(url) as second:
            await first.send("echo:one")
            assert await first.recv() == "echo:one"
            assert await room(server).broadcast("all", "t") == 2
            assert [await first.recv(), await second.recv()] == ["all", "all"]
            await first.send(b"\x01\x02")
            assert await first.recv() == b"\x02\x01"
        await until(lambda: len([e for e in LOG if e[0] == "close"]) == 2, "both closes")
        await until(lambda: not server.host.sockets.by_sid, "the sockets to be forgotten")


async def test_loading_stored_rows_never_replaces_live_sockets(tmp_path: Path) -> None:
    """A partition's rows are read on first use; sockets accepted before that stay the same."""
    async with live(worker, tmp_path) as server, ws_connect(server.ws + "/ws/r?tag=x") as client:
        registry = server.host.sockets
        (record,) = registry.by_sid.values()
        registry._loaded.clear()  # as if no object of the partition had asked yet
        count = server.host.partition_count
        neighbour = next(  # another object of the same partition, with no sockets
            f"n{i}" for i in range(1000)
            if room(server, f"n{i}").id.partition(count) == record.oid.partition(count)
        )  # fmt: skip
        assert await room(server, neighbour).count() == 0  # reads the partition's rows
        assert registry.by_sid[record.sid] is record
        assert await room(server).count("x") == 1
        await client.send("echo:still")
        assert await client.recv() == "echo:still"
