"""Planned moves: the directory's bookkeeping (plan, hand out, switch, abort, drain, rebalance)
and ``durable.moves`` copying a partition between two data dirs over a real channel (no Ray):
verified copy, source deleted only after the switch, every failure before it changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.channel import ChannelServer, Frame
from durable.directory import MOVE_ATTEMPTS, Directory, rendezvous
from durable.host import Host, host_of
from durable.moves import (
    Arrivals,
    Departures,
    Order,
    Outcome,
    drain_node,
    node_named,
    partition_folder,
)
from durable.testing import wait_all_tasks_blocked

# -- the directory's bookkeeping -----------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def a_and_b(partitions: int = 8) -> tuple[Directory, Ticks]:
    """Slot 0 on node a created every partition; slot 1 on node b joined later (nothing planned)."""
    clock = Ticks()
    d = Directory(partitions, ttl=10.0, now=clock)
    d.register(0, "tcp:a", "a")
    d.register(1, "tcp:b", "b")
    d.planned.clear()  # what joining b planned: these tests plan their own
    return d, clock


def test_a_move_across_nodes_is_planned_then_handed_to_the_partition_s_holder_only() -> None:
    d, _ = a_and_b()
    d.reassign(3, 1)
    assert d.planned == {3: 1} and d.homes[3] == "a"
    assert d.next_move(1) is None  # slot 1 does not hold partition 3
    epoch = d.leases[3].epoch
    assert d.next_move(0) == (3, epoch, 1, "tcp:b")
    assert d.planned == {} and 3 in d.moves


def test_moves_run_one_at_a_time() -> None:
    d, _ = a_and_b()
    d.reassign(3, 1)
    d.reassign(4, 1)
    first = d.next_move(0)
    assert first is not None and d.next_move(0) is None  # MOVES_AT_ONCE is 1
    d.finish_move(first[0], first[1])
    assert d.next_move(0) is not None


def test_the_switch_persists_the_home_before_the_new_epoch_and_grants_the_target() -> None:
    d, _ = a_and_b()
    events: list[tuple[str, int, Any]] = []
    d.on_home = lambda p, node: events.append(("home", p, node))
    d.on_epoch = lambda p, epoch: events.append(("epoch", p, epoch))
    d.reassign(3, 1)
    _, epoch, _, _ = d.next_move(0) or (0, 0, 0, "")
    new = d.finish_move(3, epoch)
    assert new > epoch and events == [("home", 3, "b"), ("epoch", 3, new)]
    assert d.homes[3] == "b" and d.table()[3] == (new, "tcp:b")
    assert 3 not in d.renew(0)  # the source no longer holds it
    assert d.renew(1)[3] == (new, "b")  # the target serves it, at home
    assert d.move_status()["moved"] == [3]


def test_during_a_move_the_source_keeps_its_lease_whoever_placement_prefers() -> None:
    d, clock = a_and_b()
    d.register(2, "tcp:a2", "a")  # another slot on node a
    d.reassign(3, 1)
    _, epoch, _, _ = d.next_move(0) or (0, 0, 0, "")
    d.pins[3] = 2  # placement would now prefer slot 2 ...
    for _ in range(4):
        clock.t += 5.0
        d.renew(2)
        grants = d.renew(0)
    assert grants[3][0] == epoch  # ... but the source keeps it until the switch or abort


def test_a_switch_after_the_source_s_lease_lapsed_is_refused_and_changes_nothing() -> None:
    d, clock = a_and_b()
    d.reassign(3, 1)
    _, epoch, _, _ = d.next_move(0) or (0, 0, 0, "")
    clock.t += 11.0  # the source stopped renewing (cut off from the directory)
    with pytest.raises(LookupError, match="lapsed"):
        d.finish_move(3, epoch)
    assert d.homes[3] == "a" and 3 not in d.moves and d.planned == {3: 1}  # planned again
    with pytest.raises(LookupError, match="no move"):
        d.finish_move(3, epoch)


def test_an_aborted_move_is_planned_again_later_then_given_up() -> None:
    d, clock = a_and_b()
    d.reassign(3, 1)
    for attempt in range(MOVE_ATTEMPTS):
        order = d.next_move(0)
        assert order is not None, attempt
        d.abort_move(3, order[1], "the copy is corrupt")
        assert d.homes[3] == "a" and d.leases[3].slot == 0  # the source serves on
        assert d.next_move(0) is None  # not before the target renewed, then after a backoff
        clock.t += attempt * d.ttl + 1.0
        d.renew(0)
        d.renew(1)
    assert d.next_move(0) is None and d.move_status()["failed"] == {3: "the copy is corrupt"}


def test_a_move_whose_source_stopped_is_aborted_when_the_next_is_handed_out() -> None:
    d, _ = a_and_b()
    d.reassign(3, 1)
    d.next_move(0)
    d.release(0, [3])  # the source stopped mid-move
    d.next_move(0)
    assert 3 not in d.moves and d.attempts == {3: 1}


def test_a_restarting_source_or_target_aborts_its_moves() -> None:
    d, _ = a_and_b()
    d.reassign(3, 1)
    d.next_move(0)
    d.register(1, "tcp:b2", "b")
    assert d.moves == {} and d.planned == {3: 1} and d.homes[3] == "a"


def test_a_retry_waits_until_a_dead_target_is_live_again() -> None:
    d, clock = a_and_b()
    d.reassign(3, 1)
    _, epoch, _, _ = d.next_move(0) or (0, 0, 0, "")
    d.abort_move(3, epoch, "the target died")  # slot 1 renews no more
    for _ in range(4):
        clock.t += d.ttl / 2
        d.renew(0)
        assert d.next_move(0) is None
    d.register(1, "tcp:b", "b")  # restarted by Ray
    assert d.next_move(0) is not None


def test_drain_plans_every_partition_of_the_node_onto_the_others() -> None:
    d, _ = a_and_b()
    d.register(2, "tcp:c", "c")
    d.planned.clear()
    assert d.drain("a") == list(range(8))
    assert d.planned == {p: rendezvous(p, [1, 2]) for p in range(8)}
    assert d.rebalance() == []  # a node being drained is no destination
    with pytest.raises(ValueError, match="no other node has a live slot"):
        Directory(4, now=Ticks(), homes={p: "a" for p in range(4)}, slots={0: "tcp:a"},
                  nodes={0: "a"}, seen={0: 0.0}).drain("a")  # fmt: skip


def test_a_node_joining_plans_the_partitions_it_wins_by_rendezvous() -> None:
    clock = Ticks()
    d = Directory(64, ttl=10.0, now=clock)
    d.register(0, "tcp:a", "a")
    assert d.planned == {}
    d.register(1, "tcp:b", "b")  # a new node: a rebalance is planned
    wins = {p for p in range(64) if rendezvous(p, [0, 1]) == 1}
    assert set(d.planned) == wins and set(d.planned.values()) == {1}
    assert 20 < len(wins) < 44  # about half
    d.register(1, "tcp:b", "b")  # the same node again (a restart): nothing new
    assert set(d.planned) == wins


# -- copying a partition between two data dirs --------------------------------------------------


class Notes(durable.DurableObject):
    """KV rows and, after ``promote``, an object file of its own (SQL)."""

    async def put(self, value: Any) -> None:
        await self.ctx.storage.put("v", value)

    async def get(self) -> Any:
        return await self.ctx.storage.get("v")

    async def promote(self, text: str) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        sql.exec("INSERT INTO notes VALUES (?)", text)

    async def fill(self, mb: int) -> None:
        for _ in range(mb):
            self.ctx.storage.sql.exec("INSERT INTO notes VALUES (hex(randomblob(500000)))")

    async def notes(self) -> list[str]:
        return [r["text"] for r in self.ctx.storage.sql.exec("SELECT text FROM notes").to_list()]

    async def hold(self) -> None:
        await RELEASE.wait()
        await self.ctx.storage.put("held", True)


RELEASE = asyncio.Event()
worker = durable.Worker(objects={"NOTES": Notes})
PARTITIONS = 16


class ActorLike:
    """A plain object's methods shaped like a Ray actor's: ``await obj.method.remote(...)``."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class Remote:
            @staticmethod
            async def remote(*args: Any) -> Any:
                return method(*args)

        return Remote


def names_in(env: Any, partition: int, count: int) -> list[str]:
    names = (f"n{i}" for i in range(10_000))
    found = (n for n in names if env.NOTES.id_from_name(n).partition(PARTITIONS) == partition)
    return [next(found) for _ in range(count)]


@asynccontextmanager
async def target(
    tmp_path: Path, tamper: Callable[[list[Any]], list[Any]] = lambda f: f
) -> AsyncIterator[tuple[ChannelServer, Arrivals, str]]:
    """Node b: an ``Arrivals`` on its data dir behind a TCP channel (``tamper`` sees each frame)."""
    (tmp_path / "b").mkdir()
    arrivals = Arrivals(tmp_path / "b", lambda partition: False)

    async def handle(frame: list[Any]) -> list[Any]:
        return await arrivals.receive(tamper(frame))

    server = ChannelServer("token", handle)
    address = await server.start_tcp("127.0.0.1", 0)
    try:
        yield server, arrivals, address.removeprefix("tcp:")
    finally:
        await server.close()


async def move(
    host: Host,
    directory: Directory,
    partition: int,
    address: str,
    departures: Departures | None = None,
) -> tuple[Outcome, dict[int, int]]:
    """Run the move of ``partition`` from slot 0 (``host``) to slot 1 at ``address``."""
    directory.slots[1] = f"tcp:{address}"
    directory.reassign(partition, 1)
    handed = directory.next_move(0)
    assert handed is not None
    owned = {p: directory.leases[p].epoch for p in host.partitions}
    departures = departures or Departures(host.data_dir, ActorLike(directory))
    client = durable.channel.ChannelClient(f"tcp:{address}", "token")
    try:
        return await departures.run(host, owned, Order(*handed), client), owned
    finally:
        await client.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (bounded by the test's timeout)."""
    while not condition():
        await asyncio.sleep(0.001)


def source_directory() -> Directory:
    d = Directory(PARTITIONS, ttl=60.0, now=Ticks())
    d.register(0, "tcp:a", "a")
    d.register(1, "tcp:b", "b")
    d.planned.clear()
    return d


async def test_a_moved_partition_is_verified_switched_and_deleted_at_the_source(
    tmp_path: Path,
) -> None:
    directory = source_directory()
    async with (
        target(tmp_path) as (_, _, address),
        durable.connect(worker, data_dir=tmp_path / "a") as env,
    ):
        kv, promoted = names_in(env, 5, 2)
        await env.NOTES.get_by_name(kv).put({"big": "x" * 100_000})
        await env.NOTES.get_by_name(promoted).promote("kept")
        await env.NOTES.get_by_name(promoted).fill(3)  # 3 MB: 12 chunks, sent 8 at a time
        outcome, owned = await move(host_of(env), directory, 5, address)
        assert outcome is Outcome.SWITCHED and 5 not in owned
        assert not partition_folder(tmp_path / "a", 5).exists()  # deleted after the switch
        assert not (tmp_path / "a" / "moves").exists() or not any(
            (tmp_path / "a" / "moves").iterdir()
        )  # no staging left
    assert directory.homes[5] == "b" and directory.leases[5].slot == 1
    async with durable.connect(worker, data_dir=tmp_path / "b") as env:
        assert await env.NOTES.get_by_name(kv).get() == {"big": "x" * 100_000}
        notes = await env.NOTES.get_by_name(promoted).notes()
        assert notes[0] == "kept" and [len(n) for n in notes[1:]] == [1_000_000] * 3


def corrupt(frame: list[Any]) -> list[Any]:
    if frame[0] == Frame.MOVE_DATA and frame[4] == 0:
        return [*frame[:5], b"\xff" + bytes(frame[5])[1:]]
    return frame


async def test_a_copy_that_fails_verification_aborts_and_the_source_serves_all_its_data(
    tmp_path: Path,
) -> None:
    directory = source_directory()
    async with (
        target(tmp_path, corrupt) as (_, _, address),
        durable.connect(worker, data_dir=tmp_path / "a") as env,
    ):
        (name,) = names_in(env, 5, 1)
        await env.NOTES.get_by_name(name).put(41)
        outcome, owned = await move(host_of(env), directory, 5, address)
        assert outcome is Outcome.ABORTED and 5 in owned
        assert await env.NOTES.get_by_name(name).get() == 41  # served at the source
        await env.NOTES.get_by_name(name).put(42)
        assert await env.NOTES.get_by_name(name).get() == 42
    assert directory.homes[5] == "a" and directory.leases[5].slot == 0
    assert directory.planned == {5: 1}  # tried again later
    partitions = tmp_path / "b" / "partitions"
    assert not (partitions / "0005").exists() and not list(partitions.glob(".incoming-*"))


async def test_a_target_that_dies_mid_copy_aborts_the_move(tmp_path: Path) -> None:
    server_of: list[ChannelServer] = []
    closing: list[asyncio.Future[None]] = []

    def die(frame: list[Any]) -> list[Any]:
        if frame[0] == Frame.MOVE_DATA and not closing:
            closing.append(asyncio.ensure_future(server_of[0].close()))  # the target dies
        return frame

    directory = source_directory()
    async with target(tmp_path, die) as (server, _, address):
        server_of.append(server)
        async with durable.connect(worker, data_dir=tmp_path / "a") as env:
            (name,) = names_in(env, 5, 1)
            await env.NOTES.get_by_name(name).put("still here")
            outcome, owned = await move(host_of(env), directory, 5, address)
            assert outcome is Outcome.ABORTED and 5 in owned
            assert await env.NOTES.get_by_name(name).get() == "still here"
    assert directory.homes[5] == "a"


async def test_a_running_call_finishes_before_the_copy_and_a_new_one_waits_for_the_switch(
    tmp_path: Path,
) -> None:
    directory = source_directory()
    RELEASE.clear()
    async with (
        target(tmp_path) as (_, _, address),
        durable.connect(worker, data_dir=tmp_path / "a") as env,
    ):
        (name,) = names_in(env, 5, 1)
        host = host_of(env)
        held = asyncio.ensure_future(env.NOTES.get_by_name(name).hold())
        await until(lambda: host.busy(5))  # the call is running
        departures = Departures(host.data_dir, ActorLike(directory))
        moving = asyncio.ensure_future(move(host, directory, 5, address, departures))
        await until(lambda: 5 in departures.gates)  # fenced ...
        arriving = asyncio.ensure_future(departures.settled(5))  # ... a call arriving now
        await wait_all_tasks_blocked()
        assert not moving.done() and not arriving.done()  # both wait for the running call
        RELEASE.set()
        await held
        await arriving
        assert 5 not in departures.gates  # it went on only once the move ended
        outcome, owned = await moving
        assert outcome is Outcome.SWITCHED and 5 not in owned  # so it gets not_owner
    async with durable.connect(worker, data_dir=tmp_path / "b") as env:
        database = partition_folder(tmp_path / "b", 5) / "partition.sqlite"
        assert sqlite3.connect(database).execute("SELECT count(*) FROM kv").fetchone()[0] == 1


# -- durable drain -------------------------------------------------------------------------------


class MovingCluster:
    """A directory whose slots run each planned move when progress is asked (standing in for
    their renewals); partitions in ``failing`` abort every time."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.d = Directory(8, ttl=10.0, now=Ticks())
        self.d.register(0, "node=ray-a;unix=/a;tcp=10.0.0.1:1", "host-a/1")
        self.d.register(1, "node=ray-b;unix=/b;tcp=10.0.0.2:1", "host-b/2")
        self.d.planned.clear()  # every partition stays on host-a until a drain
        self.failing = failing

    def nodes(self) -> dict[int, tuple[str, str]]:
        return {s: (n, self.d.slots[s]) for s, n in self.d.nodes.items()}

    def drain(self, node: str) -> list[int]:
        return self.d.drain(node)

    def move_status(self) -> dict[str, Any]:
        self.d.now.t += self.d.ttl / 2  # type: ignore[attr-defined]
        for slot in list(self.d.slots):
            self.d.renew(slot)
        for slot in list(self.d.slots):
            order = self.d.next_move(slot)
            if order is not None and order[0] in self.failing:
                self.d.abort_move(order[0], order[1], "the copy is corrupt")
            elif order is not None:
                self.d.finish_move(order[0], order[1])
        return self.d.move_status()


def test_node_named_takes_a_home_id_a_ray_node_id_or_a_unique_prefix() -> None:
    nodes = MovingCluster().nodes()
    assert node_named(nodes, "host-a/1") == node_named(nodes, "ray-a") == "host-a/1"
    assert node_named(nodes, "host-b") == "host-b/2"
    with pytest.raises(ValueError, match="matches several nodes"):
        node_named(nodes, "host-")
    with pytest.raises(ValueError, match=r"'zz' is no node of this cluster \(home ids: host-a/1"):
        node_named(nodes, "zz")


async def test_drain_node_follows_the_moves_until_the_node_holds_nothing() -> None:
    cluster = MovingCluster()
    seen: list[tuple[int, int]] = []
    drained = await drain_node(
        ActorLike(cluster), "ray-a", lambda done, total, _: seen.append((done, total)), every=0
    )
    homed = [p for p, home in cluster.d.homes.items() if home == "host-a/1"]
    assert drained.node == "host-a/1" and homed == [] and drained.failed == {}
    assert seen[-1][0] == seen[-1][1] == len(drained.moved) == 8


async def test_drain_node_gives_up_on_what_did_not_move_in_time() -> None:
    cluster = MovingCluster()
    cluster.move_status = cluster.d.move_status  # type: ignore[method-assign]  # no slot moves
    drained = await drain_node(ActorLike(cluster), "host-a", every=0, timeout=0)
    assert drained.moved == [] and set(drained.failed) == set(range(8))
    assert drained.failed[0] == "not moved within 0 s"


def test_durable_drain_exits_0_when_done_1_if_a_move_was_given_up_2_for_an_unknown_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from durable import cli

    runner = CliRunner()
    cluster = MovingCluster()
    monkeypatch.setattr(cli, "_directory_at", lambda address: ActorLike(cluster))
    done = runner.invoke(cli.app, ["drain", "host-a"])
    assert done.exit_code == 0, done.output
    assert "drained host-a/1: 8 partition(s) moved" in done.output
    assert set(cluster.d.homes.values()) == {"host-b/2"}

    cluster = MovingCluster(failing=frozenset({0, 1, 2, 3, 4, 5, 6, 7}))
    given_up = runner.invoke(cli.app, ["drain", "host-a"])
    assert given_up.exit_code == 1 and "not moved: the copy is corrupt" in given_up.output
    unknown = runner.invoke(cli.app, ["drain", "nowhere"])
    assert unknown.exit_code == 2 and "is no node of this cluster" in unknown.output


def test_durable_nodes_lists_each_node_s_ids_slots_and_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from durable import cli

    monkeypatch.setattr(cli, "_directory_at", lambda address: ActorLike(MovingCluster()))
    listed = CliRunner().invoke(cli.app, ["nodes"], env={"COLUMNS": "120"})
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines() if "host-" in line]
    assert [[c for c in row if c not in "│┃"] for row in rows] == [
        ["host-a/1", "ray-a", "1", "8"],
        ["host-b/2", "ray-b", "1", "0"],
    ]
