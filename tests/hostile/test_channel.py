"""The channel against malformed input: a real ``ChannelServer`` on a Unix socket, fed 2,000
generated frames (arbitrary msgpack values, near-valid frames, raw bytes) after a valid hello.
The connection may close; the server never raises out of a task, and a well-formed call on a new
connection is answered throughout. A wrong token is refused before any frame is read."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable.channel import ChannelServer, Frame

TOKEN = "cluster-token"
FUZZ = settings(max_examples=2000, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
HEALTH_EVERY = 100


async def echo(frame: list[Any]) -> list[list[Any]]:
    """What a host does with a well-formed CALL: answer it (a malformed one raises)."""
    _, rid, _partition, _epoch, namespace, _oid, _name, method, *_payload = frame
    return [[Frame.REPLY, rid, f"{namespace}.{method}".encode()]]


class ChannelThread:
    """A ChannelServer on its own event loop and thread; records what escaped its tasks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.escaped: list[Any] = []  # contexts of exceptions no task retrieved
        self.inputs = 0
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: self.escaped.append(context))
        self.server = ChannelServer(TOKEN, echo)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ChannelThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start_unix(self.path), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def connect(self, token: str = TOKEN) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(self.path))
        sock.sendall(msgpack.packb([Frame.HELLO, token]))
        return sock


def call(sock: socket.socket, rid: int) -> Any:
    """One well-formed CALL and its answer (None if the server closed the connection).

    A server that closes with our CALL still unread resets the connection instead of
    ending it cleanly, depending on timing; both mean "closed".
    """
    try:
        sock.sendall(msgpack.packb([Frame.CALL, rid, 0, 1, "NS", b"id", "name", "ping", b""]))
        return next_frame(sock)
    except (ConnectionResetError, BrokenPipeError):
        return None


def next_frame(sock: socket.socket) -> Any:
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        unpacker.feed(data)
        for frame in unpacker:
            return frame


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChannelThread]:
    with ChannelThread(tmp_path_factory.mktemp("channel") / "c.sock") as running:
        yield running


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=10)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=30)  # fmt: skip
KINDS = st.sampled_from(list(Frame)) | st.integers(-5, 300)
NEAR_FRAMES = st.builds(lambda kind, rest: [int(kind), *rest], KINDS, st.lists(VALUES, max_size=10))
INPUTS = (
    NEAR_FRAMES.map(msgpack.packb) | VALUES.map(msgpack.packb) | st.binary(min_size=1, max_size=64)
)


@FUZZ
@given(data=st.lists(INPUTS, min_size=1, max_size=3))
def test_malformed_frames_close_at_most_their_connection(
    channel: ChannelThread, data: list[bytes]
) -> None:
    with channel.connect() as sock:
        for chunk in data:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # closed by the server: the documented answer to a malformed frame
    channel.inputs += 1
    if channel.inputs % HEALTH_EVERY == 0:
        with channel.connect() as good:
            assert call(good, 7) == [Frame.REPLY, 7, b"NS.ping"]
    assert channel.escaped == []


def test_a_well_formed_call_is_answered_after_the_fuzz(channel: ChannelThread) -> None:
    with channel.connect() as good:
        assert call(good, 1) == [Frame.REPLY, 1, b"NS.ping"]
    assert channel.escaped == []


def test_a_wrong_token_is_refused_and_logged(
    channel: ChannelThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="durable.channel"):
        with channel.connect(token="guess") as sock:
            assert call(sock, 1) is None  # closed: nothing ran
        for _ in range(100):  # the server's thread logs once the connection is refused
            if caplog.records:
                break
            threading.Event().wait(0.01)
    assert any("token" in r.getMessage() for r in caplog.records)


def test_a_body_for_an_unknown_request_closes_the_connection(channel: ChannelThread) -> None:
    with channel.connect() as sock:
        sock.sendall(msgpack.packb([Frame.BODY, 99, b"chunk", False]))
        assert sock.recv(1) == b""
    assert channel.escaped == []
