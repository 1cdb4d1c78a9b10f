"""A durable cluster on a simulated two-node Ray cluster; run by ``test_two_nodes_on_ray.py``.

``python -m tests.ray.two_nodes OUT_DIR`` starts two simulated Ray nodes, ``node-a`` and
``node-b``, with one host slot each (``tests/ray/simulated.py``).

It starts both slots, waits until each serves the partitions it won (a partition lives on the
node that first served it: its home), increments objects of every partition, reads them again,
sends HTTP requests to node A's gateway only and calls objects through
``connect(address="auto")``; then it asks the directory to move one of node A's partitions to node
B's slot (a planned move: DESIGN §8's copy, ``durable.moves``) and reads that partition's objects
where they are served afterwards. It prints one JSON line: the values written, read back, last
acknowledged and after the move, the Ray node each call ran on, each slot's partitions, the
partition moved, the partition folders of each data dir before and after it, and the move's error if it failed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

import durable
from tests.ray.apps import worker
from tests.ray.harness import wait_until
from tests.ray.simulated import RayNodes, Slots, main

NODES = ("node-a", "node-b")
PARTITIONS = 8


async def serve_and_call(nodes: RayNodes, out: Path) -> dict[str, Any]:
    # Both slots start together: a new partition waits for every slot of the cluster before
    # it gets a home, so the partitions spread over both nodes.
    slots = Slots(out, NODES, PARTITIONS)
    names = [f"o{i}" for i in range(4 * PARTITIONS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in slots.hosts)), 60)

        async def balanced() -> list[list[int]] | None:
            owned = await slots.owned()
            served = sorted(p for slot in owned for p in slot)
            return owned if all(owned) and served == list(range(PARTITIONS)) else None

        owned = await wait_until(balanced, 30, "both slots to serve partitions")
        async with durable.connect(worker, address="auto") as env:
            written = {name: (await env.TALLY.get_by_name(name).increment())["n"] for name in names}
            after = {name: await env.TALLY.get_by_name(name).value() for name in names}
            async with httpx.AsyncClient(base_url=slots.url(0)) as http:
                replies = [(await http.get(f"/tally/{name}")) for name in names]
            rpc = [await env.TALLY.get_by_name(name).increment() for name in names]
            partitions = [env.TALLY.id_from_name(name).partition(PARTITIONS) for name in names]
            folders = slots.folders()  # before the move
            moved, move_error = await move_one(slots, owned, env, names, partitions)
            last = {name: reply["n"] for name, reply in zip(names, rpc, strict=True)}
        return {
            "node_ids": {node: nodes.node_id(node) for node in NODES},
            "owned": owned,
            "written": written,
            "read_back": after,
            "after_move": moved,
            "last": last,
            "moved": owned[0][0],
            "move_error": move_error,
            "http": [[r.status_code, r.json()] for r in replies],
            "rpc": rpc,
            "partitions": partitions,
            "folders": folders,
            "folders_after_move": slots.folders(),
        }
    finally:
        await slots.stop()


async def move_one(
    slots: Slots, owned: list[list[int]], env: Any, names: list[str], partitions: list[int]
) -> tuple[dict[str, int], str | None]:
    """Move one of node A's partitions to node B's slot; its objects' values read after it."""
    moving = owned[0][0]
    try:
        await slots.directory.reassign.remote(moving, 1)
    except Exception as error:
        return {}, repr(error)

    async def moved() -> bool:
        return moving in (await slots.owned())[1]

    await wait_until(moved, 30, f"partition {moving} to move to node B")
    on_it = [n for n, p in zip(names, partitions, strict=True) if p == moving]
    return {name: await env.TALLY.get_by_name(name).value() for name in on_it}, None


if __name__ == "__main__":
    main(serve_and_call, NODES)
