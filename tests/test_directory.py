"""Directory: leases with growing epochs, rendezvous placement, and reassign."""

from __future__ import annotations

from durable.directory import Directory


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_every_grant_takes_a_higher_epoch_and_a_restart_re_grants() -> None:
    d = Directory(4, ttl=10.0, now=Ticks())
    first = d.register(0, "unix:a")
    assert sorted(first) == [0, 1, 2, 3] and set(first.values()) == {1}
    again = d.register(0, "unix:a2")  # the slot restarted: its old leases are void
    assert set(again.values()) == {2} and d.complete()


def test_reassign_moves_a_partition_to_the_chosen_live_slot_only_after_its_lease_lapses() -> None:
    clock = Ticks()
    d = Directory(8, ttl=10.0, now=clock)
    d.register(0, "unix:a")
    d.register(1, "unix:b")
    clock.t = 11.0  # slot 0's first leases lapse; both slots renew and settle
    owned = {s: d.renew(s) for s in (0, 1)} | {s: d.renew(s) for s in (0, 1)}
    p = min(owned[0])
    old_epoch = owned[0][p]
    d.reassign(p, 1)
    assert p not in d.renew(0)  # slot 0 gives it up at its next renewal
    grants = d.renew(1)
    assert grants[p] > old_epoch and d.table()[p] == (grants[p], "unix:b")
