"""The gateway's connection limits against a real uvicorn, attacked from raw sockets (HTTP clients
refuse to send half a request): header read timeout, header size, idle keep-alive, the
connection cap with ``/healthz`` and ``/metrics`` still answering, invalid UTF-8 paths, clients
that leave mid-body, and parser garbage. One server per module, with small limits so each attack
finishes in well under a second; waits are bounded polls on a real clock."""

from __future__ import annotations

import logging
import re
import resource
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

import durable
from durable.frontdoor import GatewayLimits
from durable.gateway import build_app, server_config
from tests.hostile.app import make_worker, release_held
from tests.hostile.server import ServerThread, closed_by_peer, json_error, read_response

LIMITS = GatewayLimits(
    header_timeout=0.5,
    body_timeout=0.5,
    max_header_bytes=8 * 1024,
    keep_alive_timeout=0.5,
    max_connections=24,
    reserved_connections=8,
)
SLACK = 2.5  # seconds a 2-core VM under load may add to a timer before a test calls it broken


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("front-door")
    with ServerThread(make_worker(), data_dir, LIMITS) as running:
        yield running


def refused(server: ServerThread, reason: str) -> int:
    """The ``durable_gateway_refused_total`` count for ``reason`` on ``/metrics``."""
    status, _, body = server.exchange(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    match = re.search(rf'durable_gateway_refused_total{{reason="{reason}"}} (\S+)', body.decode())
    return int(float(match.group(1))) if match else 0


def until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_unfinished_headers_get_408_and_are_closed_after_the_header_timeout(
    server: ServerThread,
) -> None:
    before = refused(server, "header_timeout")
    with server.connect() as sock:
        sock.sendall(b"GET /t/a/count HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        start = time.monotonic()
        status, headers, body = read_response(sock)
        waited = time.monotonic() - start
        assert status == 408 and json_error(body) == "RequestTimeout"
        assert headers["connection"] == "close"
        assert LIMITS.header_timeout * 0.8 <= waited <= LIMITS.header_timeout + SLACK
        closed_by_peer(sock, SLACK)
    assert refused(server, "header_timeout") == before + 1


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: ServerThread,
) -> None:
    with server.connect() as sock:
        assert closed_by_peer(sock, LIMITS.header_timeout + SLACK) >= LIMITS.header_timeout * 0.8


def test_trickled_headers_do_not_extend_the_header_timeout(server: ServerThread) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET /t/a/count HTTP/1.1\r\n")
        with pytest.raises(OSError):  # the server closes while we are still trickling
            for _ in range(100):
                sock.sendall(b"X-A: b\r\n")
                time.sleep(0.05)
                sock.settimeout(0.001)
                try:
                    if sock.recv(65536) == b"":
                        raise ConnectionResetError("closed")
                except TimeoutError:
                    pass
        assert time.monotonic() - start <= LIMITS.header_timeout + SLACK


def test_the_next_request_on_a_kept_alive_connection_has_the_header_timeout_too(
    server: ServerThread,
) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /t/keep/count HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /t/keep/count HTTP/1.1\r\nHo")  # disarms uvicorn's keep-alive timer
        status, _, body = read_response(sock)
        assert status == 408 and json_error(body) == "RequestTimeout"
    assert server.stored("keep") == {"n": 1}


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    server: ServerThread,
) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /t/idle/count HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200
        waited = closed_by_peer(sock, LIMITS.keep_alive_timeout + SLACK)
        assert waited >= LIMITS.keep_alive_timeout * 0.8


def test_headers_over_the_limit_get_431_and_reach_no_object(server: ServerThread) -> None:
    big = b"X-Big: " + b"a" * LIMITS.max_header_bytes + b"\r\n"
    status, _, body = server.exchange(b"GET /t/big/count HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n")
    assert status == 431 and json_error(body) == "RequestHeaderFieldsTooLarge"
    many = b"".join(b"X-%d: v\r\n" % i for i in range(2000))  # many small headers add up too
    status, _, _ = server.exchange(b"GET /t/big/count HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert status == 431
    assert server.stored("big") == {}


def test_an_endless_header_is_cut_off_near_the_limit_not_buffered(server: ServerThread) -> None:
    """256 MiB of one header would be held whole by uvicorn; here the answer comes after about
    the limit, while the client is still sending."""
    with server.connect() as sock:
        sock.sendall(b"GET /t/endless/count HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        chunk = b"a" * 4096
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: it did not wait for the end
        assert sent < 16 * 1024 * 1024
        try:
            status, _, body = read_response(sock)
        except OSError:
            return  # reset before we read: the close is what bounds the memory
        assert status == 431 and json_error(body) == "RequestHeaderFieldsTooLarge"


def test_past_the_connection_cap_requests_get_503_and_healthz_metrics_still_answer(
    server: ServerThread,
) -> None:
    busy = []
    try:
        for i in range(LIMITS.max_connections):
            sock = server.connect()
            sock.sendall(b"GET /t/hold%d/hold HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            busy.append(sock)
        until(lambda: server.live is not None and len(server.live.gateway.front_door.connections)
              >= LIMITS.max_connections)  # fmt: skip
        status, headers, body = server.exchange(b"GET /t/late/count HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 503 and json_error(body) == "Overloaded"
        assert headers["retry-after"] == "1"
        upgrade = (
            b"GET /ws/late HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, body = server.exchange(upgrade)
        assert status == 503 and json_error(body) == "Overloaded"
        assert server.healthz() == 200
        assert refused(server, "over_capacity") >= 2
    finally:
        server.run(release_held())
        for sock in busy:
            assert read_response(sock)[0] == 200
            sock.close()
    assert server.stored("late") == {}
    until(lambda: server.exchange(b"GET /t/late/count HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200)


def test_a_flood_of_silent_connections_never_blocks_healthz(server: ServerThread) -> None:
    """Past the cap plus its reserve, the connection waiting longest for a request is closed to
    admit the new one: silent sockets cannot use up the descriptors."""
    flood: list[socket.socket] = []
    before = refused(server, "evicted")
    bound = LIMITS.max_connections + LIMITS.reserved_connections + 1  # + the one being admitted
    assert server.live is not None
    connections = server.live.gateway.front_door.connections
    try:
        for _ in range(3 * bound):
            flood.append(server.connect())
        until(lambda: len(connections) <= bound)  # an evicted socket closes on the next loop turn
        for _ in range(5):
            assert server.healthz() == 200
        assert refused(server, "evicted") > before
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.parametrize("path", ["/t/%ff/count", "/t/%fe/count", "/t/a%c3/count"])
def test_invalid_utf8_in_the_path_is_400_and_reaches_no_object(
    server: ServerThread, path: str
) -> None:
    status, _, body = server.exchange(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    assert status == 400 and json_error(body) == "BadRequest"
    upgrade = (
        b"GET /ws/%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ) % path.split("/")[2].encode()
    status, _, body = server.exchange(upgrade)
    assert status == 400 and json_error(body) == "BadRequest"
    assert server.stored("\ufffd") == {} and server.stored("a\ufffd") == {}


def test_valid_percent_encoded_utf8_still_reaches_its_object(server: ServerThread) -> None:
    status, _, _ = server.exchange(b"GET /t/%C3%A9t%C3%A9/count HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    assert server.stored("\u00e9t\u00e9") == {"n": 1}


def test_a_body_that_stops_arriving_is_cut_after_the_body_timeout(server: ServerThread) -> None:
    before = refused(server, "body_timeout")
    with server.connect() as sock:
        sock.sendall(b"POST /t/stall/store HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        for _ in range(3):  # progress keeps it open...
            time.sleep(LIMITS.body_timeout / 2)
            sock.sendall(b"0123456789")
        waited = closed_by_peer(sock, LIMITS.body_timeout + SLACK)  # ...a pause does not
        assert waited >= LIMITS.body_timeout * 0.8
    assert refused(server, "body_timeout") == before + 1
    assert server.stored("stall") == {}


def test_a_client_leaving_mid_body_logs_no_error_and_is_counted(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    before = refused(server, "client_disconnect")
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        with server.connect() as sock:
            sock.sendall(b"POST /t/gone/store HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
            sock.sendall(b"only a part")
    until(lambda: refused(server, "client_disconnect") >= before + 5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
    assert server.stored("gone") == {}


def test_bytes_that_are_not_http_get_a_json_400_and_no_log_line(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = refused(server, "bad_request")
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9.9\r\n\r\n",
                    b"GET /t/a/count HTTP/1.1\r\nBad Header\r\n\r\n"):  # fmt: skip
        status, _, body = server.exchange(garbage)
        assert status == 400 and json_error(body) == "BadRequest"
    assert refused(server, "bad_request") == before + 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_worker_gateway_limits_reach_the_server_and_defaults_apply_otherwise() -> None:
    limits = GatewayLimits(header_timeout=3.0, keep_alive_timeout=2.0)
    config = server_config(build_app(durable.Worker(gateway_limits=limits), None), "h", 0)
    assert config.timeout_keep_alive == 2.0
    assert cast(partial[Any], config.http).keywords["door"].limits is limits
    default_config = server_config(build_app(durable.Worker(), None), "h", 0)
    default = cast(partial[Any], default_config.http).keywords["door"]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert default.limits == GatewayLimits() and default.limits.max_connections == soft * 3 // 4
