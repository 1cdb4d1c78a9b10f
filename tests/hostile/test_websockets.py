"""Hostile WebSocket clients against a real uvicorn: frames that break the protocol close with
the matching code before the object sees them, an upgrade that never finishes its headers is
timed out, and 10,000 idle sockets leave ``/healthz`` answering (a server in a subprocess, so
client and server descriptors do not share one process's limit)."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from durable.frontdoor import GatewayLimits
from tests.hostile.app import make_worker
from tests.hostile.server import ServerThread, closed_by_peer, json_error, read_response
from tests.hostile.test_fuzz import UPGRADE, frame
from tests.hostile.test_lifecycle import serving

LIMITS = GatewayLimits(header_timeout=0.5, body_timeout=0.3, keep_alive_timeout=0.3)
IDLE_SOCKETS = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(make_worker(), tmp_path_factory.mktemp("ws"), LIMITS) as running:
        yield running


def close_code(server: ServerThread, name: str, payload: bytes) -> int:
    """Open a socket to ``name``, send ``payload``, return the close code the server sends."""
    with server.connect() as sock:
        sock.sendall(UPGRADE % name.encode())
        assert read_response(sock)[0] == 101
        sock.sendall(payload)
        data = b""
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            data += chunk
        assert data[:1] == b"\x88", data  # a close frame, unmasked, from the server
        return int(struct.unpack("!H", data[2:4])[0])


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (frame(0x1, b"\xff\xfe not utf-8"), 1007),
        (frame(0x3, b"reserved opcode"), 1002),
        (frame(0x2, b"unmasked", masked=False), 1002),
        (b"\x82\xff" + struct.pack("!Q", 1 << 40) + b"mask", 1009),  # 1 TiB announced
    ],
)
def test_a_frame_that_breaks_the_protocol_closes_with_its_code_and_reaches_no_object(
    server: ServerThread, payload: bytes, code: int
) -> None:
    name = f"bad-{code}-{payload[:1].hex()}"
    assert close_code(server, name, payload) == code
    assert server.stored(name) == {}
    assert server.healthz() == 200


def test_an_open_socket_outlives_the_http_timeouts_and_still_reaches_the_object(
    server: ServerThread,
) -> None:
    with server.connect() as sock:
        sock.sendall(UPGRADE % b"fine")
        assert read_response(sock)[0] == 101
        time.sleep(3 * max(LIMITS.body_timeout, LIMITS.keep_alive_timeout))  # HTTP would close
        sock.sendall(frame(0x1, b"hello"))
        assert sock.recv(64)[:7] == b"\x81\x05hello"
    assert server.stored("fine") == {"messages": 1}


def test_an_upgrade_that_never_finishes_its_headers_is_timed_out(server: ServerThread) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /ws/half HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upg")
        status, _, body = read_response(sock)
        assert status == 408 and json_error(body) == "RequestTimeout"
        closed_by_peer(sock, 5)
    assert server.stored("half") == {}


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` WebSockets to distinct objects, opened 200 at a time; their writers."""
    held: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE % b"idle-%d" % i)
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        held.append(writer)

    for start in range(0, count, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 200, count))))
    return held


@pytest.mark.slow
async def test_10_000_idle_websockets_leave_healthz_answering(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as (_, base, _log):
        port = int(base.rsplit(":", 1)[1])
        start = time.monotonic()
        held = await open_idle(port, IDLE_SOCKETS)
        opened = time.monotonic() - start
        try:
            async with httpx.AsyncClient(base_url=base) as client:
                for _ in range(5):
                    assert (await client.get("/healthz")).status_code == 200
                metrics = (await client.get("/metrics")).text
                assert (await client.get("/t/after/count")).status_code == 200
            gauge = re.search(r"^durable_gateway_websockets (\S+)$", metrics, re.M)
            assert gauge is not None and float(gauge.group(1)) == IDLE_SOCKETS
        finally:
            for writer in held:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for w in held), return_exceptions=True)
        print(f"{IDLE_SOCKETS} WebSockets opened in {opened:.1f} s")
