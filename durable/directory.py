"""The directory: which host slot owns which partition, as leases with epochs.

``Directory`` is the pure bookkeeping (tested without Ray); ``DirectoryActor`` is the named Ray
actor that holds one and persists epochs in Ray's GCS key-value store.

Guarantees:
- Placement is rendezvous hashing of partitions over the registered, live slots: adding or
  removing a slot moves only the partitions it wins or held.
- A partition is granted as a lease ``(slot, epoch, expiry)``. Every grant (including a slot
  re-registering after a restart) takes a new epoch, strictly greater than every epoch granted
  before for that partition, also across restarts of the directory (epochs persist).
- A partition is granted to a new slot only after its current lease expired or was released:
  the old holder, which stops serving when its own lease lapses, and the new one never both hold
  a valid lease. On one machine the partition's ``flock`` backs this up.

Does not guarantee: a slot that cannot reach the directory keeps serving until its lease ends
(TTL); callers then see ``not_owner`` from it and re-resolve.

On failure: a directory restart loses leases but not epochs; hosts re-register on their next
renewal (they are told ``unknown``) and get new epochs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LEASE_TTL = 10.0


def rendezvous(partition: int, slots: list[int]) -> int:
    """The slot with the highest hash weight for ``partition`` (stable across processes).

    >>> rendezvous(3, [0, 1, 2]) in (0, 1, 2)
    True
    """
    return max(slots, key=lambda s: hashlib.sha256(f"{partition}/{s}".encode()).digest())


@dataclass
class Lease:
    slot: int
    epoch: int
    expires: float


@dataclass
class Directory:
    """Leases of every partition; ``now`` is a monotonic clock (seconds)."""

    partitions: int
    ttl: float = LEASE_TTL
    now: Callable[[], float] = time.monotonic
    epochs: dict[int, int] = field(default_factory=dict)  # highest epoch ever granted
    leases: dict[int, Lease] = field(default_factory=dict)
    slots: dict[int, str] = field(default_factory=dict)  # slot -> channel address
    seen: dict[int, float] = field(default_factory=dict)  # slot -> last renewal
    pins: dict[int, int] = field(default_factory=dict)  # partition -> slot, set by reassign
    on_epoch: Callable[[int, int], None] = lambda partition, epoch: None

    def register(self, slot: int, address: str) -> dict[int, int]:
        """A (re)started slot: drop its old leases, then grant what it wins."""
        for partition, lease in list(self.leases.items()):
            if lease.slot == slot:
                del self.leases[partition]
        self.slots[slot] = address
        self.seen[slot] = self.now()
        return self.renew(slot)

    def renew(self, slot: int) -> dict[int, int]:
        """Extend ``slot``'s leases and grant it free partitions it wins; its grants now."""
        if slot not in self.slots:
            raise LookupError(f"slot {slot} is not registered")
        now = self.now()
        self.seen[slot] = now
        live = self._live_slots(now)
        grants = {}
        for partition in range(self.partitions):
            lease = self.leases.get(partition)
            winner = self._winner(partition, live)
            if lease is not None and lease.slot == slot:
                if winner != slot:
                    continue  # another live slot wins it now: let this lease lapse (rebalance)
                lease.expires = now + self.ttl
            elif winner == slot and (lease is None or lease.expires < now):
                lease = self._grant(partition, slot, now)
            else:
                continue
            grants[partition] = lease.epoch
        return grants

    def _grant(self, partition: int, slot: int, now: float) -> Lease:
        epoch = self.epochs.get(partition, 0) + 1
        self.epochs[partition] = epoch
        self.on_epoch(partition, epoch)
        lease = Lease(slot, epoch, now + self.ttl)
        self.leases[partition] = lease
        return lease

    def _winner(self, partition: int, live: list[int]) -> int:
        pinned = self.pins.get(partition)
        return pinned if pinned in live else rendezvous(partition, live)

    def _live_slots(self, now: float) -> list[int]:
        return [s for s, t in self.seen.items() if now - t <= self.ttl] or list(self.slots)

    def release(self, slot: int, partitions: list[int]) -> None:
        for partition in partitions:
            lease = self.leases.get(partition)
            if lease is not None and lease.slot == slot:
                del self.leases[partition]

    def expire(self, partition: int) -> None:
        """Force a lease to lapse now (tests, operators draining a host)."""
        lease = self.leases.get(partition)
        if lease is not None:
            lease.expires = self.now() - 1.0

    def reassign(self, partition: int, slot: int) -> None:
        """Move a partition to ``slot`` (operators draining a host, fencing tests): its lease
        lapses now and, while ``slot`` is live, placement names it the winner."""
        self.pins[partition] = slot
        self.expire(partition)

    def table(self) -> dict[int, tuple[int, str]]:
        """partition -> (epoch, channel address) for every partition with a valid lease."""
        now = self.now()
        return {
            p: (lease.epoch, self.slots[lease.slot])
            for p, lease in self.leases.items()
            if lease.expires >= now
        }

    def complete(self) -> bool:
        return len(self.table()) == self.partitions


def directory_actor_class() -> Any:
    """The Ray actor class (built lazily so importing durable never imports Ray)."""
    import ray
    from ray.experimental import internal_kv

    remote: Any = ray.remote  # Ray's typed overloads do not cover every actor option

    @remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    class DirectoryActor:
        """The cluster's directory; epochs persist in the GCS KV store under ``kv_prefix``."""

        def __init__(self, partitions: int, info: dict[str, Any], ttl: float = LEASE_TTL):
            self.info = info
            self.prefix = f"durable/{info['cluster']}/epochs".encode()
            saved = internal_kv._internal_kv_get(self.prefix)
            epochs = {int(k): v for k, v in json.loads(saved).items()} if saved else {}
            self.directory = Directory(partitions, ttl, epochs=epochs, on_epoch=self._persist)

        def _persist(self, partition: int, epoch: int) -> None:
            # Written before the grant is returned: epochs never go back after a restart.
            data = json.dumps(self.directory.epochs).encode()
            internal_kv._internal_kv_put(self.prefix, data, overwrite=True)

        def register(self, slot: int, address: str) -> dict[int, int]:
            return self.directory.register(slot, address)

        def renew(self, slot: int) -> dict[int, int] | None:
            try:
                return self.directory.renew(slot)
            except LookupError:
                return None  # unknown (the directory restarted): the slot must re-register

        def release(self, slot: int, partitions: list[int]) -> None:
            self.directory.release(slot, partitions)

        def expire(self, partition: int) -> None:
            self.directory.expire(partition)

        def reassign(self, partition: int, slot: int) -> None:
            self.directory.reassign(partition, slot)

        def table(self) -> dict[int, tuple[int, str]]:
            return self.directory.table()

        def status(self) -> dict[str, Any]:
            return {
                **self.info,
                "complete": self.directory.complete(),
                "slots": len(self.directory.slots),
            }

    return DirectoryActor
