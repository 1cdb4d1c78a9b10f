"""Issue 16, unplanned node loss: an operator brings a lost node's partitions back on another
node from the latest backup (``durable restore BACKUP DATA_DIR --partition N --rehome``).

A simulated two-node Ray cluster (one slot and one data dir per node). Objects of every
partition are incremented, node B's data dir is backed up while it serves (``durable backup``),
and B's objects are incremented once more: that write is after the backup. Node B is lost. For
each of its partitions, the command (run while node A serves) restores the partition into A's
data dir and makes A its home: B's objects then serve from A with their backed-up values (the
write after the backup is lost, as a restore from a backup loses it), A's own objects were
never touched. When node B returns with its stale copies, its slot is given none of them.

``ray.cluster_utils.Cluster`` needs its own Ray, so the scenario runs in a subprocess
(``python -m tests.ray.test_rehome_on_ray OUT_DIR``), as in ``test_homes_on_ray.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

import durable
from durable.backup import backup
from durable.cli import app
from tests.ray.apps import worker
from tests.ray.harness import wait_until
from tests.ray.simulated import RayNodes, Slots, main, run_scenario
from tests.ray.test_homes_on_ray import NODES

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_scenario("tests.ray.test_rehome_on_ray", tmp_path_factory.mktemp("rehome"))


def test_a_served_partition_is_refused_before_any_file_is_written(run: dict[str, Any]) -> None:
    exit_code, output, written = run["refused_while_served"]
    assert exit_code == 2 and "is served on its home node" in output
    assert not written  # the partition's folder was not created in A's data dir


def test_every_lost_partition_is_rehomed_by_the_command(run: dict[str, Any]) -> None:
    assert run["lost"] and sorted(run["rehomed"]) == sorted(str(p) for p in run["lost"])
    for partition, output in run["rehomed"].items():
        assert f"partition {partition} now lives on node" in output, output
    assert run["owned_after"] == [list(range(PARTITIONS))]


def test_rehomed_objects_serve_their_backed_up_values(run: dict[str, Any]) -> None:
    assert run["on_b"] and run["after"]["b"] == run["backed_up"]  # not the write after it
    assert run["after"]["a"] == run["before_loss"]["a"]  # A's own objects untouched


def test_the_returning_node_gets_none_of_its_stale_partitions(run: dict[str, Any]) -> None:
    assert run["owned_on_return"][1] == []
    assert run["after_return"] == run["after"]


# -- the scenario (subprocess) -------------------------------------------------------------------


async def scenario(nodes: RayNodes, out: Path) -> dict[str, Any]:
    slots = Slots(out, NODES, PARTITIONS)
    names = [f"o{i}" for i in range(4 * PARTITIONS)]
    try:
        owned = await wait_until(lambda: placed(slots), 60, "both slots to serve partitions")
        lost = owned[1]
        async with durable.connect(worker, address="auto") as env:
            on_b = [n for n in names if env.TALLY.id_from_name(n).partition(PARTITIONS) in lost]
            for name in names:
                await env.TALLY.get_by_name(name).increment()
            backed_up = {n: await env.TALLY.get_by_name(n).value() for n in on_b}
            await asyncio.to_thread(backup, out / NODES[1], out / "backup-b")
            for name in on_b:
                await env.TALLY.get_by_name(name).increment()  # after the backup: lost
            before_loss = await values(env, names)
        target = out / NODES[0]
        refused = await asyncio.to_thread(rehome, out / "backup-b", target, lost[0])
        written = (target / "partitions" / f"{lost[0]:04d}").exists()

        nodes.remove(NODES[1])
        rehomed = {p: await retried_rehome(out / "backup-b", target, p) for p in lost}
        owned_after = [await wait_until(lambda: all_on_a(slots), 60, "A to serve every partition")]
        async with durable.connect(worker, address="auto") as env:
            after = await values(env, names)

        nodes.add(NODES[1])  # B returns with its stale copies
        await wait_until(lambda: registered_again(slots), 90, "B's slot to register again")
        owned_on_return = await slots.owned()
        async with durable.connect(worker, address="auto") as env:
            after_return = await values(env, names)
        split = {"a": [n for n in names if n not in on_b], "b": on_b}
        return {
            "lost": lost,
            "on_b": on_b,
            "refused_while_served": [*refused, written],
            "rehomed": {str(p): output for p, output in rehomed.items()},
            "owned_after": owned_after,
            "backed_up": backed_up,
            "before_loss": {k: {n: before_loss[n] for n in ns} for k, ns in split.items()},
            "after": {k: {n: after[n] for n in ns} for k, ns in split.items()},
            "owned_on_return": owned_on_return,
            "after_return": {k: {n: after_return[n] for n in ns} for k, ns in split.items()},
        }
    finally:
        await slots.stop()


async def placed(slots: Slots) -> list[list[int]] | None:
    """Per slot, its partitions, once every partition is served and both slots serve some."""
    now = await slots.owned()
    every = sorted(p for s in now for p in s) == list(range(PARTITIONS))
    return now if every and all(now) else None


async def all_on_a(slots: Slots) -> list[int] | None:
    """Node A's partitions once it serves all (B's slot is not asked: its node is gone)."""
    owned = sorted(int(p) for p in (await slots.hosts[0].ready.remote())["owned"])
    return owned if owned == list(range(PARTITIONS)) else None


async def registered_again(slots: Slots) -> bool:
    try:
        return bool(await slots.hosts[1].ready.remote())
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError):
        return False  # still restarting


async def values(env: Any, names: list[str]) -> dict[str, int]:
    return {n: await env.TALLY.get_by_name(n).value() for n in names}


def rehome(backup_dir: Path, data_dir: Path, partition: int) -> tuple[int, str]:
    """``durable restore ... --partition N --rehome`` in this process (already a Ray driver)."""
    args = ["restore", str(backup_dir), str(data_dir), "--partition", str(partition), "--rehome"]
    done = CliRunner().invoke(app, args)
    return done.exit_code, done.output[-400:]


async def retried_rehome(backup_dir: Path, data_dir: Path, partition: int) -> str:
    """The command's output once it succeeded: refused while node B's slot still counts as
    live or its lease has not lapsed (for a lease TTL after the loss)."""

    async def attempt() -> str | None:
        code, output = await asyncio.to_thread(rehome, backup_dir, data_dir, partition)
        assert code == 0 or "is served on its home node" in output or "lease" in output, output
        return output if code == 0 else None

    output: str = await wait_until(attempt, 60, f"partition {partition} to be rehomed")
    return output


if __name__ == "__main__":
    main(scenario, NODES)
