"""Directory: leases with growing epochs, rendezvous placement, reassign, and partition homes
(a partition is granted only on the node holding its files; a slot refuses one that is not).
Planned moves across nodes: ``tests/test_moves.py``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from durable.channel import Frame, NotOwner
from durable.directory import Directory, home_of
from durable.ray_host import HostSlot
from tests.ray.harness import make_config


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def epochs(grants: dict[int, tuple[int, str]]) -> dict[int, int]:
    return {p: epoch for p, (epoch, _) in grants.items()}


def test_every_grant_takes_a_higher_epoch_and_a_restart_re_grants() -> None:
    d = Directory(4, ttl=10.0, now=Ticks())
    first = d.register(0, "unix:a", "n1")
    assert sorted(first) == [0, 1, 2, 3] and set(epochs(first).values()) == {1}
    again = d.register(0, "unix:a2", "n1")  # the slot restarted: its old leases are void
    assert set(epochs(again).values()) == {2} and d.complete()


def test_reassign_moves_a_partition_to_the_chosen_live_slot_only_after_its_lease_lapses() -> None:
    clock = Ticks()
    d = Directory(8, ttl=10.0, now=clock)
    d.register(0, "unix:a", "n1")
    d.register(1, "unix:b", "n1")
    clock.t = 11.0  # slot 0's first leases lapse; both slots renew and settle
    owned = {s: d.renew(s) for s in (0, 1)} | {s: d.renew(s) for s in (0, 1)}
    p = min(owned[0])
    old_epoch = owned[0][p][0]
    d.reassign(p, 1)
    assert p not in d.renew(0)  # slot 0 gives it up at its next renewal
    grants = d.renew(1)
    assert grants[p][0] > old_epoch and d.table()[p] == (grants[p][0], "unix:b")


# -- homes ------------------------------------------------------------------------------------


def two_nodes(clock: Ticks, partitions: int = 8) -> Directory:
    """Slot 0 on node n1 creates every partition, then slots 1 (n1) and 2 (n2) join."""
    d = Directory(partitions, ttl=10.0, now=clock)
    d.register(0, "unix:a", "n1")
    d.register(1, "unix:b", "n1")
    d.register(2, "tcp:c", "n2")
    return d


def settle(d: Directory, clock: Ticks, slots: tuple[int, ...]) -> dict[int, dict[int, Any]]:
    """Only ``slots`` renew, every half TTL, for long enough that leases given up have lapsed
    and been granted to their winners: each slot's grants then."""
    for _ in range(8):
        clock.t += d.ttl / 2
        owned = {s: d.renew(s) for s in slots}
    return owned


def test_the_first_grant_records_the_home_and_every_grant_carries_it() -> None:
    d = Directory(4, ttl=10.0, now=Ticks())
    grants = d.register(0, "unix:a", "n1")
    assert d.homes == {p: "n1" for p in range(4)}
    assert {home for _, home in grants.values()} == {"n1"}


def test_a_partition_with_a_home_goes_only_to_slots_on_its_home_node() -> None:
    clock = Ticks()
    d = two_nodes(clock)
    owned = settle(d, clock, (0, 1, 2))
    assert owned[2] == {}  # n2 joined after every partition was created on n1
    assert sorted([*owned[0], *owned[1]]) == list(range(8)) and owned[0] and owned[1]
    assert all(home == "n1" for slot in (0, 1) for _, home in owned[slot].values())


def test_a_partition_never_created_may_start_on_any_node() -> None:
    d = Directory(4, ttl=10.0, now=Ticks(), homes={0: "n1", 1: "n1", 2: "n1"})
    assert epochs(d.register(2, "tcp:c", "n2")) == {3: 1}  # only 3 was never created
    assert d.homes[3] == "n2"
    assert sorted(d.register(0, "unix:a", "n1")) == [0, 1, 2]
    assert d.complete()


def test_partitions_of_a_node_without_a_live_slot_stay_unleased_while_others_are_granted() -> None:
    clock = Ticks()
    on_n2 = {p for p in range(16) if p % 2}
    d = Directory(
        16, ttl=10.0, now=clock, homes={p: "n2" if p in on_n2 else "n1" for p in range(16)}
    )
    d.register(0, "unix:a", "n1")
    d.register(2, "tcp:c", "n2")
    assert set(d.table()) == set(range(16))
    owned = settle(d, clock, (0,))  # n2's only slot is gone: it renews no more
    assert set(owned[0]) == set(range(16)) - on_n2  # n1 never takes n2's partitions
    assert set(d.table()) == set(range(16)) - on_n2
    assert sorted(d.unplaceable()) == sorted(on_n2)
    assert d.complete()  # a node that is down does not keep slots from starting
    d.register(2, "tcp:c2", "n2")  # it returns (same disk, same home-id): its partitions too
    assert set(d.table()) == set(range(16))


def test_complete_waits_for_partitions_whose_home_has_a_live_slot() -> None:
    d = Directory(8, ttl=10.0, now=Ticks())
    d.register(0, "unix:a", "n1")
    d.expire(3)  # e.g. its slot restarts: n1 has a live slot, so 3 must be leased again
    assert not d.complete() and d.unplaceable() == []
    d.renew(0)
    assert d.complete()


def test_homes_survive_a_directory_restart_through_the_persisted_state() -> None:
    clock = Ticks()
    kv: dict[str, bytes] = {}  # what DirectoryActor keeps in the GCS KV store, as JSON
    d = Directory(8, ttl=10.0, now=clock)
    d.on_epoch = lambda p, e: kv.update(epochs=json.dumps(d.epochs).encode())
    d.on_home = lambda p, n: kv.update(homes=json.dumps(d.homes).encode())
    d.register(0, "unix:a", "n1")

    def load(name: str) -> dict[int, Any]:
        return {int(k): v for k, v in json.loads(kv[name]).items()}

    restarted = Directory(8, ttl=10.0, now=clock, epochs=load("epochs"), homes=load("homes"))
    assert restarted.register(2, "tcp:c", "n2") == {}  # a slot of n2 registers first: nothing
    grants = restarted.register(0, "unix:a", "n1")
    assert sorted(grants) == list(range(8)) and set(epochs(grants).values()) == {2}


def test_reassign_to_a_slot_on_another_node_plans_a_move_and_changes_no_home() -> None:
    clock = Ticks()
    d = two_nodes(clock)
    d.reassign(0, 2)  # the files must be copied first (durable.moves): only planned
    assert d.planned[0] == 2 and d.homes[0] == "n1" and 0 not in d.pins
    with pytest.raises(ValueError, match="not registered"):
        d.reassign(0, 9)
    d.reassign(0, 1)  # same node: allowed
    assert 0 in settle(d, clock, (0, 1, 2))[1]


def test_home_of_is_written_once_and_stays_with_the_data_dir(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert home_of(a) == home_of(a) != home_of(b)
    assert sorted(p.name for p in a.iterdir()) == ["home-id"]  # no draft left behind


# -- the slot refuses a partition that lives on another node -----------------------------------


class FakeHost:
    """Records which partitions the slot opens."""

    def __init__(self) -> None:
        self.opened: list[int] = []

    def add_partition(self, partition: int) -> None:
        self.opened.append(partition)

    def remove_partition(self, partition: int) -> None:
        self.opened.remove(partition)


class FakeDirectory:
    class release:  # shaped like a Ray actor method: ``release.remote(...)``
        @staticmethod
        def remote(slot: int, partitions: list[int]) -> None:
            pass


async def test_a_slot_never_opens_a_partition_whose_home_is_another_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Node n1 created partition 1 and holds its data; this slot's data dir is another disk.
    elsewhere = home_of(tmp_path / "node-1")
    slot = HostSlot(0, make_config(tmp_path / "node-2"), FakeDirectory())
    host = FakeHost()
    slot.host = host  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="durable.ray_host"):
        slot._apply({0: (1, slot.node), 1: (4, elsewhere)}, asked_at=0.0)
    assert host.opened == [0] and slot.owned == {0: 1}
    assert "partition 1 lives on node" in caplog.text
    with pytest.raises(NotOwner):  # a call for it is never run here
        await slot._handle([Frame.CALL, 1, 1, 4, "NS", b"\0" * 32, None, "m", b""])


def test_new_partitions_wait_for_every_slot_to_register_but_not_forever() -> None:
    clock = Ticks()
    d = Directory(16, ttl=10.0, now=clock, expected=2)
    assert d.register(0, "unix:a", "n1") == {} and not d.complete()
    d.register(1, "tcp:b", "n2")  # both started: the partitions spread over both nodes
    owned = {s: d.renew(s) for s in (0, 1)}
    assert owned[0] and owned[1] and set(d.homes.values()) == {"n1", "n2"} and d.complete()

    late = Directory(4, ttl=10.0, now=clock, expected=2)
    assert late.register(0, "unix:a", "n1") == {}
    clock.t += 29.0
    assert late.renew(0) == {}
    clock.t += 2.0  # START_GRACE TTLs on, the other slot never came: the first creates them all
    assert sorted(late.renew(0)) == [0, 1, 2, 3]


def lost_n2(clock: Ticks) -> Directory:
    """Partitions 0-3 homed on n1 (slot 0), 4-7 on n2 (slot 2), whose node is then lost."""
    homes = {p: "n1" if p < 4 else "n2" for p in range(8)}
    d = Directory(8, ttl=10.0, now=clock, homes=homes)
    d.register(0, "unix:a", "n1")
    d.register(2, "tcp:c", "n2")
    settle(d, clock, (0,))
    return d


def test_rehome_gives_a_lost_node_s_partition_to_a_live_node_with_a_new_epoch() -> None:
    clock = Ticks()
    d = lost_n2(clock)
    before = d.epochs[5]
    persisted: list[tuple[int, str]] = []
    d.on_home = lambda partition, node: persisted.append((partition, node))
    d.rehome(5, "n1")
    assert persisted == [(5, "n1")] and d.homes[5] == "n1"
    grants = d.renew(0)
    assert grants[5] == (before + 1, "n1")  # a new epoch fences any stale holder
    assert 5 not in d.unplaceable() and 4 in d.unplaceable()
    d.register(2, "tcp:c2", "n2")  # n2 returns with its stale copy: it never gets 5 back
    assert 5 not in settle(d, clock, (0, 2))[2]


@pytest.mark.parametrize(
    ("partition", "node", "refusal"),
    [
        (1, "n2", "is served on its home node n1"),  # its home lives: a move, not a restore
        (6, "n3", "node n3 has no live slot"),
        (9, "n1", "partition 9 does not exist"),
    ],
)
def test_rehome_is_refused_with_the_reason_and_changes_nothing(
    partition: int, node: str, refusal: str
) -> None:
    d = lost_n2(Ticks())
    homes = dict(d.homes)
    with pytest.raises(ValueError, match=refusal):
        d.rehome(partition, node)
    assert d.homes == homes


def test_rehome_waits_for_the_lost_node_s_lease_to_lapse_and_check_changes_nothing() -> None:
    clock = Ticks()
    homes = {p: "n1" if p < 4 else "n2" for p in range(8)}
    d = Directory(8, ttl=10.0, now=clock, homes=homes)
    d.register(0, "unix:a", "n1")
    d.register(2, "tcp:c", "n2")
    clock.t += 11.0  # n2 renews no more; its slot is no longer live, its leases just lapsed
    d.renew(0)
    d.leases[5].expires = clock.t + 3  # as if n2 had renewed just before it vanished
    with pytest.raises(ValueError, match="has a lease for 3 s more"):
        d.rehome(5, "n1")
    clock.t += 4
    d.rehome(5, "n1", check=True)
    assert d.homes[5] == "n2"
    d.rehome(5, "n1")
    assert d.homes[5] == "n1"


# -- handover before a restart (durable.rollout) ---------------------------------------------


def test_hand_over_gives_a_slot_s_partitions_to_the_other_slots_of_its_node_until_reassigned() -> (
    None
):
    clock = Ticks()
    d = Directory(8, ttl=10.0, now=clock, expected=3)
    for slot, node in ((0, "n1"), (1, "n1"), (2, "n2")):
        d.register(slot, f"unix:{slot}", node)
    held = {s: set(d.renew(s)) for s in (0, 1, 2)}
    handed = d.hand_over(0)
    assert set(handed) == held[0] and set(handed.values()) == {1}  # n2's slot takes none
    clock.t += 1.0
    assert d.renew(0) == {}  # it lets them go at its next renewal, and wins none back
    assert set(d.renew(1)) == held[0] | held[1] and set(d.renew(2)) == held[2]
    for partition in handed:
        d.reassign(partition, 0)  # back once it serves again
    clock.t += 1.0
    d.renew(1)
    assert set(d.renew(0)) == held[0]


def test_hand_over_needs_another_live_slot_on_the_node() -> None:
    d = Directory(4, ttl=10.0, now=Ticks(), expected=2)
    d.register(0, "unix:a", "n1")
    d.register(1, "unix:b", "n2")
    with pytest.raises(ValueError, match="slot 0 has no other live slot on its node"):
        d.hand_over(0)
