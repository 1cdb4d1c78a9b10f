"""Rolling restarts (``durable.rollout``) without Ray: the way each slot is emptied, and the
rollout's steps run against a real ``Directory`` whose slots renew whenever anything is asked.
On a simulated Ray cluster under load: ``tests/ray/test_restarts_on_ray.py``."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from durable import rollout
from durable.directory import Directory, rendezvous
from durable.rollout import Way, restart, way_out
from tests.test_moves import ActorLike


def test_a_slot_empties_into_its_own_node_first_then_onto_other_nodes_else_it_is_alone() -> None:
    nodes = {0: "a", 1: "a", 2: "b"}
    assert [way_out(slot, nodes) for slot in nodes] == [Way.HANDOVER, Way.HANDOVER, Way.MOVE]
    assert way_out(0, {0: "a"}) is Way.ALONE


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Slots:
    """A directory and host slots standing in for a cluster: each question asked moves the clock
    a renewal period on, and every running slot renews and runs the moves handed to it."""

    def __init__(self, nodes: dict[int, str], comes_back: bool = True) -> None:
        self.clock = Ticks()
        self.d = Directory(8, ttl=3.0, now=self.clock, expected=len(nodes))
        self.pids = {slot: 100 + slot for slot in nodes}
        self.running = set(nodes)
        self.comes_back = comes_back
        self.stopped_owning: dict[int, list[int]] = {}  # slot -> what it served when stopped
        for slot, node in nodes.items():
            self.d.register(slot, f"node=ray-{node};unix=/{slot};tcp=10.0.0.{slot}:1", node)
        self.tick()

    def tick(self) -> None:
        self.clock.t += self.d.ttl / 3
        for slot in sorted(self.running):
            self.d.renew(slot)
            order = self.d.next_move(slot)
            if order is not None:
                self.d.finish_move(order[0], order[1])

    def owned(self, slot: int) -> list[int]:
        now = self.clock()
        return sorted(p for p, lease in self.d.leases.items() if (lease.slot, True) == (
            slot, lease.expires >= now))  # fmt: skip

    # -- the directory actor's methods the rollout calls
    def nodes(self) -> dict[int, tuple[str, str]]:
        return {s: (n, self.d.slots[s]) for s, n in self.d.nodes.items()}

    def move_status(self) -> dict[str, Any]:
        self.tick()
        return self.d.move_status()

    def status(self) -> dict[str, Any]:
        return {"complete": self.d.complete()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.d, name)  # hand_over, drain, reassign, rebalance

    # -- each slot's actor, and Ray restarting it
    def actor(self, slot: int) -> ActorLike:
        slots = self

        class Slot:
            def ready(self) -> dict[str, Any]:
                slots.tick()
                running = slot in slots.running
                return {"owned": slots.owned(slot), "pid": slots.pids[slot], "healthy": running}

            def stop(self) -> None:
                slots.stopped_owning[slot] = slots.owned(slot)
                slots.running.discard(slot)

        return ActorLike(Slot())

    def kill(self, actor: ActorLike) -> None:
        slot = next(s for s in self.pids if s not in self.running)
        if self.comes_back:
            self.pids[slot] += 1000
            self.d.register(slot, self.d.slots[slot], self.d.nodes[slot])
            self.running.add(slot)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL", 0.0)


def rolling(slots: Slots, **options: Any) -> Any:
    return restart(ActorLike(slots), actor_of=slots.actor, kill=slots.kill, **options)


async def test_every_slot_restarts_in_turn_empty_and_gets_its_partitions_back() -> None:
    slots = Slots({0: "a", 1: "a", 2: "b"})
    before = {slot: slots.owned(slot) for slot in range(3)}
    assert before == {s: [p for p in range(8) if rendezvous(p, [0, 1, 2]) == s] for s in range(3)}
    done = await rolling(slots)
    assert done.restarted == [0, 1, 2] and done.failed == {} and set(done.seconds) == {0, 1, 2}
    assert slots.stopped_owning == {0: [], 1: [], 2: []}  # each was empty when it stopped
    assert slots.pids == {0: 1100, 1: 1101, 2: 1102}
    assert {slot: slots.owned(slot) for slot in range(3)} == before
    assert slots.d.move_status()["moved"] != []  # slot 2's partitions went to A and back


async def test_a_slot_alone_is_refused_unless_forced_then_restarted_full() -> None:
    with pytest.raises(ValueError, match=r"slot 0 is the only slot of the cluster.*--force"):
        await rolling(Slots({0: "a"}))
    slots = Slots({0: "a"})
    done = await rolling(slots, force=True)
    assert done.restarted == [0] and slots.stopped_owning == {0: list(range(8))}
    assert slots.owned(0) == list(range(8))


async def test_a_slot_that_does_not_come_back_ends_the_rollout_there() -> None:
    slots = Slots({0: "a", 1: "a", 2: "b"}, comes_back=False)
    done = await rolling(slots, timeout=0.5)
    assert done.restarted == [] and done.failed == {0: "timed out waiting for it to serve again"}
    assert slots.running == {1, 2}  # the others were not touched


def test_durable_restart_exits_0_when_every_slot_serves_again_1_if_one_did_not_2_if_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from durable import cli

    runner = CliRunner()
    for nodes, comes_back, timeout, code, said in (
        ({0: "a", 1: "b"}, True, "30", 0, "slot 1 restarted in"),
        ({0: "a", 1: "b"}, False, "1", 1, "slot 0 not restarted: timed out"),
        ({0: "a"}, True, "30", 2, "is the only slot of the cluster"),
    ):
        slots = Slots(nodes, comes_back)
        fake = partial(restart, actor_of=slots.actor, kill=slots.kill)
        monkeypatch.setattr(cli, "rolling_restart", fake)
        monkeypatch.setattr(cli, "_directory_at", lambda address, s=slots: ActorLike(s))
        done = runner.invoke(cli.app, ["restart", "--timeout", timeout])
        assert done.exit_code == code and said in done.output, done.output
