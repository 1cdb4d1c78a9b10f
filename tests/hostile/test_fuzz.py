"""Hypothesis against each entry point of one real server (HTTP, WebSocket, RPC), 2,000
generated inputs each: no 5xx except the documented 503/507, every error body JSON and free of
tracebacks, storage unchanged by rejected input, and ``/healthz`` answering throughout."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import values
from durable.errors import DurableError
from durable.frontdoor import GatewayLimits
from durable.ids import id_from_name
from tests.hostile.app import make_worker
from tests.hostile.server import ServerThread, read_response

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ALLOWED_5XX = {503, 507}
NAMES = st.sampled_from(["a", "b", "é", "x y", "-"])
HEALTH_EVERY = 50  # examples between /healthz probes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    limits = GatewayLimits(header_timeout=2.0, body_timeout=0.1, max_header_bytes=16 * 1024)
    with ServerThread(make_worker(), tmp_path_factory.mktemp("fuzz"), limits) as running:
        yield running


class Probe:
    """Checks ``/healthz`` every ``HEALTH_EVERY`` calls."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        if self.calls % HEALTH_EVERY == 0:
            assert self.server.healthz() == 200


def assert_json_error(status: int, body: bytes) -> None:
    assert status < 500 or status in ALLOWED_5XX, (status, body)
    assert b"Traceback" not in body and b'File "' not in body, body
    if status >= 400:
        document = json.loads(body)
        assert isinstance(document.get("error"), str) and "message" in document, document


# -- HTTP -----------------------------------------------------------------------------------------
TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                min_size=1, max_size=12)  # fmt: skip
HEADER_VALUE = st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
RAW_SEGMENT = st.one_of(
    st.text(max_size=20).map(lambda t: quote(t, safe="")),
    st.binary(max_size=6).map(lambda b: "".join(f"%{x:02x}" for x in b)),  # maybe not UTF-8
    st.sampled_from(["%", "%zz", "..", ".", "%2e%2e", "%00", "a%2fb"]),
)


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(NAMES)
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]) | TOKEN)
    action = draw(st.sampled_from(["count", "store"]) | RAW_SEGMENT)
    path = draw(st.sampled_from([f"/t/{quote(name, safe='')}/{action}", f"/{action}",
                                 f"/t/{action}", "/ws/" + quote(name, safe="")]))  # fmt: skip
    body = draw(st.binary(max_size=256))
    headers = draw(st.lists(st.tuples(TOKEN, HEADER_VALUE), max_size=6))
    length = draw(st.sampled_from(["exact", "missing", "short", "garbage", "huge"]))
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: fuzz"]
    lines += [k.encode() + b": " + v for k, v in headers if k.lower() != "content-length"]
    if length == "exact" or (length == "short" and not body):
        lines.append(b"Content-Length: %d" % len(body))
    elif length == "short":
        body = body[: len(body) // 2]
        lines.append(b"Content-Length: %d" % (len(body) + 1))
    elif length == "garbage":
        lines.append(b"Content-Length: x1")
    elif length == "huge":
        lines.append(b"Content-Length: 99999999999")
    lines.append(b"Connection: close")
    return name, b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange_or_close(server: ServerThread, raw: bytes) -> tuple[int, bytes] | None:
    """The response to ``raw``, or None if the server closed without one (a body shorter than
    its Content-Length is cut by the body timeout)."""
    with server.connect(timeout=5.0) as sock:
        sock.sendall(raw)
        try:
            status, _, body = read_response(sock)
        except ConnectionError:
            return None
        return status, body


def test_fuzzed_http_requests_get_documented_json_answers(server: ServerThread) -> None:
    probe = Probe(server)

    @FUZZ
    @given(request=http_requests())
    def check(request: tuple[str, bytes]) -> None:
        name, raw = request
        before = server.stored(name)
        answer = exchange_or_close(server, raw)
        if answer is None:
            assert server.stored(name) == before
            return
        status, body = answer
        assert status < 500 or status in ALLOWED_5XX, (raw, status, body)
        if not raw.startswith(b"HEAD "):  # a HEAD answer has no body to check
            assert_json_error(status, body)
        if status >= 400:
            assert server.stored(name) == before, (raw, status, body)
        probe.tick()

    check()
    assert server.healthz() == 200


# -- WebSocket ------------------------------------------------------------------------------------
def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def kind_of(first: int) -> str:
    """ "bad" if a frame starting with byte ``first`` breaks the protocol whatever follows (RSV
    bits without an extension, a reserved opcode, a continuation of nothing), else "maybe"."""
    opcode = first & 0x0F
    return "bad" if first & 0x70 or opcode in (0, 3, 4, 5, 6, 7) or opcode > 0xA else "maybe"


FRAMES = st.one_of(
    st.text(max_size=64).map(lambda t: ("data", frame(0x1, t.encode()))),
    st.binary(max_size=64).map(lambda b: ("data", frame(0x2, b))),
    st.binary(min_size=1, max_size=8).map(lambda b: ("bad", frame(0x1, b"\xff" + b))),  # not UTF-8
    st.integers(3, 7).map(lambda op: ("bad", frame(op, b"x"))),  # reserved opcodes
    st.binary(max_size=8).map(lambda b: ("bad", frame(0x2, b, masked=False))),  # unmasked
    st.just(("bad", frame(0x9, b"p" * 200))),  # a control frame over 125 bytes
    st.just(("bad", frame(0x0, b"continuation without a start"))),
    st.just(("bad", b"\x82\xff" + struct.pack("!Q", 1 << 40) + b"mask")),  # 1 TiB announced
    st.tuples(st.integers(0, 255), st.binary(max_size=16)).map(  # any FIN/RSV/opcode byte
        lambda first: (kind_of(first[0]), bytes([first[0]]) + frame(0x2, first[1])[1:])
    ),
    st.just(("ok", frame(0x9, b"ping"))),
)
UPGRADE = (
    b"GET /ws/%s HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def close_frame(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the server already closed
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))


def drain(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket timeout)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_fuzzed_websocket_frames_never_break_the_server(server: ServerThread) -> None:
    probe = Probe(server)

    @FUZZ
    @given(name=NAMES, frames=st.lists(FRAMES, min_size=1, max_size=4))
    def check(name: str, frames: list[tuple[str, bytes]]) -> None:
        before = server.stored(name).get("messages", 0)
        with server.connect(timeout=5.0) as sock:
            sock.sendall(UPGRADE % quote(name, safe="").encode())
            status, _, _ = read_response(sock)
            assert status == 101
            with contextlib.suppress(OSError):
                sock.sendall(b"".join(raw for _, raw in frames))
            close_frame(sock)
            answer = drain(sock)
        assert b"HTTP/1.1 5" not in answer
        sent = sum(1 for kind, _ in frames if kind in ("data", "maybe"))
        after = server.stored(name).get("messages", 0)
        assert before <= after <= before + sent
        if frames[0][0] == "bad":
            assert after == before  # nothing past a broken frame reached the object
        probe.tick()

    check()
    assert server.healthz() == 200


# -- RPC --------------------------------------------------------------------------------------------
ARGS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
PAYLOADS = st.one_of(
    st.binary(max_size=32),
    ARGS.map(values.encode),
    st.tuples(st.lists(ARGS, max_size=3), st.dictionaries(st.text(max_size=6), ARGS, max_size=2))
    .map(lambda pair: values.encode([pair[0], pair[1]])),
)  # fmt: skip
METHODS = st.sampled_from(["add", "stored", "fetch", "alarm", "_private", "__init__",
                           "websocket_message", "nope"]) | st.text(max_size=10)  # fmt: skip


def test_fuzzed_rpc_calls_raise_only_durable_errors_or_argument_type_errors(
    server: ServerThread,
) -> None:
    probe = Probe(server)
    assert server.live is not None
    host = server.live.host

    @FUZZ
    @given(name=NAMES, method=METHODS, payload=PAYLOADS)
    def check(name: str, method: str, payload: bytes) -> None:
        before = server.stored(name)
        try:
            result: Any = server.run(host.call(id_from_name("TARGET", name), method, payload))
        except (DurableError, TypeError) as error:
            assert not isinstance(error, DurableError) or not error.retryable, error
            assert server.stored(name) == before
        else:
            values.decode(result)
        probe.tick()

    check()
    assert server.healthz() == 200
