"""A directory for the fencing test: durable's own ``Directory``, plus ``pin(partition, slot)``.

``DirectoryActor`` cannot move a partition to a chosen live slot: placement is rendezvous
hashing over live slots, so after ``expire(partition)`` the same slot wins the partition back at
its next renewal. This actor keeps a real ``durable.directory.Directory`` and answers the calls
hosts make (``register``, ``renew``, ``release``, ``expire``, ``table``, ``status``) as
``DirectoryActor`` does, plus ``pin``: the partition's lease lapses now and, from then on,
rendezvous names the pinned slot as its winner. Started under the directory's name before
``Cluster.start`` (which finds it with ``get_if_exists``), it is what the hosts talk to.

Proposed for durable itself: ``DirectoryActor.reassign(partition, slot)`` (tests, operators
draining a host), so this double can go.
"""

from __future__ import annotations

from typing import Any

import ray

import durable.directory
from durable.directory import Directory

_rendezvous = durable.directory.rendezvous


@ray.remote(num_cpus=0)
class PinnedDirectory:
    def __init__(self, partitions: int, info: dict[str, Any], ttl: float) -> None:
        self.info = info
        self.pins: dict[int, int] = {}
        self.directory = Directory(partitions, ttl)
        durable.directory.rendezvous = self._rendezvous  # this actor's process only

    def _rendezvous(self, partition: int, slots: list[int]) -> int:
        pinned = self.pins.get(partition)
        return pinned if pinned in slots else _rendezvous(partition, slots)

    def pin(self, partition: int, slot: int) -> None:
        self.pins[partition] = slot
        self.directory.expire(partition)

    def register(self, slot: int, address: str) -> dict[int, int]:
        return self.directory.register(slot, address)

    def renew(self, slot: int) -> dict[int, int] | None:
        try:
            return self.directory.renew(slot)
        except LookupError:
            return None

    def release(self, slot: int, partitions: list[int]) -> None:
        self.directory.release(slot, partitions)

    def expire(self, partition: int) -> None:
        self.directory.expire(partition)

    def table(self) -> dict[int, tuple[int, str]]:
        return self.directory.table()

    def status(self) -> dict[str, Any]:
        return {
            **self.info,
            "complete": self.directory.complete(),
            "slots": len(self.directory.slots),
        }
