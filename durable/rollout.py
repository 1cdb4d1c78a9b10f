"""Rolling restarts: every host slot of a running cluster stopped and started again, one at a
time, each emptied first, so a deploy resets no object and fails no request (issue 16).

``restart`` takes the slots in slot order; for each, ``restart_slot``::

    empty   ``Way.HANDOVER`` when another slot runs on its node: ``Directory.hand_over`` gives
            its leases to those slots (same disk: no copy); else ``Way.MOVE``: its node is
            drained (``moves.drain_node``: copy, verify, switch, delete); then wait until the
            slot serves no partition
    stop    ``HostActor.stop`` (HTTP stops, its WebSockets close with 1012, commit, close,
            release; at most ``STOP`` s), then ``ray.kill(no_restart=False)``: Ray starts
            the actor again
    serve   wait until a new process (another pid) registered and its gateway's ``/healthz``
            answers 200
    refill  give it its partitions back: ``reassign`` each handed one to it, or ``rebalance``
            (moves back to its node); wait until no move is planned or running and every
            partition has an owner

Guarantees:
- No acknowledged write lost, none applied twice: a slot is stopped only once it serves no
  partition, and partitions change hands only by the directory's lease handover (epochs, and on
  one disk the partition's ``flock``) or by planned moves (``durable.moves``).
- Clients see only retryable errors: a call for a partition changing hands waits, or gets
  ``not_owner`` and is resent by the caller (``Unavailable`` / 503 + ``Retry-After`` only past
  the channel's patience); a call running at the old holder as it lets go may end in
  ``ObjectReset`` (it may have run, as any in-flight failure).
- One slot at a time: the next is emptied only after the previous serves again and got its
  partitions back.
- WebSockets held by the slot's gateway, or of objects in the partitions it hands over, are
  closed with 1012 (service restart) so clients reconnect (``durable.relay``).

Does not guarantee:
- A slot that is the only one of the cluster cannot be emptied: ``restart`` refuses (exit 2 of
  ``durable restart``) unless ``force``, which restarts it anyway: its partitions are then
  unavailable until it serves again (callers get ``Unavailable`` / 503 + ``Retry-After`` and
  retry; nothing they sent meanwhile ran).
- Ray may start a slot again on another node (``SPREAD``); it then takes that node's share.
- Latency: calls of a partition changing hands wait up to a lease renewal period (a handover)
  or the copy (a move; see ``durable.moves``).

On failure: the rollout stops at the first slot that does not empty, serve again or refill
within ``timeout`` seconds (those after it keep running untouched) and says which and why; a
move given up is such a failure. Run it again once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from durable.cluster import RAY_NAMESPACE
from durable.moves import Progress, drain_node

SLOT_TIMEOUT = 600.0  # seconds one slot may take to empty, restart and refill
POLL = 0.1  # seconds between looks at the directory or the slot
ASK = 5.0  # seconds one look at a slot may take (a restarting actor may not answer)
STOP = 30.0  # seconds a slot may take to stop gracefully before it is killed all the same


class Way(enum.Enum):
    """How a slot is emptied before its restart."""

    HANDOVER = "handover"  # another slot of its node takes its leases: same disk, no copy
    MOVE = "move"  # its node's partitions are copied to other nodes (planned moves)
    ALONE = "alone"  # no other slot at all: restarted full (``force``), briefly unavailable


def way_out(slot: int, nodes: dict[int, str]) -> Way:
    """How ``slot`` is emptied, given slot -> node of every slot of the cluster.

    >>> [way_out(s, {0: "a", 1: "a", 2: "b"}).value for s in (0, 2)], way_out(0, {0: "a"})
    (['handover', 'move'], <Way.ALONE: 'alone'>)
    """
    others = {node for other, node in nodes.items() if other != slot}
    if nodes[slot] in others:
        return Way.HANDOVER
    return Way.MOVE if others else Way.ALONE


@dataclass(frozen=True)
class Rollout:
    """What ``restart`` did: the slots restarted, in order, how long each took (seconds), and
    the slot it stopped at with why (empty when every slot restarted)."""

    restarted: list[int]
    seconds: dict[int, float]
    failed: dict[int, str]


class RolloutFailed(Exception):
    """A slot did not empty, serve again or refill (internal: ends the rollout there)."""


def slot_actor(slot: int) -> Any:
    import ray

    return ray.get_actor(f"durable-host-{slot}", namespace=RAY_NAMESPACE)


def ray_restart(actor: Any) -> None:
    """Kill the slot's process and let Ray start it again (its ``max_restarts=-1``)."""
    import ray

    ray.kill(actor, no_restart=False)


async def restart(
    directory: Any,
    progress: Progress | None = None,
    timeout: float = SLOT_TIMEOUT,
    force: bool = False,
    actor_of: Callable[[int], Any] = slot_actor,
    kill: Callable[[Any], None] = ray_restart,
) -> Rollout:
    """Restart every slot, one at a time, each emptied first (module docstring).
    ``ValueError`` before anything restarts if a slot is alone and ``force`` is not given."""
    nodes = await _nodes(directory)
    alone = [slot for slot in nodes if way_out(slot, nodes) is Way.ALONE]
    if alone and not force:
        raise ValueError(
            f"slot {alone[0]} is the only slot of the cluster: it cannot hand its partitions "
            "to another before it restarts; pass --force to restart it anyway (its partitions "
            "are unavailable until it serves again)"
        )
    restarted: list[int] = []
    seconds: dict[int, float] = {}
    for slot in sorted(nodes):
        if progress is not None:
            progress(len(restarted), len(nodes), f"slot {slot}")
        started = time.monotonic()
        try:
            await restart_slot(directory, slot, actor_of(slot), kill, timeout)
        except (RolloutFailed, ValueError) as error:
            return Rollout(restarted, seconds, {slot: str(error)})
        restarted.append(slot)
        seconds[slot] = round(time.monotonic() - started, 2)
    if progress is not None:
        progress(len(restarted), len(nodes), "every slot restarted")
    return Rollout(restarted, seconds, {})


async def restart_slot(
    directory: Any, slot: int, actor: Any, kill: Callable[[Any], None], timeout: float
) -> None:
    """Empty ``slot``, stop it, let it start again and serve, then give its partitions back."""
    deadline = time.monotonic() + timeout
    await _until(lambda: _quiet(directory), deadline, "the moves under way to end")
    nodes = await _nodes(directory)  # now: an earlier slot may have started on another node
    way = way_out(slot, nodes)
    handed: dict[int, int] = {}
    if way is Way.HANDOVER:
        handed = await directory.hand_over.remote(slot)
    elif way is Way.MOVE:
        drained = await drain_node(directory, nodes[slot], timeout=deadline - time.monotonic())
        if drained.failed:
            raise RolloutFailed(f"its node was not drained: {drained.failed}")
    if way is not Way.ALONE:
        await _until(lambda: _serves_nothing(actor), deadline, "it to serve no partition")
    pid = (await actor.ready.remote())["pid"]
    with contextlib.suppress(TimeoutError):  # it serves nothing: a stop that hangs is killed
        async with asyncio.timeout(STOP):
            await actor.stop.remote()
    kill(actor)
    await _until(lambda: _serving_again(actor, pid), deadline, "it to serve again")
    for partition in handed:
        await directory.reassign.remote(partition, slot)
    if way is Way.MOVE:
        await directory.rebalance.remote()
    await _until(lambda: _refilled(directory, actor, handed), deadline, "its partitions back")


async def _nodes(directory: Any) -> dict[int, str]:
    return {int(slot): home for slot, (home, _) in (await directory.nodes.remote()).items()}


async def _until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    while not await check():
        if time.monotonic() > deadline:
            raise RolloutFailed(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


async def _quiet(directory: Any) -> bool:
    """No move planned or running; ``RolloutFailed`` if a move was given up (it needs a look)."""
    status = await directory.move_status.remote()
    if status["failed"]:
        raise RolloutFailed(f"moves were given up: {status['failed']}")
    return not status["planned"] and not status["running"]


async def _ask(actor: Any) -> dict[str, Any] | None:
    """The slot's ``ready`` answer, or None while it does not answer (it is restarting)."""
    try:
        async with asyncio.timeout(ASK):
            answer: dict[str, Any] = await actor.ready.remote()
    except Exception:  # Ray refuses calls to an actor being restarted: look again
        return None
    return answer


async def _serves_nothing(actor: Any) -> bool:
    answer = await _ask(actor)
    return answer is not None and not answer["owned"]


async def _serving_again(actor: Any, pid: int) -> bool:
    answer = await _ask(actor)
    return answer is not None and answer["pid"] != pid and bool(answer["healthy"])


async def _refilled(directory: Any, actor: Any, handed: dict[int, int]) -> bool:
    answer = await _ask(actor)
    if answer is None or not set(handed) <= {int(p) for p in answer["owned"]}:
        return False
    return await _quiet(directory) and bool((await directory.status.remote())["complete"])
