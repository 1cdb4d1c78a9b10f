"""The ore leaderboard, built as seed ``events-leaderboard-scalability-plan`` recommends.

Events arrive in batches of at most 100 (more → 429 ``BatchTooLarge`` with ``retry_after``), are
buffered in ``Leaderboard`` objects (``board-0`` … ``board-3``, a ``HashRouter``), and a cron job
(``aggregate``, every minute) moves them into the ``env.DB`` SQL binding. ``GET
/api/leaderboard`` reads the precomputed ``ranks`` table through ``RankCache`` (TTL 10 s): a
thousand page loads cost one query per TTL.

Two kinds of events:
- ``ore_mined`` ``{"task", "player", "ore"}`` come only from the scheduler shards (the server is
  authoritative: clients cannot post them). ``ore`` is the task's cumulative ore, so the buffer
  and the database keep the largest per task (``ON CONFLICT … MAX``): repeats and reordering are
  harmless and a player's ore is the sum over its tasks.
- Anything a client posts to ``/api/events`` (``{"type": name, "player"?: name}``) is counted per
  type in ``event_counts``, for analytics.

Storage of a ``Leaderboard`` object: ``ore:<task>`` (latest event per task), ``ev:<seq>`` (client
events in arrival order), ``seq``.

Guarantees: an event is removed from its buffer only after the database transaction holding it
committed (``ack`` after ``batch``), so a crash between them re-sends it: ore stays exact (MAX);
client counts skip sequence numbers at or below the stored mark (``event_marks``).

Does not guarantee: exact client counts when several processes run the cron at the same moment
(one per Ray host slot): both may read the same mark. Ore ranks stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from durable import DurableObject
from durable.database import Statement
from durable.routers import HashRouter
from examples.mission_game.rules import BadInput, BatchTooLarge, check_name

MAX_BATCH = 100
DRAIN = 1_000  # events per board per aggregation round
ROUNDS = 20  # rounds per cron run: at most 20,000 events per board per minute
SHARDS = 4
RANKS_TTL = 10.0

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mined (task TEXT PRIMARY KEY, player TEXT NOT NULL, "
    "ore INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ranks (player TEXT PRIMARY KEY, ore INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_counts (type TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_marks (board TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)
UPSERT_MINED = (
    "INSERT INTO mined (task, player, ore) VALUES (?, ?, ?) "
    "ON CONFLICT (task) DO UPDATE SET ore = MAX(ore, excluded.ore)"
)
COUNT_EVENTS = (
    "INSERT INTO event_counts (type, n) VALUES (?, ?) "
    "ON CONFLICT (type) DO UPDATE SET n = n + excluded.n"
)
MARK = (
    "INSERT INTO event_marks (board, seq) VALUES (?, ?) "
    "ON CONFLICT (board) DO UPDATE SET seq = MAX(seq, excluded.seq)"
)
RERANK = (
    ("DELETE FROM ranks", ()),
    ("INSERT INTO ranks SELECT player, SUM(ore) FROM mined GROUP BY player", ()),
)


def boards(env: Any) -> HashRouter:
    return HashRouter(env.LEADERBOARD, shards=SHARDS, prefix="board-")


def client_events(body: Any) -> list[dict[str, str]]:
    """The events of a ``POST /api/events`` body, checked: ``{"events": [{"type": "x"}]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise BadInput('The body must be {"events": [...]}.')
    events = body["events"]
    if len(events) > MAX_BATCH:
        raise BatchTooLarge(len(events), MAX_BATCH)
    checked = []
    for event in events:
        if not isinstance(event, dict):
            raise BadInput("Each event must be an object with a type.")
        kind = check_name(event.get("type"), "event type")
        if kind == "ore_mined":
            raise BadInput("ore_mined events come from the server; clients cannot post them.")
        one = {"type": kind}
        if "player" in event:
            one["player"] = check_name(event["player"], "event player")
        checked.append(one)
    return checked


class Leaderboard(DurableObject):
    """A buffer of events waiting for the next aggregation."""

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Server ``ore_mined`` events: keep the largest ore per task."""
        if len(events) > MAX_BATCH:
            raise BatchTooLarge(len(events), MAX_BATCH)
        for event in events:
            key = f"ore:{event['task']}"
            held = await self.ctx.storage.get(key)
            if held is None or event["ore"] > held["ore"]:
                await self.ctx.storage.put(key, event)

    async def ingest(self, events: list[dict[str, str]]) -> int:
        """Client events, numbered in arrival order; returns how many were accepted."""
        if len(events) > MAX_BATCH:
            raise BatchTooLarge(len(events), MAX_BATCH)
        seq = await self.ctx.storage.get("seq", 0)
        batch: dict[str, Any] = {f"ev:{seq + i:012d}": e for i, e in enumerate(events, 1)}
        await self.ctx.storage.put({**batch, "seq": seq + len(events)})
        return len(events)

    async def drain(self, limit: int) -> dict[str, Any]:
        """Up to ``limit`` buffered events of each kind, left in place until ``ack``."""
        ore = await self.ctx.storage.list(prefix="ore:", limit=limit)
        events = await self.ctx.storage.list(prefix="ev:", limit=limit)
        return {"ore": list(ore.values()), "events": [[int(k[3:]), e] for k, e in events.items()]}

    async def ack(self, ore: list[dict[str, Any]], upto: int) -> None:
        """Forget what ``drain`` gave once it is in the database (unless it changed since)."""
        for event in ore:
            key = f"ore:{event['task']}"
            if await self.ctx.storage.get(key) == event:
                await self.ctx.storage.delete(key)
        done = await self.ctx.storage.list(prefix="ev:", end=f"ev:{upto + 1:012d}")
        for start in range(0, len(done), 128):  # the runtime's limit of keys per call
            await self.ctx.storage.delete(list(done)[start : start + 128])


async def aggregate(env: Any) -> int:
    """Move buffered events into ``env.DB`` and recompute the ranks; returns events moved."""
    for statement in SCHEMA:
        await env.DB.exec(statement)
    moved = 0
    for name in boards(env).names():
        board = env.LEADERBOARD.get_by_name(name)
        for _ in range(ROUNDS):
            batch = await board.drain(DRAIN)
            if not batch["ore"] and not batch["events"]:
                break
            upto = await _commit(env, name, batch)
            await board.ack(batch["ore"], upto)
            moved += len(batch["ore"]) + len(batch["events"])
    if moved:
        await env.DB.batch(RERANK)
    return moved


async def _commit(env: Any, board: str, batch: dict[str, Any]) -> int:
    """One transaction: ore per task, client counts past the board's mark, the new mark."""
    marks = await env.DB.exec("SELECT seq FROM event_marks WHERE board = ?", board)
    mark = marks[0]["seq"] if marks else 0
    statements: list[Statement] = [
        (UPSERT_MINED, (e["task"], e["player"], e["ore"])) for e in batch["ore"]
    ]
    counts: dict[str, int] = {}
    upto = mark
    for seq, event in batch["events"]:
        upto = max(upto, seq)
        if seq > mark:
            counts[event["type"]] = counts.get(event["type"], 0) + 1
    statements += [(COUNT_EVENTS, (kind, n)) for kind, n in sorted(counts.items())]
    statements.append((MARK, (board, upto)))
    await env.DB.batch(statements)
    return upto


@dataclass
class RankCache:
    """The top ranks, read from ``env.DB`` at most once per ``ttl`` seconds per ``limit``."""

    ttl: float = RANKS_TTL
    clock: Callable[[], float] = time.time
    entries: dict[int, tuple[float, list[dict[str, Any]]]] = field(default_factory=dict)

    async def ranks(self, env: Any, limit: int) -> dict[str, Any]:
        now = self.clock()
        entry = self.entries.get(limit)
        if entry is None or now - entry[0] >= self.ttl:
            entry = self.entries[limit] = (now, await _read_ranks(env, limit))
        return {"ranks": entry[1], "cached_at": int(entry[0] * 1000),
                "ttl_ms": int(self.ttl * 1000)}  # fmt: skip


async def _read_ranks(env: Any, limit: int) -> list[dict[str, Any]]:
    await env.DB.exec(SCHEMA[1])
    rows = await env.DB.exec(
        "SELECT player, ore FROM ranks ORDER BY ore DESC, player LIMIT ?", limit
    )
    return [{"player": r["player"], "ore": r["ore"], "rank": i} for i, r in enumerate(rows, 1)]
