"""Issue 9, acceptance 2: crashes of real processes under load lose no acknowledged write.

(a) SIGKILL the host slot's process while clients increment counters through
``connect(address="auto")``: Ray restarts the slot, which re-registers and reopens its partitions.
(b) SIGKILL the whole ``durable serve`` process group under HTTP load to ``examples/counter.py``,
then start it again on the same data dir.

Each client owns one counter and calls it one call at a time, so its acknowledged values must be
exactly consecutive except across a failed call, which may or may not have run (``ConnectionLost``
says so): a lost write shows as a repeated value, a write applied twice as a skipped one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import durable
from durable.cluster import ClusterConfig
from tests.ray.apps import worker
from tests.ray.harness import (
    AFTER,
    BEFORE,
    CLIENTS,
    IN_FLIGHT_ERRORS,
    OUTAGE_ERRORS,
    ROOT,
    Client,
    RunningCluster,
    free_port,
    holds,
    keep_incrementing,
    stop_load,
    wait_until,
)

pytestmark = pytest.mark.ray


async def test_sigkill_of_a_host_slot_under_load_loses_no_acknowledged_write(
    start_cluster: Callable[..., RunningCluster],
) -> None:
    cluster = start_cluster(slots=1, partitions=4)
    (old_pid,) = await cluster.pids()
    clients = [Client(f"c{i}") for i in range(CLIENTS)]
    stop = asyncio.Event()

    async with durable.connect(worker, address="auto") as env:
        tasks = [asyncio.ensure_future(keep_incrementing(env, c, stop)) for c in clients]
        try:
            await wait_until(
                holds(lambda: all(len(c.acked) >= BEFORE for c in clients)), 30, "load"
            )
            marks = [len(c.log) for c in clients]
            killed = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            again = holds(
                lambda: all(c.acks_since(m) >= AFTER for c, m in zip(clients, marks, strict=True))
            )
            await wait_until(again, 60, "every client to be acknowledged again after the restart")
            recovered = time.monotonic() - killed
        finally:
            await stop_load(stop, tasks)
        (new_pid,) = await cluster.pids()
        assert new_pid != old_pid  # Ray restarted the slot in a new process
        in_flight = [e for c in clients for e in c.failures if isinstance(e, IN_FLIGHT_ERRORS)]
        assert len(in_flight) <= CLIENTS  # only the calls in flight at the kill
        for client, mark in zip(clients, marks, strict=True):
            assert all(kind == "ack" for kind, _ in client.log[:mark])  # no error before the kill
            stub = env.TALLY.get_by_name(client.name)
            final = await stub.value()
            client.check(final)
            history = await stub.history()
            assert [h["n"] for h in history] == list(range(1, final + 1))
            pids = [h["pid"] for h in history]  # every count, also of calls that failed
            switch = pids.index(new_pid)
            assert set(pids[:switch]) == {old_pid}
            assert set(pids[switch:]) == {new_pid}
    outage = sum(1 for c in clients for e in c.failures if isinstance(e, OUTAGE_ERRORS))
    print(f"\nslot restart: acknowledged again after {recovered:.2f} s; "
          f"{len(in_flight)} calls lost in flight, {outage} refused as Overloaded meanwhile")  # fmt: skip


# -- (b) the whole `durable serve` process group ---------------------------------------------------
COUNTER = str(ROOT / "examples" / "counter.py")


@dataclass
class Server:
    """A ``durable serve`` process in its own session (so its group can be killed at once)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve(data_dir: Path, port: int, log: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [str(Path(sys.executable).parent / "durable"), "serve", COUNTER,
               "--port", str(port), "--data-dir", str(data_dir)]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out,
                                   start_new_session=True)  # fmt: skip
    return Server(process, port, log)


async def healthy(server: Server, timeout: float = 60) -> float:
    """Seconds until ``/healthz`` answers 200 (fails if the server exits or the time runs out)."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=2) as http:

        async def ok() -> bool:
            assert server.process.poll() is None, server.log.read_text()[-3000:]
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ok, timeout, "/healthz to answer 200", every=0.1)
    return time.monotonic() - started


def session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid`` (Ray's workers leave the group but stay in the session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def runtime_dir(data_dir: Path) -> Path:
    """Where ``durable serve`` on ``data_dir`` puts its slots' Unix sockets (CONTRACTS §9)."""
    return ClusterConfig("", str(data_dir.resolve()), (), 1, 1).runtime_dir


def holders(data_dir: Path) -> set[int]:
    """Processes with a file under ``data_dir`` open (partition databases, LOCK files)."""
    root = str(data_dir.resolve())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue  # gone, or not ours to read
        if any(t.startswith(root) for t in targets):
            found.add(int(entry.name))
    return found


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:  # whatever happened: no process of any of them is left behind
        sid = server.process.pid
        if server.process.poll() is None:
            os.killpg(sid, signal.SIGKILL)
            server.process.wait()
        deadline = time.monotonic() + 30
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in session_pids(sid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(runtime_dir(tmp_path / "data"), ignore_errors=True)


@pytest.mark.timeout(300)  # two `durable serve` start-ups, each with its own Ray
async def test_sigkill_of_the_serve_process_group_under_http_load_loses_nothing(
    tmp_path: Path, servers: list[Server]
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    servers.append(serve(data_dir, port, tmp_path / "first.log"))
    first = servers[0]
    started_in = await healthy(first)
    clients = [Client(f"c{i}") for i in range(CLIENTS)]

    async def load(http: httpx.AsyncClient, client: Client) -> None:
        while True:  # until the first failure: the server is gone for good after the kill
            try:
                response = await http.get(f"/counter/{client.name}")
            except httpx.TransportError as error:
                client.log.append(("error", error))
                return
            if response.status_code != 200:
                client.log.append(("error", response.status_code))
                return
            client.log.append(("ack", response.json()["n"]))

    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        tasks = [asyncio.ensure_future(load(http, c)) for c in clients]
        await wait_until(holds(lambda: all(len(c.acked) >= BEFORE for c in clients)), 30, "load")
        sid = first.process.pid
        marks = [len(c.log) for c in clients]
        killed = time.monotonic()
        os.killpg(sid, signal.SIGKILL)
        first.process.wait()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    orphan_acks = sum(c.acks_since(m) for c, m in zip(clients, marks, strict=True))
    clients_failed = time.monotonic() - killed
    await wait_until(holds(lambda: not holders(data_dir)), 30, "the partitions to be released")
    released = time.monotonic() - killed
    await wait_until(holds(lambda: not session_pids(sid)), 30, "every process of the group to die")
    all_dead = time.monotonic() - killed
    assert runtime_dir(data_dir).joinpath("host-0.sock").exists()  # stale: must not block

    servers.append(serve(data_dir, port, tmp_path / "second.log"))
    second = servers[1]
    restarted_in = await healthy(second)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        for client in clients:
            after = (await http.get(f"/counter/{client.name}")).json()["n"]
            client.check(after - 1)  # this GET incremented once more
            assert client.acked == list(range(1, len(client.acked) + 1))
    second.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert second.process.wait(timeout=10) == 0
    stopped_in = time.monotonic() - stopping
    print(f"\nserve: healthy in {started_in:.1f} s; after the kill the clients failed within "
          f"{clients_failed:.2f} s ({orphan_acks} requests acknowledged meanwhile by the slot, "
          f"which is not in the killed group), the partitions were released after {released:.2f} s and every "
          f"process of the group was gone after {all_dead:.2f} s; restart healthy in "
          f"{restarted_in:.1f} s; SIGTERM exit in {stopped_in:.2f} s")  # fmt: skip
