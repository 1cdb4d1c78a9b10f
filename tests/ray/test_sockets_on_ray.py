"""Issue 16, acceptance 1's last clause: a room's WebSocket clients spread over two gateways all
get its broadcasts.

A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, one slot and one data dir per
node, the channel forced over TCP). Two rooms, one in a partition of each slot; each room gets
clients (the ``websockets`` library) through both slots' gateways, so every room has clients
whose gateway is in the object's slot and clients whose gateway reaches it over the channel
(SOCKET frames out, PUSH frames back, ``durable/relay.py``). Every client sends one message;
every client of the room must receive all of them. The fan-out time (a message sent until every
client of the room has it) is measured per sending gateway, and for a crowd of 100 clients all on
gateway A, of a room in slot A (pushes in process) and of one in slot B (over the channel: one
PUSH frame carrying one op for the 100 sockets). Then slot B stops: every socket of
its room, and every socket its gateway held, is closed with 1012, and room A's clients on
gateway A still talk.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_sockets_on_ray OUT_DIR``), as in ``test_homes_on_ray.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from durable.ids import id_from_name
from tests.ray.harness import close_code, healthy, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

NODES = ("node-a", "node-b")
PARTITIONS = 4
PER_GATEWAY = 3  # clients of each room through each gateway
ROUNDS = 40  # timed fan-outs per room and sending gateway
CROWD = 100  # clients on gateway A of a room in slot A, then of a room in slot B


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_sockets_on_ray", tmp_path_factory.mktemp("sockets"))


def test_every_client_of_a_room_gets_every_message_through_either_gateway(
    run: dict[str, Any],
) -> None:
    for room in ("a", "b"):
        sent = sorted(run["sent"][room])
        assert len(sent) == 2 * PER_GATEWAY
        assert run["received"][room] == [sent] * (2 * PER_GATEWAY), room
        assert run["members"][room] == 2 * PER_GATEWAY


def test_rooms_live_in_different_slots(run: dict[str, Any]) -> None:
    a, b = run["owned"]
    assert run["partition"]["a"] in a and run["partition"]["b"] in b


def test_a_stopping_slot_closes_its_sockets_1012_and_the_other_room_talks_on(
    run: dict[str, Any],
) -> None:
    assert run["closed_b"] == [1012] * (2 * PER_GATEWAY)  # room B: on both gateways
    assert run["closed_a_on_b"] == [1012] * PER_GATEWAY  # gateway B's clients of room A
    assert run["after_stop"] == [["still here"]] * PER_GATEWAY


def test_fan_out_times_are_reported(run: dict[str, Any]) -> None:
    assert set(run["fan_out_ms"]) == {"a<-0", "a<-1", "b<-0", "b<-1"}
    assert set(run["crowd_fan_out_ms"]) == {"in slot A", "in slot B"}
    times = [*run["fan_out_ms"].values(), *run["crowd_fan_out_ms"].values()]
    assert all(v["p50"] > 0 for v in times)


# -- the scenario (subprocess) -------------------------------------------------------------------


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS, channel="tcp")
    opened: list[ClientConnection] = []
    try:
        owned = await wait_until(lambda: spread(slots), 90, "both slots to serve partitions")
        for slot in range(len(NODES)):
            await wait_until(partial(healthy, slots.url(slot)), 60, f"gateway {slot}")
        rooms = {"a": room_in(owned[0]), "b": room_in(owned[1])}
        clients: dict[str, list[ClientConnection]] = {}
        for key, name in rooms.items():
            clients[key] = [
                await ws_connect(f"{slots.url(slot).replace('http', 'ws')}/room/{name}")
                for slot in range(len(NODES))
                for _ in range(PER_GATEWAY)
            ]
            opened += clients[key]
        sent = {key: [f"{key}:{i}" for i in range(len(cs))] for key, cs in clients.items()}
        received = {}
        for key, room_clients in clients.items():
            for client, text in zip(room_clients, sent[key], strict=True):
                await client.send(text)
            received[key] = [sorted(await recv(c, len(room_clients))) for c in room_clients]
        fan_out = {
            f"{key}<-{slot}": await timed_fan_out(clients[key], clients[key][slot * PER_GATEWAY])
            for key in clients
            for slot in range(len(NODES))
        }
        members = await room_members(slots, rooms)
        crowd_ms = {
            key: await crowd_fan_out(slots.url(0), room_in(owned[slot], skip=2))
            for key, slot in (("in slot A", 0), ("in slot B", 1))
        }

        await slots.hosts[1].stop.remote()  # slot B stops: its gateway and its host
        closed_b = [await close_code(c) for c in clients["b"]]
        closed_a_on_b = [await close_code(c) for c in clients["a"][PER_GATEWAY:]]
        await clients["a"][0].send("still here")
        after_stop = [await recv(c, 1) for c in clients["a"][:PER_GATEWAY]]
        return {
            "owned": owned,
            "partition": {
                k: id_from_name("ROOM", n).partition(PARTITIONS) for k, n in rooms.items()
            },
            "sent": sent,
            "received": received,
            "members": members,
            "fan_out_ms": fan_out,
            "crowd_fan_out_ms": crowd_ms,
            "closed_b": closed_b,
            "closed_a_on_b": closed_a_on_b,
            "after_stop": after_stop,
        }
    finally:
        for client in opened:
            await client.close()
        await slots.stop()


async def spread(slots: Slots) -> list[list[int]] | None:
    now = await slots.owned()
    return (
        now if all(now) and sorted(p for s in now for p in s) == list(range(PARTITIONS)) else None
    )


def room_in(partitions: list[int], skip: int = 0) -> str:
    """A room name whose object lives in one of ``partitions`` (the ``skip``-th such name)."""
    names = (f"room-{i}" for i in range(1000))
    chosen = [n for n in names if id_from_name("ROOM", n).partition(PARTITIONS) in partitions]
    return chosen[skip]


async def recv(client: ClientConnection, n: int) -> list[Any]:
    return [await asyncio.wait_for(client.recv(), 30) for _ in range(n)]


async def timed_fan_out(room: list[ClientConnection], sender: ClientConnection) -> dict[str, float]:
    """Milliseconds from a send until every client of the room has the message."""
    times = []
    for i in range(ROUNDS):
        start = time.perf_counter()
        await sender.send(f"t{i}")
        await asyncio.gather(*(recv(c, 1) for c in room))
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=10)
    return {"p50": statistics.median(times), "p90": cuts[-1], "max": max(times)}


async def crowd_fan_out(url: str, name: str) -> dict[str, float]:
    """``timed_fan_out`` for CROWD clients of room ``name``, all through the gateway at ``url``."""
    crowd = [await ws_connect(f"{url.replace('http', 'ws')}/room/{name}") for _ in range(CROWD)]
    try:
        return await timed_fan_out(crowd, crowd[0])
    finally:
        for client in crowd:
            await client.close()


async def room_members(slots: Slots, rooms: dict[str, str]) -> dict[str, int]:
    import durable
    from tests.ray.apps import worker

    env: Any
    async with durable.connect(worker, address="auto") as env:
        return {key: await env.ROOM.get_by_name(name).members() for key, name in rooms.items()}


if __name__ == "__main__":
    main(scenario, NODES)
