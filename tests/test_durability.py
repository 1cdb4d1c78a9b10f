"""Durability: what a killed process leaves behind, crash-safe promotion and failed commits.

The crash tests run ``tests/crash_client.py`` in a subprocess, read its acknowledgements from the
pipe, kill it (SIGKILL from outside, or from inside at a named fault point, ``durable/faults.py``)
and reopen its data dir here. CONTRACTS §4: WAL with ``synchronous=NORMAL`` survives ``kill -9``;
an acknowledged write is never lost and an increment is never applied twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.faults import faults
from durable.testing import VirtualClock
from tests import crash_client
from tests.conftest import Runner

CLIENT = Path(__file__).with_name("crash_client.py")
ROOT = CLIENT.parent.parent


class Client:
    """A ``crash_client.py`` subprocess whose stdout is read line by line with a deadline."""

    def __init__(self, mode: str, data_dir: Path, fault: str | None = None) -> None:
        env = dict(os.environ)
        env.pop("DURABLE_FAULT", None)
        if fault is not None:
            env["DURABLE_FAULT"] = fault
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT), mode, str(data_dir)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        self._eof = False

    def lines(self, timeout: float = 60.0) -> Any:
        """Yield complete lines as they arrive; stop at EOF; fail after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line.decode()
            if self._eof:
                return
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise AssertionError(f"no output from the client in {timeout} s: {self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self._eof = True
            self._buffer += chunk

    def expect(self, wanted: str) -> None:
        line = next(iter(self.lines()), None)
        assert line == wanted, f"expected {wanted!r}, got {line!r}: {self.stderr()}"

    def rest(self) -> list[str]:
        """Every complete line left after the process ended (a torn last line is dropped)."""
        self.proc.wait(timeout=60)
        return list(self.lines())

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        self.kill()
        self._selector.close()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def client_factory() -> Any:
    clients: list[Client] = []

    def make(mode: str, data_dir: Path, fault: str | None = None) -> Client:
        clients.append(Client(mode, data_dir, fault))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def object_file(data_dir: Path, env: Any, name: str) -> Path:
    """Where DESIGN §3 puts a promoted object's database."""
    oid = env.COUNTER.id_from_name(name)
    partition = oid.partition(16)
    return (
        data_dir
        / "partitions"
        / f"{partition:04d}"
        / "objects"
        / "COUNTER"
        / f"{oid.raw.hex()}.sqlite"
    )


# -- kill -9 under load -------------------------------------------------------------------------
ACKS = 2000
ROUNDS = 3


def count_until_killed(client: Client, acks: dict[str, list[int]]) -> None:
    """Read ``ACKS`` acknowledgements, SIGKILL the client, then read what it printed before."""
    client.expect("ready")
    lines = client.lines()
    for _ in range(ACKS):
        name, value = next(lines).split()
        acks.setdefault(name, []).append(int(value))
    client.kill()
    assert client.proc.returncode == -signal.SIGKILL, client.stderr()
    for line in client.rest():  # acknowledged before the kill, still in the pipe
        name, value = line.split()
        acks.setdefault(name, []).append(int(value))


async def test_kill_9_loses_no_acknowledged_increment_and_applies_none_twice(
    tmp_path: Path, client_factory: Any
) -> None:
    """Count from 16 tasks over 50 objects, kill -9, check, restart; three times on one dir."""
    data = tmp_path / "data"
    acks: dict[str, list[int]] = {}
    names = [f"c{i:02d}" for i in range(crash_client.OBJECTS)]
    for _ in range(ROUNDS):
        count_until_killed(client_factory("count", data), acks)
        for name, values in acks.items():
            assert len(values) == len(set(values)), f"{name}: one value acknowledged twice"

        async with durable.connect(crash_client.worker, data_dir=data) as env:
            stubs = [env.COUNTER.get_by_name(name) for name in names]
            states = await asyncio.gather(*(stub.state() for stub in stubs))
        unacknowledged = 0
        for name, (kv, sql) in zip(names, states, strict=True):
            last = max(acks.get(name, [0]))
            assert kv >= last, f"{name}: acknowledged {last}, stored {kv}"
            unacknowledged += kv - last
            promoted = int(name[1:]) % 5 == 0
            assert sql == (kv if promoted else None), f"{name}: KV and SQL disagree"
        # Each task has at most one increment applied but not yet printed when the kill lands.
        assert unacknowledged <= crash_client.CONCURRENCY
    assert sum(len(values) for values in acks.values()) >= ROUNDS * ACKS


# -- crash during promotion ---------------------------------------------------------------------
@pytest.mark.parametrize("point", ["promote.after_copy", "promote.after_flip"])
async def test_crash_during_promotion_keeps_kv_data_and_alarm(
    tmp_path: Path, client_factory: Any, point: str
) -> None:
    data = tmp_path / "data"
    client = client_factory("promote", data, fault=point)
    client.expect("acked")
    assert client.rest() == []  # died inside sql.exec: "promoted" never printed
    assert client.proc.returncode == -signal.SIGKILL, client.stderr()

    async with durable.connect(crash_client.worker, data_dir=data) as env:
        path = object_file(data, env, "p")
        # Before the flip the copy is not the object's storage: recovery deletes it.
        assert path.exists() == (point == "promote.after_flip")
        assert not path.with_name(path.name + ".tmp").exists()
        stub = env.COUNTER.get_by_name("p")
        assert await stub.list_all() == crash_client.FILL
        assert await stub.get_alarm() == crash_client.ALARM
        await stub.promote()  # promotes normally now (or is already promoted)
        assert path.exists()
        assert await stub.state() == (0, 0)
    async with durable.connect(crash_client.worker, data_dir=data) as env:
        stub = env.COUNTER.get_by_name("p")
        assert await stub.list_all() == {**crash_client.FILL, "sql": True}
        assert await stub.get_alarm() == crash_client.ALARM
        assert await stub.increment() == 1
        assert await stub.state() == (1, 1)


# -- crash during a commit ----------------------------------------------------------------------
async def test_crash_during_commit_keeps_every_acknowledged_write(
    tmp_path: Path, client_factory: Any
) -> None:
    data = tmp_path / "data"
    client = client_factory("commit-kill", data)
    client.expect("acked")
    assert client.rest() == []
    assert client.proc.returncode == -signal.SIGKILL, client.stderr()

    async with durable.connect(crash_client.worker, data_dir=data) as env:
        rows, file = env.COUNTER.get_by_name("rows"), env.COUNTER.get_by_name("file")
        # Killed before the partition transaction began: the rows object's write never landed.
        assert await rows.list_all() == crash_client.FILL
        # The promoted object's file commits first; its unacknowledged write may be there.
        stored = await file.list_all()
        stored.pop("unacked", None)
        assert stored == {**crash_client.FILL, "sql": True}
        assert object_file(data, env, "file").exists()


async def test_alarm_set_in_a_crashed_commit_is_either_gone_or_fires(
    tmp_path: Path, client_factory: Any
) -> None:
    """Killed mid-commit, a promoted object's alarm may or may not have been stored; if it was
    stored, it must fire once due: a restarted host must not leave it pending forever."""
    data = tmp_path / "data"
    client = client_factory("alarm-kill", data)
    client.expect("acked")
    assert client.rest() == []
    assert client.proc.returncode == -signal.SIGKILL, client.stderr()

    clock = VirtualClock(start=time.time())
    async with durable.connect(crash_client.worker, data_dir=data, clock=clock) as env:
        await clock.advance(120)  # past the alarm, which was set a minute ahead
        stub = env.COUNTER.get_by_name("alarm")
        pending = await stub.get_alarm()
        assert pending is None, f"alarm due at {pending} still pending {clock.now() * 1000}"


async def test_an_alarm_killed_before_its_commit_runs_again_after_restart(
    client_factory: Any, tmp_path: Path
) -> None:
    """At-least-once: the alarm ran, its writes and its clearing were not yet durable (deferred:
    no one could see them) when the process died, so the restarted host runs it again."""
    data = tmp_path / "data"
    client = client_factory("alarm-rerun", data)
    client.expect("acked")
    client.expect("ran")
    assert client.rest() == []
    assert client.proc.returncode == -signal.SIGKILL, client.stderr()

    clock = VirtualClock(start=time.time())
    async with durable.connect(crash_client.worker, data_dir=data, clock=clock) as env:
        stub = env.COUNTER.get_by_name("rerun")
        assert await stub.list_all() == {"k": 1}  # acknowledged: kept; the alarm's put: not
        scheduled = await stub.get_alarm()
        assert scheduled is not None
        await clock.advance(0)  # due while the process was down: it fires right after start
        assert await stub.list_all() == {"k": 1, "fired": scheduled}
        assert await stub.get_alarm() is None


# -- delete_all and SQL in one turn -------------------------------------------------------------
instances = itertools.count(1)


class Cell(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.instance = next(instances)  # not id(self): a new instance may reuse the address

    async def whoami(self) -> int:
        return self.instance

    async def promote(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")

    async def put_many(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def list_all(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def wipe_then_sql(self) -> list[dict[str, Any]]:
        await self.ctx.storage.delete_all()
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE fresh(y)")
        sql.exec("INSERT INTO fresh VALUES (1)")
        await self.ctx.storage.put("after", 2)
        return sql.exec("SELECT y FROM fresh").to_list()

    async def fresh_rows(self) -> list[dict[str, Any]]:
        return self.ctx.storage.sql.exec("SELECT y FROM fresh").to_list()

    async def put_with_alarm(self, entries: dict[str, Any], when: int) -> None:
        await self.ctx.storage.put(entries)
        await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: durable.AlarmInfo) -> None:
        pass


cells = durable.Worker(objects={"CELL": Cell})


async def test_sql_written_after_delete_all_in_the_same_turn_is_kept(run: Runner) -> None:
    async with run(cells) as env:
        cell = env.CELL.get_by_name("a")
        await cell.promote()
        await cell.put_many({"old": 1})
        assert await cell.wipe_then_sql() == [{"y": 1}]  # acknowledged
        assert await cell.list_all() == {"after": 2}
        assert await cell.fresh_rows() == [{"y": 1}]
    async with run(cells) as env:
        assert await env.CELL.get_by_name("a").fresh_rows() == [{"y": 1}]


# -- a failed commit ----------------------------------------------------------------------------
def fail_commit() -> None:
    raise OSError("injected: disk I/O error")


@pytest.mark.parametrize("kind", ["rows", "file"])
async def test_failed_commit_resets_the_object_and_keeps_none_of_the_write(
    run: Runner, kind: str
) -> None:
    async with run(cells) as env:
        cell, other = env.CELL.get_by_name("cell"), env.CELL.get_by_name("other")
        if kind == "file":
            await cell.promote()
        await cell.put_many({"k": 1})
        await other.put_many({"k": 1})
        instance = await cell.whoami()

        faults.arm("commit.before", fail_commit)
        try:
            with pytest.raises(durable.ObjectReset):
                await cell.put_many({"k": 2, "new": 3})
        finally:
            faults.disarm("commit.before")

        assert await cell.whoami() != instance  # reset: a new instance serves the next call
        assert await cell.list_all() == {"k": 1}
        assert await other.list_all() == {"k": 1}
        await other.put_many({"k": 5})
        await cell.put_many({"k": 6})
    async with run(cells) as env:
        assert await env.CELL.get_by_name("cell").list_all() == {"k": 6}
        assert await env.CELL.get_by_name("other").list_all() == {"k": 5}


async def test_failed_commit_of_a_promoted_object_with_an_alarm_keeps_none_of_the_write(
    run: Runner,
) -> None:
    """A promoted object whose turn also sets its alarm commits its file, then the partition's
    alarm index: when the second part fails, the caller is told the write failed."""
    later = 2_000_000_000_000
    async with run(cells) as env:
        cell = env.CELL.get_by_name("cell")
        await cell.promote()
        await cell.put_many({"k": 1})
        faults.arm("commit.before", fail_commit)
        try:
            with pytest.raises(durable.ObjectReset):
                await cell.put_with_alarm({"k": 2}, later)
        finally:
            faults.disarm("commit.before")
        assert await cell.list_all() == {"k": 1}
        assert await cell.get_alarm() is None


async def test_failed_commit_fails_only_the_object_whose_writes_fail(run: Runner) -> None:
    """One group commit holds both objects' writes; only the first object's retry fails."""
    calls = 0

    def fail_batch_and_first_retry() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the batch of both, then the first object alone; the second passes
            raise OSError("injected: disk I/O error")

    async with run(cells) as env:
        bad, good = env.CELL.get_by_name("bad"), env.CELL.get_by_name("good")
        await asyncio.gather(bad.put_many({"k": 1}), good.put_many({"k": 1}))
        faults.arm("commit.before", fail_batch_and_first_retry)
        try:
            results = await asyncio.gather(
                bad.put_many({"k": 2}), good.put_many({"k": 2}), return_exceptions=True
            )
        finally:
            faults.disarm("commit.before")
        assert calls == 3
        assert isinstance(results[0], durable.ObjectReset)
        assert results[1] is None
        assert await bad.list_all() == {"k": 1}
        assert await good.list_all() == {"k": 2}
    async with run(cells) as env:
        assert await env.CELL.get_by_name("bad").list_all() == {"k": 1}
        assert await env.CELL.get_by_name("good").list_all() == {"k": 2}
