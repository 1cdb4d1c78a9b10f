"""What the Ray suite's tests share: durable clusters on the session's Ray, and bounded polling.

A cluster's actors have fixed names (``durable-directory``, ``durable-host-<n>``), so only one
durable cluster runs at a time; ``shutdown`` stops it (``Cluster.stop``) and kills every actor of
it, also ones only found by name, then waits until the names are free.

``PYTHONPATH`` (the repo root) reaches Ray workers through the session's ``runtime_env``, so they
import the served worker as ``tests.ray.apps``, as this process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig, new_token
from durable.errors import ConnectionLost, ObjectReset, Overloaded, Unavailable
from durable.ray_host import Cluster

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ray.apps:worker"
T = TypeVar("T")
LEASE_TTL = 3.0  # seconds; short, so rebalancing and lapsed leases take seconds, not tens
PYTHONPATH = str(ROOT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    condition: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


class RunningCluster:
    """A started durable cluster and what tests need to reach it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.config = cluster.config

    @property
    def directory(self) -> Any:
        return self.cluster.directory

    @property
    def url(self) -> str:
        return f"http://{self.config.http_host}:{self.config.http_port}"

    async def pids(self) -> list[int]:
        return [await host.pid.remote() for host in self.cluster.hosts]

    async def table(self) -> dict[int, tuple[int, str]]:
        """partition -> (epoch, channel address), as the directory grants it now."""
        table = await self.directory.table.remote()
        return {int(p): (int(e), str(a)) for p, (e, a) in table.items()}

    async def owned(self) -> list[dict[int, int]]:
        """Per slot: the partitions it serves now, with their epochs."""
        ready = [await host.ready.remote() for host in self.cluster.hosts]
        return [{int(p): int(e) for p, e in r["owned"].items()} for r in ready]

    async def settled(self) -> list[dict[int, int]]:
        """Wait until placement is stable: every slot serves the partitions it wins.

        ``wait_ready`` returns once every partition has *an* owner; a new partition waits for
        every slot of the cluster (or ``directory.START_GRACE``) before it gets its home, and
        slots take what they win at their next renewal (within two renewal periods).
        """

        async def balanced() -> list[dict[int, int]] | None:
            owned = await self.owned()
            served = sorted(p for slot in owned for p in slot)
            table = await self.table()
            stable = served == list(range(self.config.partitions)) and len(table) == len(served)
            return owned if stable and all(owned) else None

        return await wait_until(balanced, 6 * self.config.lease_ttl, "a balanced placement")  # type: ignore[no-any-return]


def make_config(data_dir: Path, **overrides: Any) -> ClusterConfig:
    fields: dict[str, Any] = {
        "target": APP,
        "data_dir": str(data_dir.resolve()),
        "sys_path": (str(ROOT),),
        "partitions": 4,
        "slots": 1,
        "http_port": free_port(),
        "token": new_token(),
        "lease_ttl": LEASE_TTL,
    }
    return ClusterConfig(**{**fields, **overrides})


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion on a fresh loop in a thread (fixtures run outside one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


def launch(config: ClusterConfig, timeout: float = 60.0) -> RunningCluster:
    cluster = Cluster(config)
    try:
        cluster.start()
        run_sync(cluster.wait_ready(timeout))
    except BaseException:
        shutdown(cluster)
        raise
    return RunningCluster(cluster)


def shutdown(cluster: Cluster) -> None:
    """Stop the slots (bounded), kill every actor of the cluster, even ones found by name."""
    import ray

    actors = [*cluster.hosts, cluster.directory]
    run_sync(cluster.stop())
    names = [DIRECTORY, *(f"durable-host-{slot}" for slot in range(cluster.config.slots))]
    for name in names:
        with contextlib.suppress(ValueError):  # ValueError: already gone
            actors.append(ray.get_actor(name, namespace=RAY_NAMESPACE))
    for actor in actors:
        if actor is not None:
            ray.kill(actor, no_restart=True)
    for name in names:  # the names are free again before the next cluster starts
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=RAY_NAMESPACE)
            except ValueError:
                break
            time.sleep(0.05)
    shutil.rmtree(cluster.config.runtime_dir, ignore_errors=True)  # stop leaves the sockets


# -- clients under load --------------------------------------------------------------------------
CLIENTS = 8
BEFORE = 20  # acknowledged calls per client before a crash or a move
AFTER = 20  # ... and after it
IN_FLIGHT_ERRORS = (ConnectionLost, ObjectReset)  # the call was sent: it may or may not have run
OUTAGE_ERRORS = (Overloaded, Unavailable)  # no owner reachable (or too busy): nothing ran
# Over HTTP every failure (a transport error, a non-200 status) may have run.
# The failure kinds a client may retry after: the call did not run, or may have run once.
RETRYABLE = {e.__name__ for e in (*IN_FLIGHT_ERRORS, *OUTAGE_ERRORS)}
RETRYABLE |= {"http-503", "http-refused", "http-lost"}


@dataclass
class Client:
    """One caller of one counter, one call at a time; ``log`` holds acks and failures in order."""

    name: str
    log: list[tuple[str, Any]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # the process that ran each acknowledged call

    @property
    def acked(self) -> list[int]:
        return [value for kind, value in self.log if kind == "ack"]

    @property
    def failures(self) -> list[Any]:
        return [value for kind, value in self.log if kind == "error"]

    def acks_since(self, index: int) -> int:
        return sum(1 for kind, _ in self.log[index:] if kind == "ack")

    def check(self, final: int) -> None:
        """Consecutive acks, gaps only across failed calls, and the final value accounted for."""
        last = 0
        maybe = 0  # failed calls since the last ack that may have run
        for kind, value in self.log:
            if kind == "error":
                maybe += not isinstance(value, OUTAGE_ERRORS)  # sent: it may have run
                continue
            assert last < value <= last + 1 + maybe, (self.name, self.log)
            last, maybe = value, 0
        assert last <= final <= last + maybe, (self.name, final, self.log)


def holds(predicate: Callable[[], bool]) -> Callable[[], Any]:
    """An async condition for ``wait_until`` from a plain predicate."""

    async def check() -> bool:
        return predicate()

    return check


async def keep_incrementing(env: Any, client: Client, stop: asyncio.Event) -> None:
    """Call ``TALLY.increment`` on the client's object until ``stop``; expected errors are logged.

    Any other exception ends the task (and fails the test that gathers it).
    """
    stub = env.TALLY.get_by_name(client.name)
    while not stop.is_set():
        try:
            where = await stub.increment()
        except (*IN_FLIGHT_ERRORS, *OUTAGE_ERRORS) as error:
            client.log.append(("error", error))
            await asyncio.sleep(0.01)  # no owner right now: do not spin on the directory
            continue
        client.log.append(("ack", where["n"]))
        client.pids.append(where["pid"])


async def stop_load(stop: asyncio.Event, tasks: list[asyncio.Future[None]]) -> None:
    stop.set()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


async def http_load(urls: list[str], client: Client, stop: asyncio.Event) -> None:
    """Increment ``client.name`` through the gateways at ``urls`` until ``stop``, as a load
    balancer would: after a transport error (a gateway stopping), the next one. A refused
    connection sent nothing; any other failure, a non-200 included, may have run."""
    import httpx

    turn = 0
    async with httpx.AsyncClient(timeout=30) as http:
        while not stop.is_set():
            try:
                reply = await http.get(f"{urls[turn % len(urls)]}/tally/{client.name}")
            except httpx.TransportError as error:  # refused: nothing sent; else it may have run
                lost = "refused" if isinstance(error, httpx.ConnectError) else "lost"
                client.log.append(("error", f"http-{lost}"))
                turn += 1
                await asyncio.sleep(0.01)
                continue
            if reply.status_code == 200:
                client.log.append(("ack", reply.json()["n"]))
            else:
                client.log.append(("error", f"http-{reply.status_code}"))
                await asyncio.sleep(0.01)


def checked(clients: list[Client], finals: dict[str, int]) -> list[str]:
    """What ``Client.check`` found wrong, per client (empty: every log is consistent)."""
    problems = []
    for client in clients:
        try:
            client.check(finals[client.name])
        except AssertionError as error:
            problems.append(f"{client.name}: {str(error)[:300]}")
    return problems


def kind(error: Any) -> str:
    """A logged failure's kind: the exception's class name, or the string logged."""
    return error if isinstance(error, str) else type(error).__name__


async def healthy(url: str) -> bool:
    """Whether the gateway at ``url`` answers ``/healthz`` with 200."""
    import httpx

    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            return (await http.get("/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def close_code(client: Any, timeout: float = 30.0) -> int | None:
    """The code a WebSocket client (``websockets``) is closed with, reading what comes first."""
    from websockets.exceptions import ConnectionClosed

    try:
        async with asyncio.timeout(timeout):
            while True:
                await client.recv()  # frames still in flight, then the close
    except ConnectionClosed:
        return int(client.close_code) if client.close_code is not None else None


_marks: dict[str, int] = {}


async def acked(clients: list[Client], more: int) -> bool:
    """Every client acknowledged ``more`` calls since this was last true for it."""
    counts = {c.name: len(c.acked) for c in clients}
    if all(counts[c.name] >= _marks.get(c.name, 0) + more for c in clients):
        _marks.update(counts)
        return True
    return False


async def read_forward(env: Any, names: list[str], seen: dict[str, list[int]], stop: Any) -> None:
    """Read the counters ``names`` in turn until ``stop``; ``seen`` gets each value read."""
    while not stop.is_set():
        for name in names:
            try:
                seen[name].append(await env.TALLY.get_by_name(name).value())
            except (*IN_FLIGHT_ERRORS, *OUTAGE_ERRORS):
                await asyncio.sleep(0.01)


def went_backwards(seen: dict[str, list[int]]) -> list[str]:
    return [
        f"{name}: {a} then {b}"
        for name, values in seen.items()
        for a, b in itertools.pairwise(values)
        if b < a
    ]


@dataclass
class Load:
    """``CLIENTS`` RPC writers (one counter each), an HTTP writer through ``urls`` (``http_load``)
    and a reader of the writers' counters (``read_forward``), running until ``finish``."""

    clients: list[Client]
    web: Client
    seen: dict[str, list[int]]
    stop: asyncio.Event
    tasks: list[asyncio.Future[None]]

    @classmethod
    def start(cls, env: Any, urls: list[str]) -> Load:
        clients, web, stop = (
            [Client(f"c{i}") for i in range(CLIENTS)],
            Client("web"),
            asyncio.Event(),
        )
        seen: dict[str, list[int]] = {c.name: [] for c in clients}
        tasks = [asyncio.ensure_future(keep_incrementing(env, c, stop)) for c in clients]
        tasks.append(asyncio.ensure_future(http_load(urls, web, stop)))
        tasks.append(asyncio.ensure_future(read_forward(env, list(seen), seen, stop)))
        return cls(clients, web, seen, stop, tasks)

    @property
    def everyone(self) -> list[Client]:
        return [*self.clients, self.web]

    async def finish(self, env: Any) -> list[str]:
        """Stop the load; what ``checked`` found wrong against the final values, and any task
        that crashed."""
        self.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        crashed = [repr(r) for r in results if isinstance(r, BaseException)]
        finals = {c.name: await env.TALLY.get_by_name(c.name).value() for c in self.everyone}
        return checked(self.everyone, finals) + crashed


async def increment_outcome(env: Any, name: str) -> str:
    """``"served"``, or ``"Unavailable"`` when the counter's partition has no reachable owner."""
    try:
        await env.TALLY.get_by_name(name).increment()
    except Unavailable as error:
        return type(error).__name__
    return "served"
