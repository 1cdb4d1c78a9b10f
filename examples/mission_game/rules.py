"""The mining game's rules, shared by both designs: configuration, names, tasks and game errors
(and ``get_all``/``put_all``/``delete_all``: storage calls over any number of keys, split at the
runtime's 128 keys per call, which the objects use to write a round's changes in a few calls).

Configuration comes from ``Worker(vars=...)`` (``env.DESIGN`` …), filled from environment
variables when ``app.py`` is imported, so ``DESIGN=original durable dev`` picks the design::

    DESIGN=original|sharded (sharded)   STRATEGY=hash|namespace (hash)   SHARDS=16
    CYCLE_MS=4000   MAX_CYCLES=10   STARTING_COPPER=100   MINER_COST=10

A task (one miner) is a plain dict, the wire format of the protocol (README "Protocol"):
``{"id", "owner", "mission", "status", "cycles", "max_cycles", "cycle_ms", "last_cycle_at",
"next_cycle_at", "ore"}``; times are epoch milliseconds of the server's clock. Its id is
``"<owner>.<n>"``: ``.`` is outside the name charset, so ids of two players never collide.

Game errors carry their HTTP status and protocol name as class attributes, so they survive an
RPC hop (the runtime rebuilds a remote exception without calling ``__init__``) and ``app.py``
answers ``{"error": name, "message": text}`` without a lookup table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,32}\.[0-9]{1,9}")
ORE_PER_CYCLE = 5
MAX_LIVE_MINERS = 10
LIVE = "running"
FAILED = "failed"  # deleted after 7 days; completed and recalled tasks after 24 h
KEEP_FINISHED_MS = 24 * 3600 * 1000
KEEP_FAILED_MS = 7 * 24 * 3600 * 1000
KEYS_PER_CALL = 128  # the runtime's limit of keys per storage get, put or delete

Task = dict[str, Any]

DEFAULTS: dict[str, Any] = {
    "DESIGN": "sharded",
    "STRATEGY": "hash",
    "SHARDS": 16,
    "CYCLE_MS": 4000,
    "MAX_CYCLES": 10,
    "STARTING_COPPER": 100,
    "MINER_COST": 10,
}


@dataclass(frozen=True, slots=True)
class GameConfig:
    design: str
    strategy: str
    shards: int
    cycle_ms: int
    max_cycles: int
    starting_copper: int
    miner_cost: int

    @classmethod
    def from_vars(cls, values: Mapping[str, Any]) -> GameConfig:
        """``GameConfig.from_vars({"SHARDS": "4"})`` → defaults with 4 shards; bad values raise."""
        merged = {**DEFAULTS, **values}
        config = cls(
            design=str(merged["DESIGN"]),
            strategy=str(merged["STRATEGY"]),
            shards=int(merged["SHARDS"]),
            cycle_ms=int(merged["CYCLE_MS"]),
            max_cycles=int(merged["MAX_CYCLES"]),
            starting_copper=int(merged["STARTING_COPPER"]),
            miner_cost=int(merged["MINER_COST"]),
        )
        if config.design not in ("original", "sharded"):
            raise ValueError(f"DESIGN must be original or sharded, not {config.design!r}")
        if config.strategy not in ("hash", "namespace"):
            raise ValueError(f"STRATEGY must be hash or namespace, not {config.strategy!r}")
        if min(config.shards, config.cycle_ms, config.max_cycles, config.miner_cost) < 1:
            raise ValueError("SHARDS, CYCLE_MS, MAX_CYCLES and MINER_COST must be positive")
        return config

    @classmethod
    def from_environ(cls) -> dict[str, Any]:
        """The game's variables set in the environment, for ``Worker(vars=...)``."""
        return {name: os.environ[name] for name in DEFAULTS if name in os.environ}

    @classmethod
    def of(cls, env: Any) -> GameConfig:
        """The configuration an object or route sees through ``env``."""
        return cls.from_vars({name: getattr(env, name) for name in DEFAULTS if hasattr(env, name)})


# -- errors ----------------------------------------------------------------------------------------
class GameError(Exception):
    """A refused game action; ``status`` and ``name`` become the HTTP answer."""

    status: ClassVar[int] = 400
    name: ClassVar[str] = "BadInput"


class BadInput(GameError):
    pass


class UnknownPlayer(GameError):
    status = 404
    name = "UnknownPlayer"

    def __init__(self, player: str) -> None:
        super().__init__(f"No player named {player!r}: POST /api/join first.")


class UnknownMiner(GameError):
    status = 404
    name = "UnknownMiner"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"No miner {task_id!r} belongs to this player.")


class InsufficientCopper(GameError):
    status = 409
    name = "InsufficientCopper"

    def __init__(self, copper: int, cost: int) -> None:
        super().__init__(f"A miner costs {cost} copper; you have {copper}.")


class TooManyMiners(GameError):
    status = 409
    name = "TooManyMiners"

    def __init__(self) -> None:
        super().__init__(f"At most {MAX_LIVE_MINERS} live miners per player; recall one first.")


class NotRunning(GameError):
    status = 409
    name = "NotRunning"

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"Miner {task_id!r} is {status}; only a running miner can be recalled.")


class BatchTooLarge(GameError):
    status = 429
    name = "BatchTooLarge"
    retry_after: float = 1.0

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} events in one batch; send at most {limit} per request.")


# -- names and tasks -------------------------------------------------------------------------
def check_name(value: Any, what: str) -> str:
    """``check_name("ann_1", "name")`` → ``"ann_1"``; anything else → ``BadInput``."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise BadInput(f"{what} must be 1 to 32 characters of A-Z a-z 0-9 _ -, not {value!r}.")
    return value


def check_task_id(value: str) -> str:
    if not TASK_ID.fullmatch(value):
        raise BadInput(f"{value!r} is not a miner id (<player>.<number>).")
    return value


def new_task(config: GameConfig, owner: str, mission: str, number: int, now_ms: int) -> Task:
    return {
        "id": f"{owner}.{number}",
        "owner": owner,
        "mission": mission,
        "status": LIVE,
        "cycles": 0,
        "max_cycles": config.max_cycles,
        "cycle_ms": config.cycle_ms,
        "last_cycle_at": now_ms,
        "next_cycle_at": now_ms + config.cycle_ms,
        "ore": 0,
    }


def mine(task: Task, now_ms: int) -> Task:
    """The task after one mining cycle at ``now_ms``: one more cycle, more ore, maybe completed."""
    cycles = task["cycles"] + 1
    done = cycles >= task["max_cycles"]
    return {
        **task,
        "cycles": cycles,
        "ore": task["ore"] + ORE_PER_CYCLE,
        "status": "completed" if done else LIVE,
        "last_cycle_at": now_ms,
        "next_cycle_at": now_ms if done else now_ms + task["cycle_ms"],
    }


def finish(task: Task, status: str, now_ms: int) -> Task:
    """The task stopped at ``now_ms`` as ``status`` (recalled or failed)."""
    return {**task, "status": status, "last_cycle_at": now_ms, "next_cycle_at": now_ms}


def expires_at(task: Task) -> int:
    """When a finished task is deleted: 24 h after completion or recall, 7 days after failure."""
    keep = KEEP_FAILED_MS if task["status"] == FAILED else KEEP_FINISHED_MS
    return int(task["last_cycle_at"]) + keep


# -- storage in batches ------------------------------------------------------------------------
async def get_all(storage: Any, keys: list[str]) -> dict[str, Any]:
    """``storage.get`` of any number of keys, in calls of at most ``KEYS_PER_CALL``."""
    found: dict[str, Any] = {}
    for start in range(0, len(keys), KEYS_PER_CALL):
        found.update(await storage.get(keys[start : start + KEYS_PER_CALL]))
    return found


async def put_all(storage: Any, entries: dict[str, Any]) -> None:
    """``storage.put`` of any number of entries; all in one turn, so they commit together."""
    items = list(entries.items())
    for start in range(0, len(items), KEYS_PER_CALL):
        await storage.put(dict(items[start : start + KEYS_PER_CALL]))


async def delete_all(storage: Any, keys: list[str]) -> None:
    for start in range(0, len(keys), KEYS_PER_CALL):
        await storage.delete(keys[start : start + KEYS_PER_CALL])


def newer(task: Task, than: Task | None) -> bool:
    """Whether ``task`` is a later state of the miner than ``than`` (deliveries may repeat)."""
    if than is None:
        return True
    return (task["cycles"], task["status"] != LIVE) > (than["cycles"], than["status"] != LIVE)
