"""Finding 12: the game's Prometheus series (``examples/mission_game/telemetry.py``).

The counters are per process (``telemetry.GAME``), so each test compares before and after.
Broadcast counts are checked with real sockets in ``test_sockets.py``.
"""

from __future__ import annotations

from pathlib import Path

from tests.mission_game.conftest import Game, open_game


async def scrape(game: Game) -> dict[str, float]:
    """The game's series as the gateway's ``/metrics`` serves them (``worker.metrics``)."""
    response = await game.client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_cycles_failures_and_shard_load_are_exported(tmp_path: Path) -> None:
    async with open_game(tmp_path, MAX_CYCLES=2, SHARDS=1) as game:
        before = await scrape(game)
        await game.join("ann")
        await game.join("bob")
        for name in ("ann", "ann", "bob"):
            assert (await game.deploy(name)).status_code == 200
        assert (await scrape(game))['mission_shard_running_miners{shard="scheduler-0"}'] == 3
        bob = game.host.activate(game.env.PLAYER.get_by_name("bob").id)
        await bob.storage.delete_all()
        await game.advance(2.5)
        after = await scrape(game)
    assert (
        after["mission_task_cycle_seconds_count"]
        - before.get("mission_task_cycle_seconds_count", 0)
        == 2 * 2
    )  # ann's two miners twice; bob's failed at its first delivery, before a cycle
    assert after["mission_task_failures_total"] - before["mission_task_failures_total"] == 1
    assert after['mission_shard_running_miners{shard="scheduler-0"}'] == 0
    assert after["mission_task_lateness_seconds_count"] == after["mission_task_cycle_seconds_count"]
