"""``durable dev/serve`` sockets: the listening sockets the CLI and the Ray slots bind themselves
(``server.bind``)."""

from __future__ import annotations

import asyncio
import socket

from durable.server import bind


async def accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the first connection accepted on ``listener`` by asyncio."""
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accept, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen, 5)
        writer.close()
    return value


async def test_connections_served_from_the_cli_socket_have_nagle_off() -> None:
    # With Nagle on, a response written in two parts waits ~40 ms for the client's delayed ACK.
    assert await accepted_nodelay(bind("127.0.0.1", 0)) == 1


async def test_connections_served_by_a_ray_slot_socket_have_nagle_off() -> None:
    assert await accepted_nodelay(bind("127.0.0.1", 0, reuse_port=True)) == 1
