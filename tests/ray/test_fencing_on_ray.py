"""Issue 9, acceptance 3 (one machine): a partition granted to a second host fences the first.

Two host slots, four partitions. The first test moves a partition from slot A to slot B while
both run and a client keeps incrementing an object of it, by ``DirectoryActor.reassign``. The
second test pauses A
(SIGSTOP) with the real ``DirectoryActor`` until A's lease lapses and B is granted the partition,
then checks what A does with a call that reaches it as it wakes.

Raw frames carry an explicit (partition, epoch), as a caller holding a stale table sends them:
through ``durable.channel.ChannelClient`` in the first test, written straight to the slot's Unix
socket in the second (so the frame is in the socket's buffer before the paused slot wakes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

import durable
from durable import values
from durable.channel import ChannelClient, Frame
from durable.endpoint import Endpoint
from tests.ray.apps import worker
from tests.ray.harness import (
    AFTER,
    BEFORE,
    Client,
    RunningCluster,
    holds,
    keep_incrementing,
    launch,
    make_config,
    shutdown,
    stop_load,
    wait_until,
)

pytestmark = pytest.mark.ray

PARTITIONS = 4
A, B = 0, 1  # host slots


def name_in(env: Any, partition: int) -> str:
    """A TALLY object name whose id falls in ``partition``."""
    for i in range(1000):
        if env.TALLY.id_from_name(f"o{i}").partition(PARTITIONS) == partition:
            return f"o{i}"
    raise LookupError(partition)


async def raw_increment(address: str, token: str, env: Any, name: str, p: int, epoch: int) -> Any:
    """Send one CALL ``increment`` at (partition, epoch); the host's answer frame."""
    oid = env.TALLY.id_from_name(name)
    client = ChannelClient(Endpoint.parse(address).dial(""), token)
    try:
        frame = [Frame.CALL, p, epoch, oid.namespace, oid.raw, oid.name, "increment"]
        return await asyncio.wait_for(client.request([*frame, values.encode([[], {}])]), 10)
    finally:
        await client.close()


async def partition_of_slot_a(cluster: RunningCluster) -> tuple[int, int]:
    """A partition of slot A and its epoch, once placement is balanced."""
    owned = await cluster.settled()
    p = min(owned[A])
    return p, owned[A][p]


async def test_partition_granted_to_a_second_slot_is_refused_by_the_first(
    ray_session: Any, tmp_path: Path
) -> None:
    config = make_config(tmp_path / "data", slots=2, partitions=PARTITIONS)
    cluster = launch(config)
    directory = cluster.directory
    try:
        p, old_epoch = await partition_of_slot_a(cluster)
        pid_a, pid_b = await cluster.pids()
        old_address = (await cluster.table())[p][1]
        stop = asyncio.Event()
        async with durable.connect(worker, address="auto") as env:
            client = Client(name_in(env, p))
            task = asyncio.ensure_future(keep_incrementing(env, client, stop))
            try:
                await wait_until(holds(lambda: len(client.acked) >= BEFORE), 30, "load")
                await directory.reassign.remote(p, B)

                async def moved() -> int | None:
                    return (await cluster.owned())[B].get(p)

                pinned = time.monotonic()
                new_epoch = await wait_until(moved, 20, f"slot {B} to serve partition {p}")
                move = time.monotonic() - pinned
                mark = len(client.log)
                await wait_until(holds(lambda: client.acks_since(mark) >= AFTER), 30, "load")
            finally:
                await stop_load(stop, [task])
            assert new_epoch > old_epoch
            assert p not in (await cluster.owned())[A]
            for epoch in (old_epoch, new_epoch):  # A runs nothing of p, at any epoch
                answer = await raw_increment(old_address, config.token, env, client.name, p, epoch)
                assert answer[0] == Frame.NOT_OWNER
                assert answer[2:] == [p, epoch]
            stub = env.TALLY.get_by_name(client.name)
            final = await stub.value()
            client.check(final)  # no acknowledged write lost, none applied twice
            history = [h["pid"] for h in await stub.history()]
            switch = history.index(pid_b)  # the object ran on A, then only on B: never on both
            assert set(history[:switch]) == {pid_a}
            assert set(history[switch:]) == {pid_b}
            assert set(client.pids[mark:]) == {pid_b}
        errors = sorted({type(e).__name__ for e in client.failures})
        print(f"\nmove: slot {B} served partition {p} {move:.2f} s after the pin; the client saw "
              f"{len(client.failures)} failed calls meanwhile {errors}")  # fmt: skip
    finally:
        shutdown(cluster.cluster)


async def test_a_paused_slot_whose_lease_lapsed_refuses_calls_when_it_wakes(
    start_cluster: Any,
) -> None:
    cluster = start_cluster(slots=2, partitions=PARTITIONS)
    p, old_epoch = await partition_of_slot_a(cluster)
    pid_a, _ = await cluster.pids()
    old_address = (await cluster.table())[p][1]
    async with durable.connect(worker, address="auto") as env:
        name = name_in(env, p)
        stub = env.TALLY.get_by_name(name)
        oid = env.TALLY.id_from_name(name)
        reader, writer = await asyncio.open_unix_connection(Endpoint.parse(old_address).unix)
        frames = msgpack.Unpacker(raw=False)

        def increment(rid: int) -> bytes:
            call = [Frame.CALL, rid, p, old_epoch, oid.namespace, oid.raw, oid.name, "increment"]
            return bytes(msgpack.packb([*call, values.encode([[], {}])]))

        async def next_frame() -> list[Any]:
            while (frame := next(frames, None)) is None:
                frames.feed(await asyncio.wait_for(reader.read(65536), 10))
            return list(frame)

        writer.write(msgpack.packb([Frame.HELLO, cluster.config.token]) + increment(1))
        assert (await next_frame())[0] == Frame.REPLY  # A serves p at its epoch
        os.kill(pid_a, signal.SIGSTOP)
        try:

            async def granted_away() -> bool:
                epoch, address = (await cluster.table()).get(p, (0, ""))
                return epoch > old_epoch and address != old_address

            await wait_until(granted_away, 20, f"partition {p} to be granted to slot {B}")
            writer.write(increment(2))
            await writer.drain()  # the call waits in A's socket buffer while A is stopped
        finally:
            os.kill(pid_a, signal.SIGCONT)
        woke = time.monotonic()
        reply = await next_frame()
        answered_in = time.monotonic() - woke
        writer.close()
        acked = 1 + (reply[0] == Frame.REPLY)  # the call before the pause, and this one if run
        served = await wait_until(
            lambda: _value(stub), 30, f"partition {p} to be served again after the pause"
        )
        assert served == acked  # nothing acknowledged lost, nothing run twice
        print(f"\nwoken slot answered {Frame(reply[0]).name} {answered_in:.3f} s after SIGCONT")
        assert reply[0] == Frame.NOT_OWNER


async def _value(stub: Any) -> int | None:
    try:
        return int(await stub.value())
    except durable.errors.DurableError:
        return None
