"""The channel over TCP (CONTRACTS §9): round trip with the cluster's token, a wrong token
refused and logged once per peer per minute, TLS with a self-signed cluster cert, a plain
client against a TLS server failing cleanly, and the endpoint format and choice."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from durable.channel import (
    ChannelClient,
    ChannelServer,
    Frame,
    NotSent,
    answer,
)
from durable.endpoint import Endpoint, client_tls, server_tls
from durable.errors import ConnectionLost

TOKEN = "cluster-token"
CALL = [Frame.CALL, 0, 1, "ns", b"raw", None, "hi", b""]


async def echo(frame: list[Any]) -> list[list[Any]]:
    return [[Frame.REPLY, frame[1], f"{frame[4]}.{frame[7]}".encode()]]


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return cert_in(tmp_path), str(tmp_path / "k.pem")


async def round_trip(server: ChannelServer, client: ChannelClient) -> bytes:
    try:
        return bytes(answer(await client.request(CALL))[2])
    finally:
        await client.close()
        await server.close()


async def test_tcp_round_trip_with_the_token() -> None:
    server = ChannelServer(TOKEN, echo)
    address = await server.start_tcp("127.0.0.1")
    assert await round_trip(server, ChannelClient(address, TOKEN)) == b"ns.hi"


async def test_wrong_token_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    server = ChannelServer(TOKEN, echo)
    address = await server.start_tcp("127.0.0.1")
    caplog.set_level(logging.WARNING, logger="durable.channel")
    try:
        for _ in range(3):
            client = ChannelClient(address, "wrong")
            with pytest.raises(ConnectionLost):
                await client.request(CALL)
            await client.close()
        assert server.statistics().refused == 3
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1 and "127.0.0.1" in refusals[0].getMessage()
    finally:
        await server.close()


async def test_tls_round_trip(cert: tuple[str, str]) -> None:
    server = ChannelServer(TOKEN, echo)
    address = await server.start_tcp("127.0.0.1", 0, server_tls(*cert))
    client = ChannelClient(address, TOKEN, tls=client_tls(cert[0]))
    assert await round_trip(server, client) == b"ns.hi"


async def test_plain_client_against_tls_server_fails_cleanly(cert: tuple[str, str]) -> None:
    server = ChannelServer(TOKEN, echo)
    address = await server.start_tcp("127.0.0.1", 0, server_tls(*cert))
    client = ChannelClient(address, TOKEN)
    try:
        with pytest.raises(ConnectionLost):  # the server drops the non-TLS bytes
            await asyncio.wait_for(client.request(CALL), 10)
        assert server.statistics().connections == 0
    finally:
        await client.close()
        await server.close()


async def test_tls_client_with_another_cert_sends_nothing(
    cert: tuple[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    server = ChannelServer(TOKEN, echo)
    address = await server.start_tcp("127.0.0.1", 0, server_tls(*cert))
    stranger = cert_in(other)
    client = ChannelClient(address, TOKEN, tls=client_tls(stranger))
    try:
        with pytest.raises(NotSent):  # the server's cert is not the one trusted
            await client.request(CALL)
    finally:
        await client.close()
        await server.close()


def cert_in(folder: Path) -> str:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=durable",
         "-days", "1", "-keyout", str(folder / "k.pem"), "-out", str(folder / "c.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(folder / "c.pem")


def test_endpoint_format_parses_back() -> None:
    endpoint = Endpoint("n1", "/tmp/d/host-0.sock", "10.0.0.5:4242")
    assert str(endpoint) == "node=n1;unix=/tmp/d/host-0.sock;tcp=10.0.0.5:4242"
    assert Endpoint.parse(str(endpoint)) == endpoint
    assert Endpoint.parse("unix:/tmp/x.sock") == Endpoint("", "/tmp/x.sock", "")


@pytest.mark.parametrize(
    ("node", "channel", "dialled"),
    [
        ("n1", "auto", "unix:/s.sock"),  # same node
        ("n2", "auto", "tcp:10.0.0.5:4242"),  # another node
        ("", "auto", "tcp:10.0.0.5:4242"),  # outside Ray: no node known
        ("n1", "tcp", "tcp:10.0.0.5:4242"),  # forced
    ],
)
def test_endpoint_choice(node: str, channel: str, dialled: str) -> None:
    assert Endpoint("n1", "/s.sock", "10.0.0.5:4242").dial(node, channel) == dialled


def test_unix_only_address_dials_the_socket() -> None:
    assert Endpoint.parse("unix:/s.sock").dial("n2", "tcp") == "unix:/s.sock"
