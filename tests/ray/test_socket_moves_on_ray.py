"""Issue 16: a partition that moves to another slot (a lease change) closes its WebSockets with
1012 (service restart) on every gateway, as workerd does on a restart, and clients that reconnect
reach the object at its new owner.

Two host slots on one node share the HTTP port, so a room's clients land on both gateways. The
room's partition is moved from slot A to slot B with ``DirectoryActor.reassign`` (as the fencing
test does); every client must see close code 1012, and new clients must all get a broadcast.
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from durable.ids import id_from_name
from tests.ray.harness import wait_until
from tests.ray.test_sockets_on_ray import close_code, recv

pytestmark = pytest.mark.ray

PARTITIONS = 4
A, B = 0, 1  # host slots


async def test_a_moved_partition_closes_its_sockets_1012_and_clients_reconnect(
    start_cluster: Any,
) -> None:
    cluster = start_cluster(slots=2, partitions=PARTITIONS)
    owned = await cluster.settled()
    p = min(owned[A])
    name = next(
        f"room-{i}"
        for i in range(1000)
        if id_from_name("ROOM", f"room-{i}").partition(PARTITIONS) == p
    )
    url = f"{cluster.url.replace('http', 'ws')}/room/{name}"
    clients = [await ws_connect(url) for _ in range(6)]
    await clients[0].send("before")
    assert [await recv(c, 1) for c in clients] == [["before"]] * 6

    await cluster.directory.reassign.remote(p, B)
    assert [await close_code(c) for c in clients] == [1012] * 6

    async def moved() -> bool:
        return p in (await cluster.owned())[B]

    await wait_until(moved, 20, f"slot {B} to serve partition {p}")
    again = [await ws_connect(url) for _ in range(6)]
    try:
        await again[0].send("after")
        assert [await recv(c, 1) for c in again] == [["after"]] * 6
    finally:
        for client in again:
            await client.close()
