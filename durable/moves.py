"""Planned moves: a partition's files copied from its home node to a slot on another node, then
its home switched (DESIGN §8: rebalancing when a node joins, ``durable drain``, SIGTERM).

The directory plans moves and switches homes (``durable.directory``); this module runs them.
The source slot (``Departures``) runs one move it was handed (``Directory.next_move``)::

    fence   no new call for the partition runs here: it leaves the slot's ``owned`` (so the
            slot's own gateway goes over the channel too) and channel calls for it wait
    quiesce wait until no object of the partition has an event in flight (bounded)
    close   commit, close the partition and its object files, unschedule its alarms
    copy    SQLite's online backup API, into a staging folder (``backup.copy_partition``:
            the partition database and the object files it marks as promoted, sha256 each)
    stream  MOVE, MOVE_DATA (<= 256 KiB each, at most ``WINDOW`` unanswered), MOVE_DONE
            over the channel to the target slot (``Arrivals``), which writes into its own data
            dir, checks sizes and sha256 and renames the folder into place (fsynced)
    switch  ``Directory.finish_move``: the new home is persisted, then a new epoch, then the
            target's lease
    delete  only then: the source's copy of the partition

Guarantees:
- Never lost: the source's files are deleted only after the directory switched the home to a
  target holding a verified copy, and nothing writes the partition between the copy and the
  switch (fenced, quiesced and closed first).
- Never run twice: a call that arrives during the move waits at the source and is then
  answered ``not_owner`` (nothing ran), so its caller re-resolves and sends it to the target;
  calls already running finish before the copy (quiesce), and are part of it.
- Failure before the switch changes nothing: a timeout while quiescing, a copy error, a refused
  or corrupt transfer (size or sha256 mismatch), a target that dies or a switch the directory
  refuses: the directory ends the move (``abort_move``), the target drops its copy, the source
  reopens the partition and the waiting calls run there. The directory plans it again.
- The target never serves a copy it did not verify: the folder is renamed into place only after
  every file matched, and it serves the partition only once the directory grants it (home
  switched). It refuses a copy of a partition it serves.

Does not guarantee:
- Latency during the move: calls for the partition wait at the source for as long as the move
  takes (about the time to copy its files twice on disk and once over the network; see
  ``benchmarks/moves.py``); a caller's own timeout (an HTTP client's) may fire first.
- A call that awaits another object of the same partition while it moves waits for a call that
  waits for it: quiescing times out (``QUIESCE``) and the move is aborted, not deadlocked.
- WebSockets of the partition's objects are not moved (the objects are reset at the source).
- If the switch's outcome is unknown (the directory call failed in flight), the source neither
  deletes nor reopens its copy: its next lease renewal reopens it if the home did not change.

On failure: see above; a slot that dies mid-move loses nothing (its staging folder is on its own
disk, the directory aborts the move when it registers again; ``Arrivals`` removes half-received
copies when it starts). A source that dies between the switch and the delete keeps a stale copy
on its disk: never served (its home is elsewhere), replaced if the partition ever moves back.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from durable.backup import copy_partition
from durable.channel import CHUNK, ChannelClient, Frame, answer
from durable.endpoint import Endpoint
from durable.host import Host

log = logging.getLogger("durable.moves")
QUIESCE = 10.0  # seconds a move waits for the partition's running events before it aborts
WINDOW = 8  # chunks sent and not yet answered: bounds the memory a move holds (8 x 256 KiB)
DRAIN_TIMEOUT = 600.0  # seconds ``durable drain`` follows the moves before it gives up
INCOMING = ".incoming-"  # partitions/.incoming-0007-12: a copy being received (epoch 12)


class Outcome(enum.Enum):
    """How a move ended, at the source."""

    SWITCHED = "switched"  # the target is the home; the source's copy is deleted
    ABORTED = "aborted"  # nothing changed: the source serves the partition again
    UNKNOWN = "unknown"  # the switch call failed in flight: the next renewal decides


@dataclass(frozen=True)
class Order:
    """A move handed to its source by ``Directory.next_move``."""

    partition: int
    epoch: int
    target: int
    address: str


class MoveRefused(Exception):
    """The target refused or could not verify a copy (internal: the move is aborted)."""


def partition_folder(data_dir: Path, partition: int) -> Path:
    return data_dir / "partitions" / f"{partition:04d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the source ---------------------------------------------------------------------------------
class Departures:
    """The source side of moves: fences, copies, streams, switches, deletes (module docstring)."""

    def __init__(self, data_dir: Path, directory: Any) -> None:
        self.data_dir = data_dir
        self.directory = directory
        self.gates: dict[int, asyncio.Future[None]] = {}  # partition -> resolved when it ends

    async def settled(self, partition: int) -> None:
        """Wait until no move of ``partition`` runs (a call arriving during one waits here)."""
        gate = self.gates.get(partition)
        if gate is not None:
            await asyncio.shield(gate)

    async def run(
        self, host: Host, owned: dict[int, int], order: Order, client: ChannelClient
    ) -> Outcome:
        partition, epoch = order.partition, order.epoch
        if owned.get(partition) != epoch:
            await self._abort(order, "the source does not serve it at that epoch")
            return Outcome.ABORTED
        gate = asyncio.get_running_loop().create_future()
        self.gates[partition] = gate
        del owned[partition]  # this slot's own callers now go over the channel (and wait)
        staging = self.data_dir / "moves" / f"{partition:04d}-{epoch}"
        outcome, sent = Outcome.ABORTED, False
        try:
            await _quiesce(host, partition)
            host.remove_partition(partition)
            started = time.monotonic()
            entry = await asyncio.to_thread(copy_partition, self.data_dir, staging, partition)
            sent = True
            await _send(client, order, partition_folder(staging, partition), entry)
            outcome = await self._switch(order)
            log.info("partition %d moved to slot %d in %.2f s", partition, order.target,
                     time.monotonic() - started)  # fmt: skip
        except Exception as error:
            log.warning("move of partition %d to slot %d aborted: %r",
                        partition, order.target, error)  # fmt: skip
            await self._abort(order, repr(error))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if outcome is Outcome.SWITCHED:
                shutil.rmtree(partition_folder(self.data_dir, partition), ignore_errors=True)
            elif outcome is Outcome.ABORTED:
                await self._reopen(host, owned, order, client if sent else None)
            del self.gates[partition]
            gate.set_result(None)  # waiting calls: not_owner (moved) or run here (aborted)
        return outcome

    async def _switch(self, order: Order) -> Outcome:
        try:
            await self.directory.finish_move.remote(order.partition, order.epoch)
        except LookupError:
            raise  # refused: nothing changed, abort
        except Exception:
            log.exception("switch of partition %d: outcome unknown", order.partition)
            return Outcome.UNKNOWN
        return Outcome.SWITCHED

    async def _abort(self, order: Order, why: str) -> None:
        try:
            await self.directory.abort_move.remote(order.partition, order.epoch, why)
        except Exception:  # the directory restarted: it forgot the move anyway
            log.warning("abort of the move of partition %d not recorded", order.partition)

    async def _reopen(
        self, host: Host, owned: dict[int, int], order: Order, target: ChannelClient | None
    ) -> None:
        """After an abort: the target drops what it received; the source serves again (its
        lease at the move's epoch was never taken away; the renewal loop still checks it)."""
        if target is not None:
            frame = [Frame.MOVE_UNDO, order.partition, order.epoch]
            try:
                async with asyncio.timeout(5.0):
                    answer(await target.request(frame))
            except Exception:  # best effort: the copy is never served (the home is unchanged)
                log.warning("the target of partition %d keeps a stale copy", order.partition)
        try:
            host.add_partition(order.partition)
        except Exception:  # e.g. the disk: the next renewal tries again
            log.exception("partition %d not reopened after an aborted move", order.partition)
            return
        owned[order.partition] = order.epoch


async def _quiesce(host: Host, partition: int) -> None:
    """Until no object of ``partition`` has an event in flight; ``TimeoutError`` after QUIESCE."""
    async with asyncio.timeout(QUIESCE):
        while host.busy(partition):
            await asyncio.sleep(0.005)


async def _send(client: ChannelClient, order: Order, root: Path, entry: dict[str, Any]) -> None:
    """Stream the copied files under ``root`` to the target; raises what the target raised."""
    paths = [Path(entry["path"]), *(Path(o["path"]) for o in entry["objects"])]
    sums = [entry["sha256"], *(o["sha256"] for o in entry["objects"])]
    files = [
        [path.relative_to(root).as_posix(), path.stat().st_size, digest]
        for path, digest in zip(paths, sums, strict=True)
    ]
    p, e = order.partition, order.epoch
    answer(await client.request([Frame.MOVE, p, e, files]))  # connected: the rest keeps order
    sent: deque[asyncio.Future[list[Any]]] = deque()
    try:
        for index, path in enumerate(paths):
            with path.open("rb") as file:
                while chunk := await asyncio.to_thread(file.read, CHUNK):
                    frame = [Frame.MOVE_DATA, p, e, index, chunk]
                    sent.append(asyncio.ensure_future(client.request(frame)))
                    if len(sent) >= WINDOW:
                        answer(await sent.popleft())
        while sent:
            answer(await sent.popleft())
    finally:
        for future in sent:  # an error was answered first: the rest are moot
            future.cancel()
    answer(await client.request([Frame.MOVE_DONE, p, e]))


# -- the target ---------------------------------------------------------------------------------
@dataclass
class Incoming:
    """A copy being received into ``folder``: the files announced, and the one being written."""

    folder: Path
    files: list[tuple[str, int, str]]  # (path in the partition folder, bytes, sha256)
    index: int = 0
    written: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    handle: IO[bytes] | None = None


class Arrivals:
    """The target side of moves: the channel's move frames (``MOVE_KINDS``)."""

    def __init__(self, data_dir: Path, serving: Callable[[int], bool]) -> None:
        self.data_dir = data_dir
        self.serving = serving  # whether this slot serves a partition now
        self.incoming: dict[tuple[int, int], Incoming] = {}
        self.placed: dict[int, int] = {}  # partition -> epoch of the copy renamed into place
        for stale in (data_dir / "partitions").glob(INCOMING + "*"):
            shutil.rmtree(stale, ignore_errors=True)  # a previous run died receiving it

    async def receive(self, frame: list[Any]) -> list[list[Any]]:
        """Answer one move frame. MOVE and MOVE_DATA are handled before the first ``await``:
        frames arrive in order and the channel starts their tasks in order, so a file's chunks
        are written in order."""
        kind, rid, partition, epoch = frame[:4]
        if kind == Frame.MOVE:
            self._begin(partition, epoch, frame[4])
        elif kind == Frame.MOVE_DATA:
            self._write(partition, epoch, frame[4], bytes(frame[5]))
        elif kind == Frame.MOVE_DONE:
            await self._done(partition, epoch)
        else:
            await self._undo(partition, epoch)
        return [[Frame.REPLY, rid, b""]]

    def _begin(self, partition: int, epoch: int, files: list[list[Any]]) -> None:
        if self.serving(partition):
            raise MoveRefused(f"partition {partition} is served here already")
        for path, _, _ in files:
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts:
                raise MoveRefused(f"{path!r} is not a path inside a partition folder")
        self._drop(partition, epoch)
        folder = self.data_dir / "partitions" / f"{INCOMING}{partition:04d}-{epoch}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        incoming = Incoming(folder, [(str(p), int(n), str(s)) for p, n, s in files])
        self.incoming[(partition, epoch)] = incoming
        self._next_file(incoming)

    def _write(self, partition: int, epoch: int, index: int, chunk: bytes) -> None:
        incoming = self.incoming[(partition, epoch)]
        try:
            if index != incoming.index or incoming.handle is None:
                raise MoveRefused(f"file {index} out of order (expected {incoming.index})")
            incoming.handle.write(chunk)
            incoming.digest.update(chunk)
            incoming.written += len(chunk)
            if incoming.written > incoming.files[index][1]:
                raise MoveRefused(f"{incoming.files[index][0]} is longer than announced")
            self._next_file(incoming)
        except BaseException:
            self._drop(partition, epoch)
            raise

    def _next_file(self, incoming: Incoming) -> None:
        """Close the current file once complete (fsync, sha256 check); open the next ones."""
        while incoming.index < len(incoming.files):
            path, size, digest = incoming.files[incoming.index]
            if incoming.handle is None:
                target = incoming.folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                incoming.handle = target.open("wb")
                incoming.written, incoming.digest = 0, hashlib.sha256()
            if incoming.written < size:
                return
            incoming.handle.flush()
            os.fsync(incoming.handle.fileno())
            incoming.handle.close()
            incoming.handle = None
            if incoming.digest.hexdigest() != digest:
                raise MoveRefused(f"{path} does not match its sha256: the copy is corrupt")
            incoming.index += 1

    async def _done(self, partition: int, epoch: int) -> None:
        incoming = self.incoming.pop((partition, epoch), None)
        if incoming is None or incoming.index < len(incoming.files):
            self._drop(partition, epoch)
            raise MoveRefused(f"the copy of partition {partition} is incomplete")
        if self.serving(partition):
            self._drop(partition, epoch)
            raise MoveRefused(f"partition {partition} is served here already")
        await asyncio.to_thread(self._place, incoming.folder, partition)
        self.placed[partition] = epoch

    def _place(self, folder: Path, partition: int) -> None:
        """Rename the verified folder into place; an older copy (a former home) goes first."""
        for path in folder.rglob("*"):
            if path.is_dir():
                _fsync_dir(path)
        final = partition_folder(self.data_dir, partition)
        if final.exists():
            stale = final.with_name(f"{INCOMING}{partition:04d}-stale")
            shutil.rmtree(stale, ignore_errors=True)
            final.rename(stale)
            shutil.rmtree(stale)
        folder.rename(final)
        _fsync_dir(final.parent)

    async def _undo(self, partition: int, epoch: int) -> None:
        self._drop(partition, epoch)
        if self.placed.get(partition) == epoch and not self.serving(partition):
            del self.placed[partition]
            await asyncio.to_thread(shutil.rmtree, partition_folder(self.data_dir, partition), True)

    def _drop(self, partition: int, epoch: int) -> None:
        incoming = self.incoming.pop((partition, epoch), None)
        if incoming is not None:
            if incoming.handle is not None:
                incoming.handle.close()
            shutil.rmtree(incoming.folder, ignore_errors=True)


# -- SIGTERM ------------------------------------------------------------------------------------
def drain_on_sigterm(
    loop: asyncio.AbstractEventLoop, drain: Callable[[], Coroutine[Any, Any, None]], timeout: float
) -> bool:
    """Make SIGTERM of this Ray worker run ``drain()`` on ``loop`` (at most ``timeout`` s)
    before Ray exits the process; False if this Ray offers no hook (SIGTERM then only stops).

    Why the detour: a Ray worker handles SIGTERM in its main thread by calling
    ``ray._private.worker.raise_sys_exit_with_custom_error_message``, and an async actor runs
    on another thread, where ``signal.signal`` is refused. So that function is wrapped: the
    main thread waits for the drain on the actor's loop, then exits as Ray would.
    """
    try:
        from ray._private import worker
    except ImportError:
        return False
    original = getattr(worker, _RAY_EXIT, None)
    if original is None:
        log.warning("this Ray version has no SIGTERM hook: SIGTERM stops without draining")
        return False

    def exit_after_drain(message: str, exit_code: int = 0) -> None:
        if "SIGTERM" in message:
            future = asyncio.run_coroutine_threadsafe(drain(), loop)
            try:
                future.result(timeout)
            except Exception:
                log.exception("the drain on SIGTERM did not finish")
        original(message, exit_code)

    setattr(worker, _RAY_EXIT, exit_after_drain)
    return True


_RAY_EXIT = "raise_sys_exit_with_custom_error_message"  # what a Ray worker's SIGTERM calls


# -- durable drain ------------------------------------------------------------------------------
Progress = Callable[[int, int, str], None]  # (done, total, what), as ``backup.Progress``


@dataclass(frozen=True)
class Drained:
    """What ``drain_node`` did: the node's home id, the partitions moved and those given up."""

    node: str
    moved: list[int]
    failed: dict[int, str]


def node_named(nodes: dict[int, tuple[str, str]], name: str) -> str:
    """The home id ``name`` stands for: a home id or a Ray node id (``nodes``: slot -> (home id,
    channel address), as ``DirectoryActor.nodes``), or a prefix matching exactly one node.

    >>> node_named({0: ("host/5f2a", "node=9c1e;unix=/s;tcp=10.0.0.2:7")}, "9c1")
    'host/5f2a'
    """
    known = {home: {home, Endpoint.parse(address).node} for home, address in nodes.values()}
    exact = {home for home, names in known.items() if name in names}
    matches = exact or {h for h, names in known.items() if any(n.startswith(name) for n in names)}
    if len(matches) != 1:
        listed = ", ".join(sorted(known)) or "none"
        what = "matches several nodes" if matches else "is no node of this cluster"
        raise ValueError(f"{name!r} {what} (home ids: {listed})")
    return matches.pop()


async def node_table(directory: Any) -> list[tuple[str, str, int, list[int]]]:
    """Per node: its home id, its Ray node ids, its slots and the partitions homed there
    (``durable nodes``)."""
    slots = await directory.nodes.remote()
    homes = (await directory.move_status.remote())["homes"]
    return [
        (
            home,
            " ".join(sorted({Endpoint.parse(a).node for h, a in slots.values() if h == home})),
            sum(h == home for h, _ in slots.values()),
            list(homes.get(home, [])),
        )
        for home in sorted({home for home, _ in slots.values()})
    ]


async def drain_node(
    directory: Any,
    name: str,
    progress: Progress | None = None,
    every: float = 0.2,
    timeout: float = DRAIN_TIMEOUT,
) -> Drained:
    """Plan moving every partition homed on node ``name`` elsewhere (``Directory.drain``) and
    follow the slots running the moves until each partition moved or was given up, or
    ``timeout`` seconds passed (those left are then failed: e.g. the node has no live slot, so
    nothing can copy its files)."""
    node = node_named(await directory.nodes.remote(), name)
    partitions = list(await directory.drain.remote(node))
    deadline = time.monotonic() + timeout
    while True:
        status = await directory.move_status.remote()
        left = set(status["homes"].get(node, []))
        failed = {p: why for p, why in status["failed"].items() if p in partitions}
        moved = [p for p in partitions if p not in left]
        if progress is not None:
            progress(len(moved) + len(failed), len(partitions), f"{len(moved)} moved")
        if len(moved) + len(failed) >= len(partitions):
            return Drained(node, moved, failed)
        if time.monotonic() > deadline:
            late = {p: f"not moved within {timeout:g} s" for p in left if p not in failed}
            return Drained(node, moved, {**failed, **late})
        await asyncio.sleep(every)
