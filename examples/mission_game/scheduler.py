"""``SchedulerShard``: runs one shard's miners on the object's single alarm (findings 1, 3, 7, 9).

Which shard runs a miner (finding 1): ``TaskRouter`` — ``HashRouter(env.SCHEDULER,
shards=SHARDS, prefix="scheduler-")`` keyed by task id (``STRATEGY=hash``, the default: load
spreads evenly whatever the missions), or ``TemplateRouter(env.SCHEDULER, "scheduler-{mission}")``
(``STRATEGY=namespace``: a mission's miners share a shard, so one busy mission is one hot shard).

Storage of a shard::

    task:<id>                 the task (protocol dict); a {"deleted": True} tombstone until sent
    due:<ms, 14 digits>:<id>  the timer heap: the next cycle of a running task, or the deletion of
                              a finished one; keys sort by time, so the earliest is list(limit=1)
    dirty:<id>                the task changed and its player and room have not both
                              acknowledged it yet (the live outbox, sent every round)
    mined, mined_acked        ore mined by this shard so far, and the amount the global pool holds
    board_mark                {"at": ms, "mined": ore}: the leaderboard has every task's ore as of
                              ``at`` (when ``mined`` was that much); nothing is stored per task
                              for it: a report is due while ``mined`` is larger, and it sends the
                              tasks whose ``last_cycle_at`` is at or after ``at`` (derived, so a
                              cycle writes no leaderboard mark)

Guarantees:
- No sleeps or timers (finding 3): every wait is the object's one alarm, set to the earliest of
  the heap's first key and the next due delivery of a non-empty outbox. Between cycles the
  shard holds nothing in memory that matters, so it is evicted (hibernates) like any idle object.
  Taking the due tasks is a range read of the heap, never a rebuild of a queue (the original's
  O(n)).
- One checkpoint per cycle (finding 7): a cycle's task record, heap keys, outbox mark and ore
  counter are written in one turn (one round's cycles share it), so they commit together; a
  crash before that commit runs the alarm again (at-least-once) and nothing is half-applied.
- Cleanup (finding 9): a completed or recalled task is deleted 24 h after it finished, a failed
  one after 7 days, by the same heap.
- Deliveries are at-least-once and idempotent: players apply a state only if it is newer, rooms
  overwrite, the leaderboard keeps the largest ore per task, and the global pool stores each
  shard's cumulative total (finding 11: a pool that was lost is rebuilt from those totals; none is
  counted twice). Anything not acknowledged stays in its outbox and is retried on the next alarm,
  backing off from 0.5 s to 10 s while it fails.
- Three cadences, so what nobody watches live costs fewer calls: players and rooms every round,
  the global pool at most once a second (``POOL_EVERY_MS``), the leaderboard, aggregated once a
  minute anyway, at most every 5 s (``BOARD_EVERY_MS``).
- Batching under load: alarms of one shard run at least ``TICK_MS`` (100 ms) apart, so the
  cycles and deliveries due within a tick share one round (one commit, one RPC per player, room
  and leaderboard) instead of one round per miner; a cycle is late by at most a tick. A new
  miner does not move an alarm that is already due sooner (no full re-arm per deploy).
- A miner whose player no longer exists fails (status ``failed``, counted in the metrics).

Does not guarantee: cycles exactly ``cycle_ms`` apart: the next cycle is timed from when this
one ran, so a late alarm delays the miner rather than bursting it.

On failure: a refused delivery is logged, kept and retried by the shard (see above); an error in
the alarm itself (storage) is retried by the runtime (2 s × 2^n), which replays only what did not
commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from durable import DurableObject, ObjectState
from durable.object import AlarmInfo
from durable.routers import HashRouter, TemplateRouter
from examples.mission_game import telemetry
from examples.mission_game.leaderboard import boards
from examples.mission_game.rules import (
    FAILED,
    LIVE,
    ORE_PER_CYCLE,
    GameConfig,
    Task,
    UnknownMiner,
    UnknownPlayer,
    delete_all,
    expires_at,
    finish,
    get_all,
    mine,
    put_all,
)

log = logging.getLogger("mission_game.scheduler")
DUE_BATCH = 2_000  # tasks run per alarm; more due → the alarm is set to now again
OUTBOX_BATCH = 1_000  # tasks delivered per alarm
EVENTS_PER_BATCH = 100  # the leaderboard's batch limit
TICK_MS = 100  # alarms of one shard at least this far apart: cycles due together share a round
POOL_EVERY_MS = 1_000
BOARD_EVERY_MS = 5_000
NO_MARK = {"at": 0, "mined": 0}  # no leaderboard report yet


class TaskRouter:
    """Maps a task to its shard's object name by the configured strategy."""

    def __init__(self, env: Any, config: GameConfig) -> None:
        self.strategy = config.strategy
        self.hash = HashRouter(env.SCHEDULER, shards=config.shards, prefix="scheduler-")
        self.template = TemplateRouter(env.SCHEDULER, "scheduler-{mission}")

    def name_for(self, task: Task) -> str:
        if self.strategy == "namespace":
            return self.template.name_for(mission=task["mission"])
        return self.hash.name_for(task["id"])


def due_key(at_ms: int, task_id: str) -> str:
    """``due_key(1700000000000, "ann.1")`` → ``"due:01700000000000:ann.1"`` (sorts by time)."""
    return f"due:{at_ms:014d}:{task_id}"


def wake_at(task: Task) -> int:
    """When the heap next needs ``task``: its next cycle, or its deletion once it finished."""
    return int(task["next_cycle_at"]) if task["status"] == LIVE else expires_at(task)


class SchedulerShard(DurableObject):
    def __init__(self, ctx: ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.name = str(ctx.id.name)
        self.failures = 0  # consecutive delivery rounds with something refused
        self.retry_at = 0
        self.delivering = False
        self.last_round = 0  # when the alarm last ran (memory: after eviction, no wait is owed)
        self.next_pool = self.next_board = 0  # when the pool and the leaderboard are next due

    # -- RPC from players -----------------------------------------------------------------------
    async def start(self, task: Task) -> None:
        """Take a new miner; idempotent (the player may retry)."""
        if await self.ctx.storage.get(f"task:{task['id']}") is None:
            await self._store([(None, task)])
            await self._count_running(+1)
        await self._wake_soon()

    async def recall(self, task_id: str) -> Task:
        task: Task | None = await self.ctx.storage.get(f"task:{task_id}")
        if task is None or task.get("deleted"):
            raise UnknownMiner(task_id)
        if task["status"] == LIVE:
            recalled = finish(task, "recalled", self._now_ms())
            await self._store([(task, recalled)])
            await self._count_running(-1)
            task = recalled
            await self._rearm()
        return task

    async def load(self) -> dict[str, int]:
        """Running miners, live deliveries not yet acknowledged, ore not yet in the pool."""
        storage = self.ctx.storage
        outbox = await storage.list(prefix="dirty:")
        unpooled = await storage.get("mined", 0) - await storage.get("mined_acked", 0)
        return {"running": await storage.get("running", 0), "outbox": len(outbox),
                "unpooled": unpooled}  # fmt: skip

    # -- the alarm: run what is due, then deliver ----------------------------------------------
    async def alarm(self, info: AlarmInfo) -> None:
        now = self.last_round = self._now_ms()
        due = await self.ctx.storage.list(prefix="due:", end=due_key(now + 1, ""), limit=DUE_BATCH)
        tasks = await get_all(self.ctx.storage, [f"task:{k.rsplit(':', 1)[1]}" for k in due])
        await self._due(list(tasks.values()), now)
        if not self.delivering:
            self.delivering = True
            try:
                await self._deliver()
            finally:
                self.delivering = False
        await self._rearm()

    async def _due(self, tasks: list[Task], now: int) -> None:
        """Mine one cycle of each due live task; tombstone each expired one (finding 9)."""
        started = time.perf_counter()
        live = [t for t in tasks if t["status"] == LIVE]
        expired = [t for t in tasks if t["status"] != LIVE]
        cycled = [mine(t, now) for t in live]
        await delete_all(self.ctx.storage, [due_key(wake_at(t), t["id"]) for t in expired])
        tombstones = {f"task:{t['id']}": {**t, "deleted": True} for t in expired}
        await put_all(
            self.ctx.storage, {**tombstones, **{f"dirty:{t['id']}": True for t in expired}}
        )
        await self._store(list(zip(live, cycled, strict=True)))
        if live:
            mined = await self.ctx.storage.get("mined", 0)
            await self.ctx.storage.put("mined", mined + ORE_PER_CYCLE * len(live))
        finished = sum(t["status"] != LIVE for t in cycled)
        if finished:
            await self._count_running(-finished)
        seconds = (time.perf_counter() - started) / max(1, len(live))
        for task in live:
            telemetry.GAME.cycle(seconds, now - int(task["next_cycle_at"]))

    async def _store(self, changes: list[tuple[Task | None, Task]]) -> None:
        """Write each (old, new) task, move its heap key and mark it for delivery: one turn, so
        one commit."""
        moved = [due_key(wake_at(old), old["id"]) for old, _ in changes if old is not None]
        await delete_all(self.ctx.storage, moved)
        entries: dict[str, Any] = {}
        for _, task in changes:
            entries |= {f"task:{task['id']}": task, due_key(wake_at(task), task["id"]): True,
                        f"dirty:{task['id']}": True}  # fmt: skip
        await put_all(self.ctx.storage, entries)

    async def _count_running(self, delta: int) -> None:
        running = await self.ctx.storage.get("running", 0) + delta
        await self.ctx.storage.put("running", running)
        telemetry.GAME.shard_load[self.name] = running

    async def _rearm(self) -> None:
        storage = self.ctx.storage
        now = self._now_ms()
        first = await storage.list(prefix="due:", limit=1)
        times = [int(key.split(":")[1]) for key in first]
        if await storage.list(prefix="dirty:", limit=1):
            times.append(max(now, self.retry_at))
        mined = await storage.get("mined", 0)
        if mined > (await storage.get("board_mark", NO_MARK))["mined"]:
            times.append(max(now, self.retry_at, self.next_board))
        if mined > await storage.get("mined_acked", 0):
            times.append(max(now, self.retry_at, self.next_pool))
        if not times:
            await storage.delete_alarm()
            return
        when = max(min(times), self.last_round + TICK_MS)
        if await storage.get_alarm() != when:
            await storage.set_alarm(when)

    async def _wake_soon(self) -> None:
        """Have the next round deliver a new task: the alarm moves only if it is due later."""
        when = max(self._now_ms(), self.retry_at, self.last_round + TICK_MS)
        alarm = await self.ctx.storage.get_alarm()
        if alarm is None or alarm > when:  # the round's own re-arm times the task's first cycle
            await self.ctx.storage.set_alarm(when)

    # -- deliveries -----------------------------------------------------------------------------
    async def _deliver(self) -> None:
        now = self._now_ms()
        tasks = await self._outbox()
        refused = await self._send(tasks)
        await self._acknowledge(tasks, refused)
        if now >= self.next_board:
            self.next_board = now + BOARD_EVERY_MS
            refused |= await self._report_board()
        if now >= self.next_pool:
            self.next_pool = now + POOL_EVERY_MS
            refused |= await self._deposit()
        self.failures = self.failures + 1 if refused else 0
        backoff = min(10_000, 500 * 2 ** (self.failures - 1)) if refused else 0
        self.retry_at = self._now_ms() + backoff

    async def _outbox(self) -> list[Task]:
        """The tasks marked dirty (a mark whose task is gone is dropped)."""
        marks = await self.ctx.storage.list(prefix="dirty:", limit=OUTBOX_BATCH)
        ids = [key[len("dirty:") :] for key in marks]
        found = await get_all(self.ctx.storage, [f"task:{i}" for i in ids])
        await delete_all(self.ctx.storage, [f"dirty:{i}" for i in ids if f"task:{i}" not in found])
        return list(found.values())

    async def _acknowledge(self, tasks: list[Task], refused: set[str]) -> None:
        """Clear the marks of what was delivered, unless the task changed meanwhile."""
        storage = self.ctx.storage
        now = await get_all(storage, [f"task:{t['id']}" for t in tasks if t["id"] not in refused])
        # A task that changed meanwhile stays marked: its newer state goes in a later round.
        sent = [t for t in tasks if now.get(f"task:{t['id']}") == t]
        gone = [f"task:{t['id']}" for t in sent if t.get("deleted")]
        await delete_all(storage, [f"dirty:{t['id']}" for t in sent] + gone)

    async def _send(self, tasks: list[Task]) -> set[str]:
        """Deliver to players, then to rooms; the ids not acknowledged."""
        by_owner: dict[str, list[Task]] = defaultdict(list)
        for task in tasks:
            by_owner[task["owner"]].append(task)
        credits = await asyncio.gather(*(self._credit(o, ts) for o, ts in by_owner.items()))
        totals = {c["player"]: c for c in credits if c is not None and "player" in c}
        refused = {t["id"] for c, ts in zip(credits, by_owner.values(), strict=True)
                   if c is None for t in ts}  # fmt: skip
        by_mission: dict[str, list[Task]] = defaultdict(list)
        for task in tasks:
            by_mission[task["mission"]].append(task)
        rooms = [self._publish(m, ts, totals) for m, ts in by_mission.items()]
        results = await asyncio.gather(*rooms, return_exceptions=True)
        for result, mission_tasks in zip(results, by_mission.values(), strict=True):
            if isinstance(result, BaseException):
                log.warning("%s: delivery failed: %r", self.name, result)
                refused |= {t["id"] for t in mission_tasks}
        return refused

    async def _credit(self, owner: str, tasks: list[Task]) -> dict[str, Any] | None:
        """The player's totals after crediting, {} if the player is gone, None if it failed."""
        try:
            totals: dict[str, Any] = await self.env.PLAYER.get_by_name(owner).credit(tasks)
            return totals
        except UnknownPlayer:
            await self._fail([t for t in tasks if t["status"] == LIVE])
            return {}
        except Exception as error:
            log.warning("%s: crediting %s failed: %r", self.name, owner, error)
            return None

    async def _fail(self, tasks: list[Task]) -> None:
        now = self._now_ms()
        await self._store([(task, finish(task, FAILED, now)) for task in tasks])
        if tasks:
            await self._count_running(-len(tasks))
        telemetry.GAME.failures += len(tasks)

    async def _publish(self, mission: str, tasks: list[Task], totals: dict[str, Any]) -> None:
        owners = {t["owner"] for t in tasks}
        players = [totals[o] for o in sorted(owners) if o in totals]
        await self.env.ROOM.get_by_name(mission).publish(tasks, players)

    async def _report_board(self) -> set[str]:
        """Report the tasks changed since the board mark, then move the mark; refused ids."""
        storage = self.ctx.storage
        mark, mined = await storage.get("board_mark", NO_MARK), await storage.get("mined", 0)
        if mined <= mark["mined"]:
            return set()
        read_at = self._now_ms()  # a task changed after this read has last_cycle_at >= read_at
        tasks = (await storage.list(prefix="task:")).values()
        refused = await self._report([t for t in tasks if t["last_cycle_at"] >= mark["at"]])
        if not refused:
            await storage.put("board_mark", {"at": read_at, "mined": mined})
        return refused

    async def _report(self, tasks: list[Task]) -> set[str]:
        """Ore-mined events for the leaderboard, in batches of at most 100; the ids refused."""
        events = [
            {"type": "ore_mined", "task": t["id"], "player": t["owner"], "ore": t["ore"]}
            for t in tasks
            if t["ore"] > 0 and not t.get("deleted")
        ]
        stub = boards(self.env).get(self.name)
        try:
            for start in range(0, len(events), EVENTS_PER_BATCH):
                await stub.record(events[start : start + EVENTS_PER_BATCH])
        except Exception as error:
            log.warning("%s: leaderboard report failed, kept: %r", self.name, error)
            return {t["id"] for t in tasks}
        return set()

    async def _deposit(self) -> set[str]:
        """Send this shard's cumulative ore to the global pool; {"global"} if refused."""
        mined = await self.ctx.storage.get("mined", 0)
        if mined <= await self.ctx.storage.get("mined_acked", 0):
            return set()
        try:
            await self.env.GLOBAL.get_by_name("global-state").deposit(self.name, mined)
        except Exception as error:
            log.warning("%s: global deposit failed, kept for the next alarm: %r", self.name, error)
            return {"global"}
        await self.ctx.storage.put("mined_acked", mined)
        return set()

    def _now_ms(self) -> int:
        return int(self.ctx.now() * 1000)
