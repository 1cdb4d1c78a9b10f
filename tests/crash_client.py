"""A client process for the crash tests: ``python tests/crash_client.py MODE DATA_DIR``.

It runs ``durable.connect`` on DATA_DIR and prints one line per acknowledged step (flushed), so a
test can read the pipe, kill the process at a known point and check what survived. Modes:

- ``count``: promote every 5th of ``OBJECTS`` counters, print ``ready``, then increment them from
  ``CONCURRENCY`` tasks forever, printing ``<name> <value>`` after each acknowledged increment.
- ``promote``: fill one object's KV data and alarm, print ``acked``, then promote it
  (``sql.exec``); run with ``DURABLE_FAULT=promote.after_copy`` (or ``after_flip``) it dies there.
- ``commit-kill``: write to a rows object and a promoted one, print ``acked``, arm
  ``commit.before`` to SIGKILL the process and write again.
- ``alarm-kill``: promote an object, print ``acked``, arm ``commit.before`` to SIGKILL the
  process and set the object's alarm a minute ahead (with a put) in one turn.
- ``alarm-rerun``: set an alarm 0.2 s ahead (with a put), print ``acked``; the alarm prints
  ``ran`` and arms ``commit.before`` to SIGKILL the process at its (deferred) commit.
- ``hold``: print ``ready`` and keep the data dir open until stdin closes.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any

import durable
from durable.faults import faults, kill_self

OBJECTS = 50
CONCURRENCY = 16
FILL = {f"key{i:03d}": {"i": i, "blob": bytes([i]) * i, "tags": (i, str(i))} for i in range(40)}
ALARM = 4_102_444_800_000  # 2100-01-01, never due while a test runs
KILL_AT_ALARM_COMMIT = False


class Counter(durable.DurableObject):
    async def promote(self) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS c(n INTEGER NOT NULL)")
        if sql.exec("SELECT count(*) AS rows FROM c").one()["rows"] == 0:
            sql.exec("INSERT INTO c VALUES (?)", await self.ctx.storage.get("n", 0))
        await self.ctx.storage.put("sql", True)

    async def increment(self) -> int:
        n = int(await self.ctx.storage.get("n", 0)) + 1
        await self.ctx.storage.put("n", n)
        if await self.ctx.storage.get("sql"):
            self.ctx.storage.sql.exec("UPDATE c SET n = ?", n)  # commits with the put, atomically
        return n

    async def state(self) -> tuple[int, int | None]:
        """The KV counter and, for a promoted object, the SQL one."""
        n = int(await self.ctx.storage.get("n", 0))
        if not await self.ctx.storage.get("sql"):
            return n, None
        return n, int(self.ctx.storage.sql.exec("SELECT n FROM c").one()["n"])

    async def fill(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)
        await self.ctx.storage.set_alarm(ALARM)

    async def put_many(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def list_all(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def put_with_alarm(self, entries: dict[str, Any], when: int) -> None:
        await self.ctx.storage.put(entries)
        await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: durable.AlarmInfo) -> None:
        await self.ctx.storage.put("fired", info.scheduled_time)
        if KILL_AT_ALARM_COMMIT:  # only in the client process, never in the test reopening it
            faults.arm("commit.before", kill_self)
            say("ran")


worker = durable.Worker(objects={"COUNTER": Counter})


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def count(env: Any) -> None:
    stubs = [env.COUNTER.get_by_name(f"c{i:02d}") for i in range(OBJECTS)]
    for stub in stubs[::5]:
        await stub.promote()
    say("ready")
    turns = itertools.count()

    async def task() -> None:
        while True:
            i = next(turns) % OBJECTS
            n = await stubs[i].increment()
            say(f"c{i:02d} {n}")

    await asyncio.gather(*(task() for _ in range(CONCURRENCY)))


async def promote(env: Any) -> None:
    stub = env.COUNTER.get_by_name("p")
    await stub.fill(FILL)
    say("acked")
    await stub.promote()
    say("promoted")


async def commit_kill(env: Any) -> None:
    rows, file = env.COUNTER.get_by_name("rows"), env.COUNTER.get_by_name("file")
    await file.promote()
    await asyncio.gather(rows.put_many(FILL), file.put_many(FILL))
    say("acked")
    faults.arm("commit.before", kill_self)
    await asyncio.gather(rows.put_many({"unacked": 1}), file.put_many({"unacked": 1}))
    say("survived")


async def alarm_kill(env: Any) -> None:
    stub = env.COUNTER.get_by_name("alarm")
    await stub.promote()
    say("acked")
    faults.arm("commit.before", kill_self)
    await stub.put_with_alarm({"k": 1}, int(time.time() * 1000) + 60_000)
    say("survived")


async def alarm_rerun(env: Any) -> None:
    global KILL_AT_ALARM_COMMIT
    KILL_AT_ALARM_COMMIT = True
    await env.COUNTER.get_by_name("rerun").put_with_alarm({"k": 1}, int(time.time() * 1000) + 200)
    say("acked")
    await asyncio.sleep(10)  # the alarm's commit kills us long before
    say("survived")


async def hold(env: Any) -> None:
    say("ready")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


MODES = {
    "count": count,
    "promote": promote,
    "commit-kill": commit_kill,
    "alarm-kill": alarm_kill,
    "alarm-rerun": alarm_rerun,
    "hold": hold,
}


async def main(mode: str, data_dir: str) -> None:
    async with durable.connect(worker, data_dir=data_dir) as env:
        await MODES[mode](env)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
