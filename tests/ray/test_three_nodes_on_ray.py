"""Issue 16, acceptance 1: a three-node cluster, each node with its own data directory and no
shared files, channels forced over TCP. Objects on all three nodes serve HTTP through every
node's gateway and RPC through ``connect(address=...)``, and a room's WebSocket clients spread
over two gateways (neither on the room's node) all get its broadcasts.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_three_nodes_on_ray OUT_DIR``), as in ``test_sockets_on_ray.py``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

import durable
from durable.ids import id_from_name
from tests.ray.apps import worker
from tests.ray.harness import healthy, wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario
from tests.ray.test_sockets_on_ray import recv

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

NODES = ("node-a", "node-b", "node-c")
PARTITIONS = 6
ROUNDS = 2  # HTTP increments per object through each gateway
PER_GATEWAY = 2  # room clients through each of the two other gateways


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_three_nodes_on_ray", tmp_path_factory.mktemp("three"))


def test_every_node_serves_partitions_from_its_own_data_dir(run: dict[str, Any]) -> None:
    assert all(run["owned"]), run["owned"]  # each slot serves at least one partition
    for node, owned in zip(NODES, run["owned"], strict=True):
        assert run["folders"][node] == owned  # its files, and only its files, on its disk


def test_http_through_every_gateway_reaches_objects_on_every_node(run: dict[str, Any]) -> None:
    ran_on = run["http"]  # [gateway][object] -> the Ray nodes the increments ran on, in order
    for gateway in range(len(NODES)):
        for obj in range(len(NODES)):
            assert ran_on[gateway][obj] == [run["node_ids"][obj]] * ROUNDS
    counts = run["http_counts"]  # every increment of an object, through any gateway, counted
    assert counts == [list(range(1, len(NODES) * ROUNDS + 1))] * len(NODES)


def test_rpc_through_connect_reaches_objects_on_every_node(run: dict[str, Any]) -> None:
    assert run["rpc"] == [[run["node_ids"][i], len(NODES) * ROUNDS + 1] for i in range(3)]


def test_a_room_s_clients_over_two_other_gateways_all_get_its_broadcasts(
    run: dict[str, Any],
) -> None:
    sent = sorted(run["sent"])
    assert len(sent) == 2 * PER_GATEWAY
    assert run["received"] == [sent] * (2 * PER_GATEWAY)


# -- the scenario (subprocess) -------------------------------------------------------------------


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS, channel="tcp")
    try:
        owned = await wait_until(partial(on_every_node, slots), 90, "every slot to serve")
        for slot in range(len(NODES)):
            await wait_until(partial(healthy, slots.url(slot)), 60, f"gateway {slot}")
        names = [name_in("TALLY", "tally", partitions) for partitions in owned]
        http, counts = await increments_over_http(slots, names)
        async with durable.connect(worker, address=nodes.cluster.address) as env:
            rpc = [await env.TALLY.get_by_name(n).increment() for n in names]
        sent, received = await room_over_two_gateways(slots, name_in("ROOM", "room", owned[2]))
        return {
            "owned": owned,
            "folders": slots.folders(),
            "node_ids": [nodes.node_id(n) for n in NODES],
            "http": http,
            "http_counts": counts,
            "rpc": [[r["node"], r["n"]] for r in rpc],
            "sent": sent,
            "received": received,
        }
    finally:
        await slots.stop()


async def on_every_node(slots: Slots) -> list[list[int]] | None:
    now = await slots.owned()
    placed = sorted(p for s in now for p in s) == list(range(PARTITIONS))
    return now if all(now) and placed else None


def name_in(kind: str, prefix: str, partitions: list[int]) -> str:
    """The first name of ``kind`` whose object lives in one of ``partitions``."""
    names = (f"{prefix}-{i}" for i in range(1000))
    return next(n for n in names if id_from_name(kind, n).partition(PARTITIONS) in partitions)


async def increments_over_http(
    slots: Slots, names: list[str]
) -> tuple[list[list[list[str]]], list[list[int]]]:
    """Each object incremented ROUNDS times through each gateway: where each ran, and the counts."""
    ran_on = [[[] for _ in names] for _ in slots.hosts]
    counts: list[list[int]] = [[] for _ in names]
    for gateway in range(len(slots.hosts)):
        async with httpx.AsyncClient(base_url=slots.url(gateway), timeout=30) as http:
            for obj, name in enumerate(names):
                for _ in range(ROUNDS):
                    response = await http.get(f"/tally/{name}")
                    assert response.status_code == 200, response.text
                    ran_on[gateway][obj].append(response.json()["node"])
                    counts[obj].append(response.json()["n"])
    return ran_on, counts


async def room_over_two_gateways(slots: Slots, room: str) -> tuple[list[str], list[list[str]]]:
    """Clients of ``room`` (on the third node) through the first two gateways: one message each,
    every client must get all of them."""
    urls = [slots.url(g).replace("http", "ws") for g in (0, 1)]
    clients = [await ws_connect(f"{u}/room/{room}") for u in urls for _ in range(PER_GATEWAY)]
    try:
        sent = [f"m{i}" for i in range(len(clients))]
        for client, text in zip(clients, sent, strict=True):
            await client.send(text)
        received = await asyncio.gather(*(recv(c, len(clients)) for c in clients))
        return sent, [sorted(r) for r in received]
    finally:
        for client in clients:
            await client.close()


if __name__ == "__main__":
    main(scenario, NODES)
