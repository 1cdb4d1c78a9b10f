"""Faults on a real Ray cluster under load (``connect(address="auto")``, one caller per object,
one call at a time, so acknowledged values must be consecutive except across failed calls):
SIGKILL of the host slot, a full disk and a read-only data directory. Nothing acknowledged is
lost, nothing is applied twice, callers get the documented error meanwhile, and the cluster
recovers by itself once the fault is gone.

The disk faults mount a small tmpfs as the data dir (mounting needs root; skipped otherwise); the
filler file that fills it lives beside the partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.errors import StorageFull
from tests.disks import small_disk
from tests.ray.apps import worker
from tests.ray.harness import (
    IN_FLIGHT_ERRORS,
    OUTAGE_ERRORS,
    Client,
    RunningCluster,
    holds,
    stop_load,
    wait_until,
)

pytestmark = pytest.mark.ray
OBJECTS = 100
PER_PHASE = 10  # acknowledged calls per object before the fault and after it: 2,000 in all
DISK_ERRORS = (StorageFull,)  # refused before anything was written


async def keep_incrementing(env: Any, client: Client, stop: asyncio.Event) -> None:
    """``tests.ray.harness.keep_incrementing``, also logging the disk errors under test."""
    stub = env.TALLY.get_by_name(client.name)
    while not stop.is_set():
        try:
            where = await stub.increment()
        except (*IN_FLIGHT_ERRORS, *OUTAGE_ERRORS, *DISK_ERRORS) as error:
            client.log.append(("error", error))
            await asyncio.sleep(0.02)
            continue
        client.log.append(("ack", where["n"]))


Step = Callable[[list[Client]], Awaitable[None]]  # a fault or its healing, seeing the clients


async def under_load(
    env: Any, fault: Step, heal: Step, errors: tuple[type, ...], recovery: float = 90
) -> list[Client]:
    """Load every object, inject ``fault``, wait for ``errors`` (if any), ``heal``, wait until
    every object is acknowledged again; the clients, checked against the stored values."""
    clients = [Client(f"o{i}") for i in range(OBJECTS)]
    stop = asyncio.Event()
    tasks: list[asyncio.Future[None]] = [
        asyncio.ensure_future(keep_incrementing(env, c, stop)) for c in clients
    ]
    try:
        await wait_until(holds(lambda: all(len(c.acked) >= PER_PHASE for c in clients)), 60, "load")
        await fault(clients)
        if errors:
            seen = holds(lambda: any(isinstance(e, errors) for c in clients for e in c.failures))
            await wait_until(seen, 30, f"callers to get {errors}")
        await heal(clients)
        marks = [len(c.log) for c in clients]
        again = holds(
            lambda: all(c.acks_since(m) >= PER_PHASE for c, m in zip(clients, marks, strict=True))
        )
        await wait_until(again, recovery, "every object acknowledged again after the fault")
    finally:
        await stop_load(stop, tasks)
    for client in clients:
        client.check(await env.TALLY.get_by_name(client.name).value())
    assert sum(len(c.acked) for c in clients) >= 2 * OBJECTS * PER_PHASE
    return clients


async def test_sigkill_of_the_slot_under_load_over_100_objects_loses_nothing(
    start_cluster: Callable[..., RunningCluster],
) -> None:
    cluster = start_cluster(slots=1, partitions=4)
    (pid,) = await cluster.pids()

    async def kill(_: list[Client]) -> None:
        os.kill(pid, signal.SIGKILL)

    async with durable.connect(worker, address="auto") as env:
        await under_load(env, kill, nothing, ())
    assert (await cluster.pids())[0] != pid


async def nothing(_: list[Client]) -> None:
    pass


def filler(disk: Path) -> tuple[Step, Step]:
    """(fill the disk to its last byte, free it again)."""
    path = disk / "filler"

    async def fill(_: list[Client]) -> None:
        with path.open("wb", buffering=0) as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)

    async def free(_: list[Client]) -> None:
        path.unlink()

    return fill, free


async def test_a_full_disk_refuses_writes_with_storage_full_and_recovers(
    start_cluster: Callable[..., RunningCluster], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "data") as disk:  # start_cluster serves tmp_path / "data"
        start_cluster(slots=1, partitions=4)
        fill, free = filler(disk)
        async with durable.connect(worker, address="auto") as env:
            clients = await under_load(env, fill, free, (StorageFull,))
    refused = [e for c in clients for e in c.failures if isinstance(e, StorageFull)]
    assert refused and all("is full" in str(e) for e in refused)


async def test_a_data_dir_turned_read_only_is_survived_and_recovered_from(
    start_cluster: Callable[..., RunningCluster], tmp_path: Path
) -> None:
    """The disk goes read-only under the slot (as ext4 does on I/O errors) and the slot dies:
    Linux refuses a read-only remount while files are open for writing, so the slot is killed
    until the remount wins the race against its restart. Restarted slots cannot open the
    partitions; callers get the documented outage errors; writable again, the slot serves."""
    with small_disk(tmp_path / "data") as disk:
        cluster = start_cluster(slots=1, partitions=4)

        marks: list[int] = []

        async def read_only(clients: list[Client]) -> None:
            async def remounted() -> bool:
                os.kill((await cluster.pids())[0], signal.SIGKILL)
                for _ in range(200):  # its files close at once; its restart takes longer
                    if remount(disk, "ro"):
                        return True
                    await asyncio.sleep(0.01)
                return False

            await wait_until(remounted, 60, "a read-only remount")
            marks.extend(len(c.log) for c in clients)

        async def writable(clients: list[Client]) -> None:
            assert os.statvfs(disk).f_flag & os.ST_RDONLY
            # Every caller failed at least once while read-only, and none was acknowledged.
            failing = holds(
                lambda: all(len(c.log) > m for c, m in zip(clients, marks, strict=True))
            )
            await wait_until(failing, 60, "every caller to see the outage")
            assert not any(c.acks_since(m) for c, m in zip(clients, marks, strict=True))
            assert remount(disk, "rw")

        async with durable.connect(worker, address="auto") as env:
            outage = (*IN_FLIGHT_ERRORS, *OUTAGE_ERRORS)
            await under_load(env, read_only, writable, outage, recovery=30)


def remount(disk: Path, mode: str) -> bool:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True)
    return done.returncode == 0
