"""One test per finding of the architecture review (seed ``mission-game-architecture-review``).

Where the finding is a bug of the reviewed design, the test runs on both designs and is expected
to fail (strictly) on ``original``. Findings 2 and 4 need sockets and a browser: see
``test_sockets.py`` and ``test_browser.py``; finding 12's series: ``test_metrics.py``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from durable.gates import current_activation
from durable.storage import Storage
from examples.mission_game import original, player, room, scheduler
from examples.mission_game.global_state import GlobalState
from examples.mission_game.rules import KEEP_FAILED_MS, KEEP_FINISHED_MS, ORE_PER_CYCLE
from tests.mission_game.conftest import Game, open_game, original_fails

HOUR = 3600.0


async def deploy_all(game: Game, players: list[str], miners: int) -> list[dict[str, Any]]:
    tasks = []
    for name in players:
        await game.join(name)
        for _ in range(miners):
            response = await game.deploy(name)
            assert response.status_code == 200, response.text
            tasks.append(response.json()["task"])
    return tasks


# -- 1. single object bottleneck ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("design", "strategy"),
    [
        ("sharded", "hash"),
        ("sharded", "namespace"),
        pytest.param("original", "hash", marks=pytest.mark.xfail(strict=True, reason="one object")),
    ],
)
async def test_miners_are_spread_over_scheduler_shards(
    tmp_path: Path, design: str, strategy: str
) -> None:
    async with open_game(tmp_path, design, STRATEGY=strategy, SHARDS=8) as game:
        for mission in ("alpha", "beta"):
            for i in range(3):
                await game.join(f"{mission}{i}", mission)
                for _ in range(3):
                    assert (await game.deploy(f"{mission}{i}")).status_code == 200
        shards = game.active("SCHEDULER")
        assert len(shards) >= 2, shards
        if strategy == "namespace":
            assert sorted(shards) == ["SCHEDULER:scheduler-alpha", "SCHEDULER:scheduler-beta"]


# -- 3. no timers in objects: everything hibernates -----------------------------------------------
@pytest.mark.parametrize("design", ["sharded", original_fails("asyncio.sleep keeps it awake")])
async def test_objects_hibernate_between_cycles_and_after_miners_retire(
    tmp_path: Path, design: str
) -> None:
    """1.5 s cycles, 0.3 s idle timeout: at 2.2 s the first cycle (1.5 s) is over and the second
    (3 s) not due, so nothing may be awake; once every miner retired, no object stays live."""
    async with open_game(tmp_path, design, CYCLE_MS=1500, MAX_CYCLES=2, idle_timeout=0.3) as game:
        await deploy_all(game, ["ann", "bob"], 2)
        await game.advance(2.2)
        assert game.active("SCHEDULER") == []
        await game.advance(3.0)
        assert all(t["status"] == "completed" for t in (await game.player("ann"))["miners"])
        await game.advance(1.0)
        assert game.active() == []
        assert game.host.statistics().evictions > 0


# -- 5. plain async/await ------------------------------------------------------------------------------
TIMERS = {"sleep", "create_task", "ensure_future", "call_later", "call_at", "wait_until"}


def timer_calls(module: Any) -> list[str]:
    tree = ast.parse(inspect.getsource(module))
    return [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr in TIMERS]  # fmt: skip


@pytest.mark.parametrize(
    "modules",
    [
        pytest.param((scheduler, player, room), id="sharded"),
        pytest.param(
            (original,), id="original", marks=pytest.mark.xfail(strict=True, reason="sleep")
        ),
    ],
)
def test_game_logic_is_plain_async_await_without_timers(modules: tuple[Any, ...]) -> None:
    for module in modules:
        assert timer_calls(module) == [], module.__name__
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                for name, fn in vars(cls).items():
                    if inspect.isfunction(fn) and not name.startswith("_") and name != "name_for":
                        assert inspect.iscoroutinefunction(fn), f"{cls.__name__}.{name}"


# -- 6. progress from the server's cycle count and time ------------------------------------------------
async def test_tasks_carry_the_server_cycle_count_and_time(tmp_path: Path) -> None:
    async with open_game(tmp_path) as game:
        assert game.clock is not None
        (task,) = await deploy_all(game, ["ann"], 1)
        deployed_at = int(game.clock.now() * 1000)
        assert (task["cycles"], task["last_cycle_at"]) == (0, deployed_at)
        assert task["next_cycle_at"] == deployed_at + task["cycle_ms"]
        await game.advance(2.5)
        (seen,) = (await game.player("ann"))["miners"]
        assert seen["cycles"] == 2
        assert seen["last_cycle_at"] == deployed_at + 2 * task["cycle_ms"]
        assert seen["next_cycle_at"] == seen["last_cycle_at"] + task["cycle_ms"]
        assert seen["ore"] == 2 * ORE_PER_CYCLE


# -- 7. one checkpoint write per cycle ---------------------------------------------------------------
@pytest.mark.parametrize("design", ["sharded", original_fails("two checkpoints per cycle")])
async def test_a_cycle_writes_its_task_once(
    tmp_path: Path, design: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    put = Storage.put

    async def counting_put(self: Storage, key: Any, *value: Any) -> None:
        keys = key if isinstance(key, dict) else [key]
        activation = current_activation.get()
        if activation is not None and activation.oid.namespace == "SCHEDULER":
            writes.extend(k for k in keys if k == "task:ann.1")
        await put(self, key, *value)

    monkeypatch.setattr(Storage, "put", counting_put)
    async with open_game(tmp_path, design) as game:
        await deploy_all(game, ["ann"], 1)
        await game.advance(3.5 if game.clock is not None else 0.6)
        (task,) = (await game.player("ann"))["miners"]
        assert task["status"] == "completed"
        assert len(writes) == 1 + task["cycles"]  # created, then one checkpoint per cycle


# -- 8. server-side cost and rate limits ----------------------------------------------------------------
@pytest.mark.parametrize("design", ["sharded", original_fails("no rate limit")])
async def test_deploys_past_ten_a_minute_get_429_with_retry_after(
    tmp_path: Path, design: str
) -> None:
    async with open_game(tmp_path, design, STARTING_COPPER=1000, MAX_CYCLES=1000) as game:
        await game.join("ann")
        assert [(await game.deploy("ann")).status_code for _ in range(10)] == [200] * 10
        refused = await game.deploy("ann")
        assert refused.status_code == 429
        assert refused.json()["error"] == "RateLimited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await game.player("ann"))["copper"] == 1000 - 10 * 10


async def test_cost_is_checked_on_the_server(tmp_path: Path) -> None:
    async with open_game(tmp_path, STARTING_COPPER=15) as game:
        await game.join("ann")
        assert (await game.deploy("ann")).status_code == 200
        refused = await game.deploy("ann")
        assert refused.status_code == 409
        assert refused.json() == {"error": "InsufficientCopper",
                                  "message": "A miner costs 10 copper; you have 5."}  # fmt: skip
        assert len((await game.player("ann"))["miners"]) == 1


# -- 9. cleanup ------------------------------------------------------------------------------------------
async def test_finished_tasks_go_after_24_hours_and_failed_after_7_days(tmp_path: Path) -> None:
    async with open_game(tmp_path, MAX_CYCLES=1) as game:
        assert game.clock is not None
        done, doomed = await deploy_all(game, ["ann", "bob"], 1)
        bob = game.host.activate(game.env.PLAYER.get_by_name("bob").id)
        await bob.storage.delete_all()  # bob's player is lost: his miner fails on its first cycle
        await game.advance(1.5)
        tasks = {
            t["id"]: t for t in (await game.client.get("/api/missions/alpha/tasks")).json()["tasks"]
        }
        assert (tasks[done["id"]]["status"], tasks[doomed["id"]]["status"]) == (
            "completed",
            "failed",
        )
        await game.advance(KEEP_FINISHED_MS / 1000 - 2)
        assert len(await mission_tasks(game)) == 2
        await game.advance(3)
        assert [t["id"] for t in await mission_tasks(game)] == [doomed["id"]]
        assert (await game.player("ann"))["miners"] == []
        await game.advance((KEEP_FAILED_MS - KEEP_FINISHED_MS) / 1000 - 3)
        assert [t["id"] for t in await mission_tasks(game)] == [doomed["id"]]
        await game.advance(3)
        assert await mission_tasks(game) == []
        for name in scheduler_names(game):
            load = await game.env.SCHEDULER.get_by_name(name).load()
            assert load == {"running": 0, "outbox": 0, "unpooled": 0}


async def mission_tasks(game: Game) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = (await game.client.get("/api/missions/alpha/tasks")).json()[
        "tasks"
    ]
    return tasks


def scheduler_names(game: Game) -> list[str]:
    return [name.partition(":")[2] for name in game.active("SCHEDULER")]


# -- 10. no double spending --------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["sharded", original_fails("check and deduct are apart")])
async def test_fifty_concurrent_deploys_with_copper_for_three_start_exactly_three(
    tmp_path: Path, design: str
) -> None:
    async with open_game(tmp_path, design, STARTING_COPPER=30, MAX_CYCLES=1000) as game:
        await game.join("ann")
        responses = await asyncio.gather(*(game.deploy("ann") for _ in range(50)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 3, statuses
        assert set(statuses) <= {200, 409, 429}
        ann = await game.player("ann")
        assert (ann["copper"], len(ann["miners"])) == (0, 3)


# -- 11. global state lost mid-run ---------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["sharded", original_fails("all miners break")])
async def test_global_pool_lost_mid_run_is_rebuilt_and_no_deposit_is_lost(
    tmp_path: Path, design: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_game(tmp_path, design, MAX_CYCLES=6) as game:
        tasks = await deploy_all(game, ["ann", "bob", "cy"], 3)
        step = 1.0 if game.clock is not None else 0.1
        await game.advance(2 * step + step / 2)
        first = (await game.client.get("/api/global")).json()
        assert first["ore"] > 0

        async def down(self: Any, shard: str, mined_total: int) -> int:
            raise ConnectionError("global-state is down")

        monkeypatch.setattr(GlobalState, "deposit", down)
        await game.advance(2 * step)
        if design == "sharded":
            loads = [await game.env.SCHEDULER.get_by_name(n).load() for n in scheduler_names(game)]
            assert any(load["running"] for load in loads)  # miners kept mining meanwhile
            assert sum(load["unpooled"] for load in loads) > 0  # their deposits wait in the shards
        await wipe_global(game)
        monkeypatch.undo()
        await game.advance(3 * step + (1 if game.clock is not None else 0.3))
        mined = sum(
            t["ore"] for t in (await game.client.get("/api/missions/alpha/tasks")).json()["tasks"]
        )
        assert mined == len(tasks) * 6 * ORE_PER_CYCLE
        pool = (await game.client.get("/api/global")).json()
        assert pool["ore"] == mined
        assert pool.get("created_at") != first.get("created_at")  # a new pool, rebuilt whole


async def wipe_global(game: Game) -> None:
    if game.design == "sharded":
        pool = game.host.activate(game.env.GLOBAL.get_by_name("global-state").id)
        await pool.storage.delete_all()
    else:
        scheduler_object = game.host.activate(game.env.SCHEDULER.get_by_name("scheduler").id)
        await scheduler_object.storage.delete("global-state")
