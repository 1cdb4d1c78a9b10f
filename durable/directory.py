"""The directory: which host slot owns which partition, as leases with epochs, and which node
holds each partition's files (its home).

``Directory`` is the pure bookkeeping (tested without Ray); ``DirectoryActor`` is the named Ray
actor that holds one and persists epochs and homes in Ray's GCS key-value store.

A *node* here is the disk a slot's data dir is on, named by ``home_of(data_dir)``: an id written
into the data dir once, so it stays with the files (a node that returns after a crash or a
``ray start`` keeps it, while Ray gives it a new node id) and a wiped or new disk gets a new one.

Guarantees:
- Placement is rendezvous hashing of partitions over the registered, live slots that may hold
  them: adding or removing a slot moves only the partitions it wins or held.
- Homes: the first grant of a partition records the grantee's node as its home (persisted before
  the grant is returned); from then on it is granted only to live slots on its home node. While
  its home has no live slot it has no lease (callers get ``Unavailable``/503 after 1.5 TTLs) and
  the other partitions are granted as usual. Each grant carries the home, so a slot can refuse a
  partition that lives elsewhere (``HostSlot._apply`` does). Only a planned move changes a
  home (below).
- Partitions never created are granted once every slot the cluster starts (``expected``) has
  registered, or ``START_GRACE`` TTLs after the first did, so a new cluster spreads them over its
  nodes (a slot that never starts delays the first start of a cluster by that much).
- ``complete``: every partition holds a valid lease except those whose home has no live slot
  (a node that is down does not keep the others' slots from starting).
- A partition is granted as a lease ``(slot, epoch, expiry)``. Every grant (including a slot
  re-registering after a restart) takes a new epoch, strictly greater than every epoch granted
  before for that partition, also across restarts of the directory (epochs persist).
- A partition is granted to a new slot only after its current lease expired or was released:
  the old holder, which stops serving when its own lease lapses, and the new one never both hold
  a valid lease. On one machine the partition's ``flock`` backs this up.
- Planned moves (``durable.moves`` runs them): ``reassign`` to a slot on another node, ``drain``
  and ``rebalance`` only *plan* moves (partition -> target slot). ``next_move`` hands a planned
  move to the slot holding the partition, at most ``MOVES_AT_ONCE`` at a time, and records it as
  begun at the lease's epoch; until it ends the source keeps the lease (placement does not
  take it away). ``finish_move`` switches it only if the source still holds that lease: the new
  home is persisted, then a new epoch, and only then is the target granted the lease.
  ``abort_move`` (or the source re-registering) ends a move with nothing changed; an aborted
  move is planned again, ``MOVE_ATTEMPTS`` times in all, then listed in ``failed``; the next
  attempt waits until its target renewed after the abort (a target that died must come back
  first) and, from the third, ``attempts - 1`` lease TTLs.
- Rebalancing: a slot registering from a node the directory never saw, once partitions have
  homes, plans the moves that make each home the node of the partition's rendezvous winner
  among live slots (so about 1/n of them move to the new node); nodes being drained are left
  out of that placement.
- Restores onto another node: ``rehome`` (``durable restore --partition N --rehome``) makes a
  live node the home of a partition whose home node has no live slot and whose lease lapsed,
  persisted before any grant; every other case is refused with nothing changed, so a partition
  some slot may still serve never gets a second copy. The lost node's copy is never served.
- Handover before a restart (``durable.rollout``): ``hand_over(slot)`` pins every partition of
  the slot's node to its other live slots, each leased one handed over by ``reassign``, so
  placement gives none to ``slot`` until one is reassigned to it.

Does not guarantee:
- A slot that cannot reach the directory keeps serving until its lease ends (TTL); callers then
  see ``not_owner`` from it and re-resolve.
- Homes survive what the GCS KV store survives: a directory restart, not a restart of the whole
  Ray cluster without GCS fault tolerance (nor do epochs). Two data dirs copied file for file
  (``home-id`` included) are taken for one node.
- Planned and running moves, drains and failures are in memory: a directory restart forgets
  them (a move then fails its switch and is aborted; homes are unchanged) and the operator
  runs ``durable drain`` again.

On failure: a directory restart loses leases but not epochs or homes; hosts re-register on their
next renewal (they are told ``unknown``) and get new epochs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEASE_TTL = 10.0
STATE = ("epochs", "homes")  # the directory's fields kept in the GCS KV store
START_GRACE = 3  # lease TTLs new partitions wait at most for every slot to register
MOVES_AT_ONCE = 1  # planned moves running at once, cluster-wide: each costs a copy of its files
MOVE_ATTEMPTS = 3  # a move that aborts is planned again, this many attempts in all


def rendezvous(partition: int, slots: list[int]) -> int:
    """The slot with the highest hash weight for ``partition`` (stable across processes).

    >>> rendezvous(3, [0, 1, 2]) in (0, 1, 2)
    True
    """
    return max(slots, key=lambda s: hashlib.sha256(f"{partition}/{s}".encode()).digest())


def home_of(data_dir: Path) -> str:
    """The node name of the disk ``data_dir`` is on: read from ``data_dir/home-id``, written
    there on first use (the host name, for people, and a random part, for uniqueness)."""
    path = data_dir / "home-id"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f"home-id.{uuid.uuid4().hex}"
        draft.write_text(f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}")
        try:
            os.link(draft, path)  # atomic, and refused if another slot of this node won the race
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text()


@dataclass
class Lease:
    slot: int
    epoch: int
    expires: float


@dataclass(frozen=True)
class Move:
    """A planned move being run: ``source`` slot holds the lease at ``epoch`` until the switch."""

    partition: int
    source: int
    target: int
    epoch: int
    started: float  # the directory's clock when it was handed out


@dataclass
class Directory:
    """Leases of every partition; ``now`` is a monotonic clock (seconds)."""

    partitions: int
    ttl: float = LEASE_TTL
    now: Callable[[], float] = time.monotonic
    epochs: dict[int, int] = field(default_factory=dict)  # highest epoch ever granted
    leases: dict[int, Lease] = field(default_factory=dict)
    slots: dict[int, str] = field(default_factory=dict)  # slot -> channel address
    nodes: dict[int, str] = field(default_factory=dict)  # slot -> node (``home_of``)
    homes: dict[int, str] = field(default_factory=dict)  # partition -> node holding its files
    seen: dict[int, float] = field(default_factory=dict)  # slot -> last renewal
    pins: dict[int, int] = field(default_factory=dict)  # partition -> slot, set by reassign
    # Slots the cluster starts: partitions never created wait (at most START_GRACE TTLs after
    # the first registration) until they have all registered, so they spread over every node
    # rather than all landing, for good, on the node whose slot registered first.
    expected: int = 1
    first_seen: float | None = None
    planned: dict[int, int] = field(default_factory=dict)  # partition -> target slot
    moves: dict[int, Move] = field(default_factory=dict)  # partition -> move being run
    attempts: dict[int, int] = field(default_factory=dict)  # partition -> moves aborted
    retry: dict[int, tuple[float, float]] = field(default_factory=dict)  # (aborted, not before)
    moved: list[int] = field(default_factory=list)  # partitions moved, in order
    seconds: dict[int, float] = field(default_factory=dict)  # partition -> its last move took
    failed: dict[int, str] = field(default_factory=dict)  # partition -> why its move gave up
    draining: set[str] = field(default_factory=set)  # nodes no partition is planned onto
    on_epoch: Callable[[int, int], None] = lambda partition, epoch: None
    on_home: Callable[[int, str], None] = lambda partition, node: None

    def register(self, slot: int, address: str, node: str) -> dict[int, tuple[int, str]]:
        """A (re)started slot on ``node``: drop its old leases, then grant what it wins."""
        for partition, lease in list(self.leases.items()):
            if lease.slot == slot:
                del self.leases[partition]
        for move in [m for m in self.moves.values() if slot in (m.source, m.target)]:
            self.abort_move(move.partition, move.epoch, f"slot {slot} restarted")
        joined = node not in self.nodes.values()
        self.slots[slot] = address
        self.nodes[slot] = node  # Ray may restart a slot on another node
        self.seen[slot] = self.now()
        if self.first_seen is None:
            self.first_seen = self.seen[slot]
        self.draining.discard(node)  # a drained node whose slot restarts takes partitions again
        if joined and self.homes:
            self.rebalance()
        return self.renew(slot)

    def renew(self, slot: int) -> dict[int, tuple[int, str]]:
        """Extend ``slot``'s leases and grant it free partitions it wins; its grants now, as
        partition -> (epoch, home)."""
        if slot not in self.slots:
            raise LookupError(f"slot {slot} is not registered")
        now = self.now()
        self.seen[slot] = now
        live = self._live_slots(now)
        grants = {}
        for partition in range(self.partitions):
            lease = self.leases.get(partition)
            winner = self._winner(partition, live, now)
            if lease is not None and lease.slot == slot:
                if winner != slot:
                    continue  # another live slot wins it now: let this lease lapse (rebalance)
                lease.expires = now + self.ttl
            elif winner == slot and (lease is None or lease.expires < now):
                lease = self._grant(partition, slot, now)
            else:
                continue
            grants[partition] = (lease.epoch, self.homes[partition])
        return grants

    def _grant(self, partition: int, slot: int, now: float) -> Lease:
        if partition not in self.homes:  # never created anywhere: it starts on this node
            self.homes[partition] = self.nodes[slot]
            self.on_home(partition, self.nodes[slot])
        epoch = self.epochs.get(partition, 0) + 1
        self.epochs[partition] = epoch
        self.on_epoch(partition, epoch)
        lease = Lease(slot, epoch, now + self.ttl)
        self.leases[partition] = lease
        return lease

    def _winner(self, partition: int, live: list[int], now: float) -> int | None:
        """The live slot that should hold ``partition``: one on its home node, if it has one."""
        move = self.moves.get(partition)
        if move is not None:
            return move.source  # until the switch (or abort) the source keeps it
        home = self.homes.get(partition)
        if home is None:
            able = live if self._all_started(now) else []
        else:
            able = [s for s in live if self.nodes[s] == home]
        if not able:
            return None  # its home node has no live slot (or we wait for the slots to start)
        pinned = self.pins.get(partition)
        return pinned if pinned in able else rendezvous(partition, able)

    def _all_started(self, now: float) -> bool:
        assert self.first_seen is not None
        return len(self.slots) >= self.expected or now - self.first_seen > START_GRACE * self.ttl

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
        """Move a partition to ``slot`` (operators, fencing tests). On its home node: its lease
        lapses now and, while ``slot`` is live, placement names it the winner. On another node
        its files must be copied first: a move is planned (``next_move``)."""
        home, node = self.homes.get(partition), self.nodes.get(slot)
        if node is None:
            raise ValueError(f"slot {slot} is not registered")
        if home is not None and node != home:
            self.plan(partition, slot)
            return
        self.pins[partition] = slot
        self.expire(partition)

    def hand_over(self, slot: int) -> dict[int, int]:
        """Before ``slot`` restarts: every partition homed on its node that it holds (or might
        win) goes to another live slot of that node, by ``reassign`` (same disk: a lease
        handover, no copy); those the others hold are pinned where they are. partition -> the
        slot it goes to; ``ValueError`` if its node has no other live slot."""
        node = self.nodes.get(slot)
        siblings = [s for s in self._live_slots(self.now()) if s != slot and self.nodes[s] == node]
        if not siblings:
            raise ValueError(f"slot {slot} has no other live slot on its node to hand over to")
        handed = {}
        for partition, home in sorted(self.homes.items()):
            lease = self.leases.get(partition)
            if home != node:
                continue
            if lease is not None and lease.slot in siblings:
                self.pins[partition] = lease.slot  # stays: placement may not pick ``slot``
            else:
                handed[partition] = rendezvous(partition, siblings)
                self.reassign(partition, handed[partition])
        return handed

    # -- planned moves ---------------------------------------------------------------------------
    def plan(self, partition: int, target: int) -> None:
        """Queue a move of ``partition`` to slot ``target`` (another node than its home)."""
        if partition not in self.moves:
            self.planned[partition] = target
            self.failed.pop(partition, None)

    def drain(self, node: str) -> list[int]:
        """Plan moving every partition homed on ``node`` to live slots of other nodes (by
        rendezvous); the partitions planned. ``ValueError`` if no other node has a live slot."""
        self.draining.add(node)
        homed = sorted(p for p, home in self.homes.items() if home == node)
        targets = self._placeable()
        if homed and not targets:
            self.draining.discard(node)
            raise ValueError(f"node {node} cannot be drained: no other node has a live slot")
        for partition in homed:
            self.plan(partition, rendezvous(partition, targets))
        return homed

    def rebalance(self) -> list[int]:
        """Plan the moves that make each partition's home the node of its rendezvous winner
        among live slots of nodes not being drained; the partitions planned."""
        targets = self._placeable()
        planned = []
        for partition, home in sorted(self.homes.items()):
            if not targets or partition in self.moves or partition in self.planned:
                continue
            winner = rendezvous(partition, targets)
            if self.nodes[winner] != home:
                self.plan(partition, winner)
                planned.append(partition)
        return planned

    def _placeable(self) -> list[int]:
        return [s for s in self._live_slots(self.now()) if self.nodes[s] not in self.draining]

    def next_move(self, slot: int) -> tuple[int, int, int, str] | None:
        """A planned move of a partition ``slot`` holds, now begun: (partition, epoch, target
        slot, target address); None if there is none or ``MOVES_AT_ONCE`` are running."""
        now = self.now()
        for move in list(self.moves.values()):  # a source that died or stopped mid-move
            lease = self.leases.get(move.partition)
            if lease is None or lease.slot != move.source or lease.expires < now:
                self.abort_move(move.partition, move.epoch, "the source stopped during the move")
        if len(self.moves) >= MOVES_AT_ONCE:
            return None
        live = set(self._live_slots(now))
        for partition, target in sorted(self.planned.items()):
            lease = self.leases.get(partition)
            if lease is None or lease.slot != slot or lease.expires < now or target not in live:
                continue
            aborted, not_before = self.retry.get(partition, (-1.0, now))
            if self.seen[target] <= aborted or not_before > now:
                continue  # the target did not renew since the abort (it may be dead), or backoff
            if self.nodes[target] == self.homes.get(partition):
                del self.planned[partition]  # already there (e.g. planned twice)
                continue
            del self.planned[partition]
            self.moves[partition] = Move(partition, slot, target, lease.epoch, now)
            return partition, lease.epoch, target, self.slots[target]
        return None

    def finish_move(self, partition: int, epoch: int) -> int:
        """Switch a move whose copy is verified: the home, then a new epoch, then the target's
        lease; the new epoch. ``LookupError`` (nothing changed) if the move is not running at
        ``epoch`` or the source's lease at ``epoch`` lapsed meanwhile."""
        move = self.moves.get(partition)
        if move is None or move.epoch != epoch:
            raise LookupError(f"no move of partition {partition} at epoch {epoch} is running")
        lease, now = self.leases.get(partition), self.now()
        if (
            lease is None
            or (lease.slot, lease.epoch) != (move.source, epoch)
            or lease.expires < now
        ):
            self.abort_move(partition, epoch, "the source's lease lapsed during the copy")
            raise LookupError(f"partition {partition}: the lease at epoch {epoch} lapsed")
        del self.moves[partition]
        self.attempts.pop(partition, None)
        self.retry.pop(partition, None)
        self.homes[partition] = self.nodes[move.target]
        self.on_home(partition, self.homes[partition])  # persisted before the grant below
        self.pins[partition] = move.target
        self.moved.append(partition)
        self.seconds[partition] = now - move.started
        return self._grant(partition, move.target, now).epoch

    def abort_move(self, partition: int, epoch: int, why: str) -> None:
        """End a running move with nothing changed (the source serves on); plan it again
        unless it failed ``MOVE_ATTEMPTS`` times."""
        move = self.moves.get(partition)
        if move is None or move.epoch != epoch:
            return
        del self.moves[partition]
        self.attempts[partition] = self.attempts.get(partition, 0) + 1
        if self.attempts[partition] < MOVE_ATTEMPTS:
            self.planned[partition] = move.target
            now = self.now()
            self.retry[partition] = (now, now + (self.attempts[partition] - 1) * self.ttl)
        else:
            self.failed[partition] = why
            del self.attempts[partition]

    def move_status(self) -> dict[str, Any]:
        """Planned, running, done and failed moves, how long each done one took (from being
        handed out to the switch: the time its calls waited), and each node's partitions
        (``durable drain``'s progress)."""
        by_node: dict[str, list[int]] = {}
        for partition, home in sorted(self.homes.items()):
            by_node.setdefault(home, []).append(partition)
        return {
            "planned": sorted(self.planned),
            "running": sorted(self.moves),
            "moved": list(self.moved),
            "seconds": dict(self.seconds),
            "failed": dict(self.failed),
            "attempts": dict(self.attempts),
            "draining": sorted(self.draining),
            "homes": by_node,
        }

    # -- restores onto another node --------------------------------------------------------------
    def rehome(self, partition: int, node: str, check: bool = False) -> None:
        """Make ``node`` the home of ``partition`` after its home node was lost and an operator
        restored the partition there from a backup (``durable restore --rehome``). ``check``
        only checks. ``ValueError`` (nothing changed) unless its home has no live slot, no
        lease on it is still valid, no move of it runs and ``node`` has a live slot: so a
        partition that some slot may still serve is never given a second, diverging copy. Its
        old home keeps a stale copy that is never served (a slot refuses a foreign partition)."""
        now = self.now()
        live = {self.nodes[s] for s in self._live_slots(now)}
        home, lease = self.homes.get(partition), self.leases.get(partition)
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} does not exist (0-{self.partitions - 1})")
        if home is not None and home in live:
            raise ValueError(
                f"partition {partition} is served on its home node {home}: restoring over it "
                "would lose its newer writes (to move it, use `durable drain`)"
            )
        if lease is not None and lease.expires >= now:
            raise ValueError(
                f"partition {partition} has a lease for {lease.expires - now:.0f} s more: "
                "retry once it lapsed"
            )
        if partition in self.moves:
            raise ValueError(f"partition {partition} is being moved: retry once the move ended")
        if node not in live:
            raise ValueError(f"node {node} has no live slot to serve partition {partition}")
        if check:
            return
        for pending in (self.planned, self.pins, self.failed, self.attempts, self.retry):
            pending.pop(partition, None)
        self.homes[partition] = node
        self.on_home(partition, node)  # persisted before a slot of ``node`` is granted it

    def table(self) -> dict[int, tuple[int, str]]:
        """partition -> (epoch, channel address) for every partition with a valid lease."""
        now = self.now()
        return {
            p: (lease.epoch, self.slots[lease.slot])
            for p, lease in self.leases.items()
            if lease.expires >= now
        }

    def unplaceable(self) -> list[int]:
        """Partitions that no live slot may hold (their home node has none): unavailable."""
        live = {self.nodes[s] for s in self._live_slots(self.now())}
        return [p for p, home in sorted(self.homes.items()) if home not in live]

    def complete(self) -> bool:
        """Every partition that can be placed holds a valid lease (a node that is down does not
        keep the others' slots from starting)."""
        return set(self.table()) | set(self.unplaceable()) == set(range(self.partitions))


def directory_actor_class() -> Any:
    """The Ray actor class (built lazily so importing durable never imports Ray)."""
    import ray
    from ray.experimental import internal_kv

    remote: Any = ray.remote  # Ray's typed overloads do not cover every actor option

    @remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    class DirectoryActor:
        """The cluster's directory; epochs and homes persist in the GCS KV store."""

        def __init__(self, partitions: int, info: dict[str, Any], ttl: float = LEASE_TTL):
            self.info = info
            self.keys = {name: f"durable/{info['cluster']}/{name}".encode() for name in STATE}
            epochs, homes = (self._load(name) for name in STATE)
            self.directory = Directory(
                partitions, ttl, epochs=epochs, homes=homes, expected=info["slots"],
                on_epoch=lambda p, e: self._persist("epochs"),
                on_home=lambda p, n: self._persist("homes"),
            )  # fmt: skip

        def _load(self, name: str) -> dict[int, Any]:
            saved = internal_kv._internal_kv_get(self.keys[name])
            return {int(k): v for k, v in json.loads(saved).items()} if saved else {}

        def _persist(self, name: str) -> None:
            # Written before the grant is returned: epochs never go back and homes are never
            # forgotten after a restart.
            data = json.dumps(getattr(self.directory, name)).encode()
            internal_kv._internal_kv_put(self.keys[name], data, overwrite=True)

        def register(self, slot: int, address: str, node: str) -> dict[int, tuple[int, str]]:
            return self.directory.register(slot, address, node)

        def renew(self, slot: int) -> dict[int, tuple[int, str]] | None:
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

        def hand_over(self, slot: int) -> dict[int, int]:
            return self.directory.hand_over(slot)

        def drain(self, node: str) -> list[int]:
            return self.directory.drain(node)

        def rebalance(self) -> list[int]:
            return self.directory.rebalance()

        def next_move(self, slot: int) -> tuple[int, int, int, str] | None:
            return self.directory.next_move(slot)

        def finish_move(self, partition: int, epoch: int) -> int:
            return self.directory.finish_move(partition, epoch)

        def abort_move(self, partition: int, epoch: int, why: str) -> None:
            self.directory.abort_move(partition, epoch, why)

        def move_status(self) -> dict[str, Any]:
            return self.directory.move_status()

        def rehome(self, partition: int, node: str, check: bool = False) -> str | None:
            """``Directory.rehome``; why it was refused (None: done)."""
            try:
                self.directory.rehome(partition, node, check)
            except ValueError as refused:
                return str(refused)
            return None

        def nodes(self) -> dict[int, tuple[str, str]]:
            """slot -> (node, channel address): what ``durable drain NODE`` matches NODE with."""
            return {s: (n, self.directory.slots[s]) for s, n in self.directory.nodes.items()}

        def status(self) -> dict[str, Any]:
            return {
                **self.info,
                "complete": self.directory.complete(),
                "slots": len(self.directory.slots),
                "unplaceable": self.directory.unplaceable(),
            }

    return DirectoryActor
