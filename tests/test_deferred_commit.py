"""Deferred commits: writes only alarms can see wait for a batch; anything that could observe
them (a reply, an outgoing call, a WebSocket send) commits them first; a failed deferred commit
leaves the alarm to fire again (at-least-once)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.commits import DEFERRED_COMMIT
from durable.faults import faults
from durable.host import Host
from durable.partition import Partition
from durable.testing import VirtualClock
from tests.conftest import host_of

FIRED: list[tuple[str, float]] = []
STORED_WHEN_CALLED: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    FIRED.clear()
    STORED_WHEN_CALLED.clear()


def stored(host: Host, name: str) -> Any:
    """The committed value of ``name``'s key "n", read from its partition (not its cache)."""
    oid = durable.ids.id_from_name("T", name)
    raw = host.partitions[oid.partition(host.partition_count)].table("T", oid.raw).read(b"n")
    return None if raw is None else durable.values.decode(raw)


class Ticker(durable.DurableObject):
    async def arm(self, at_ms: int) -> None:
        await self.ctx.storage.set_alarm(at_ms)

    async def alarm(self, info: durable.AlarmInfo) -> None:
        FIRED.append((str(self.ctx.id.name), self.ctx.now()))
        n = await self.ctx.storage.get("n", 0)
        await self.ctx.storage.put("n", n + 1)
        if self.ctx.id.name == "caller":  # an outgoing call: the write must be durable first
            await self.env.T.get_by_name("callee").observe()
        if self.ctx.id.name == "soon" and n == 0:
            await self.ctx.storage.set_alarm(int(self.ctx.now() * 1000) + 10)

    async def observe(self) -> None:
        STORED_WHEN_CALLED.append(stored(HOSTS[0], "caller"))

    async def count(self) -> Any:
        return await self.ctx.storage.get("n")


HOSTS: list[Host] = []
WORKER = durable.Worker(objects={"T": Ticker})


async def _armed(env: Any, clock: VirtualClock, name: str) -> Host:
    host = host_of(env)
    HOSTS[:] = [host]
    await env.T.get_by_name(name).arm(int(clock.now() * 1000) + 100)
    return host


async def test_an_alarms_writes_wait_for_the_batch(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        host = await _armed(env, clock, "a")
        await clock.advance(0.1)
        assert FIRED == [("a", 1000.1)]
        assert stored(host, "a") is None  # ran, not committed yet
        await clock.advance(DEFERRED_COMMIT)
        assert stored(host, "a") == 1


async def test_a_reply_commits_the_deferred_writes_it_could_show(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        host = await _armed(env, clock, "a")
        await clock.advance(0.1)
        assert stored(host, "a") is None
        assert await env.T.get_by_name("a").count() == 1  # the reply left after the commit
        assert stored(host, "a") == 1


async def test_an_outgoing_call_from_alarm_waits_for_its_writes(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        await _armed(env, clock, "caller")
        await clock.advance(0.1)
        assert STORED_WHEN_CALLED == [1]


async def test_an_alarm_set_sooner_than_the_batch_is_not_deferred(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        await _armed(env, clock, "soon")
        await clock.advance(0.1)
        await clock.advance(0.01)
        assert [t for _, t in FIRED] == pytest.approx([1000.1, 1000.11])


def fail_commit() -> None:
    raise OSError("injected: disk I/O error")


async def test_a_failed_deferred_commit_leaves_the_alarm_to_fire_again(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        host = await _armed(env, clock, "a")
        await clock.advance(0.1)
        faults.arm("commit.before", fail_commit)
        try:
            await clock.advance(DEFERRED_COMMIT)
        finally:
            faults.disarm("commit.before")
        assert host.statistics().resets == 1
        assert stored(host, "a") is None
        await clock.advance(0)  # the stored alarm (due already) is scheduled again: it runs
        await clock.advance(DEFERRED_COMMIT)
        assert [name for name, _ in FIRED] == ["a", "a"]
        assert stored(host, "a") == 1  # the write of the run that was not committed is gone


async def test_close_commits_the_deferred_writes(tmp_path: Path) -> None:
    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        await _armed(env, clock, "a")
        await clock.advance(0.1)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=VirtualClock(2000.0)) as env:
        assert await env.T.get_by_name("a").count() == 1
        assert host_of(env).statistics().pending_alarms == 0


async def test_a_failed_commit_still_answers_when_its_alarm_cannot_be_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: Any, ns: str, oid: bytes) -> None:
        raise sqlite3.OperationalError("injected: disk I/O error")

    clock = VirtualClock(start=1000.0)
    async with durable.connect(WORKER, data_dir=tmp_path, clock=clock) as env:
        stub = env.T.get_by_name("a")
        await stub.arm(int(clock.now() * 1000) + 60_000)
        faults.arm("commit.before", fail_commit)
        monkeypatch.setattr(Partition, "record", unreadable)
        try:
            with pytest.raises(durable.ObjectReset):
                await stub.arm(int(clock.now() * 1000) + 90_000)  # the caller is answered
        finally:
            faults.disarm("commit.before")
            monkeypatch.undo()
        assert await stub.count() is None
