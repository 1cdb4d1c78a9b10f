"""Input and output gates, and the CPU guard that bounds how long one event holds the loop.

Guarantees:
- Input gate: storage calls never yield (``storage.py``), so between two awaits of anything else
  an event runs alone. ``InputGate.close()`` (``block_concurrency_while``) additionally holds every
  event that has not started yet; held events start in arrival order when it opens. A broken
  gate stays broken: every held event gets the error (workerd's ``InputGate::Lock`` semantics).
- Output gate: ``wait_durable(cache)`` returns once the commit holding every write the object
  buffered so far succeeded, or raises ``ObjectReset`` if it failed; replies and outgoing calls
  wait on it, so nothing leaves an object ahead of its writes.
- CPU guard: ``metered(coro)`` runs a coroutine step by step and raises ``CpuTimeExceeded`` in it
  when one step runs longer than the limit (a watchdog thread interrupts the stuck step) or when
  its steps add up past the limit.

Does not guarantee: the CPU guard measures wall time while the event holds the loop, not CPU
time of the process; a step blocked inside a C call that never returns to Python cannot be
interrupted.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from durable.errors import CpuTimeExceeded, ObjectReset

if TYPE_CHECKING:
    from durable.activation import Activation
    from durable.cache import ObjectCache

T = TypeVar("T")

# The activation whose handler is running in this task: outgoing calls and WebSocket sends wait
# for its output gate first.
current_activation: contextvars.ContextVar[Activation | None] = contextvars.ContextVar(
    "durable_current_activation", default=None
)


class InputGate:
    """Holds events that have not started while ``block_concurrency_while`` runs."""

    __slots__ = ("_locks", "_waiters", "broken")

    def __init__(self) -> None:
        self._locks = 0
        self._waiters: list[asyncio.Future[None]] = []  # a list: most gates never hold anyone
        self.broken: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._locks > 0

    def close(self) -> None:
        self._locks += 1

    def open(self) -> None:
        self._locks -= 1
        if not self._locks:
            self._release(None)

    def break_(self, error: BaseException) -> None:
        self.broken = error
        self._release(error)

    def _release(self, error: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:  # in arrival order
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def enter(self) -> None:
        if self.broken is not None:
            raise self.broken
        if self._locks:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class _Outcome(asyncio.Future[None]):
    """A round's outcome, awaited by every caller of the round (one future, not one each).

    ``cancel()`` refuses, so cancelling one caller's task never cancels the others' wait: the
    task is marked cancelled and gets ``CancelledError`` when the round ends, which is the
    commit at the end of the loop turn (asyncio's ``Task.cancel`` contract for a waiter that
    cannot be cancelled)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class CommitRound:
    """One group commit: every object whose writes it holds learns its outcome together."""

    __slots__ = ("_outcome", "done", "failed")

    def __init__(self) -> None:
        self.done = False
        self.failed: set[ObjectCache] = set()
        self._outcome: _Outcome | None = None

    async def wait(self, cache: ObjectCache) -> None:
        if not self.done:
            await self.join()
        self.check(cache)

    def join(self) -> asyncio.Future[None]:
        """The future of the round's end (shared by its callers; it cannot be cancelled)."""
        if self._outcome is None:
            self._outcome = _Outcome(loop=asyncio.get_running_loop())
        return self._outcome

    def check(self, cache: ObjectCache) -> None:
        """After the round: ``ObjectReset`` if ``cache``'s writes failed to commit."""
        if cache in self.failed:
            raise ObjectReset("a storage write failed to commit; the write was not acknowledged")

    def finish(self, failed: set[ObjectCache]) -> None:
        self.done = True
        self.failed |= failed
        if self._outcome is not None:
            self._outcome.set_result(None)


async def wait_durable(cache: ObjectCache, observed: bool = True) -> None:
    """The output gate: wait for the commit of every write buffered so far. ``observed=False``
    (the end of an alarm event, which has no caller) leaves deferred writes deferred."""
    if observed:
        cache.host.commits.expedite(cache)
    round_ = cache.round
    if round_ is not None:
        await round_.wait(cache)


class _Interrupt(BaseException):
    """Raised by the watchdog thread inside a step that overran the CPU limit."""


class CpuGuard:
    """Watches the step that runs now; one daemon thread per guard.

    The running step is published as one tuple in one attribute (a single store, atomic under
    the GIL), so steps pay no lock; the watchdog fires only if the very same tuple is still
    published, checked immediately before the (GIL-holding) interrupt call.
    """

    def __init__(self) -> None:
        self.step: tuple[int, float, float] | None = None  # (thread id, started, limit seconds)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.interrupts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="durable-cpu-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            step = self.step
            if step is None or time.perf_counter() - step[1] <= step[2]:
                continue
            if self.step is step:
                self.step = None
                self.interrupts += 1
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(step[0]), ctypes.py_object(_Interrupt)
                )

    def metered(self, coro: Coroutine[Any, Any, T], limit_ms: int) -> _Steps:
        """Run ``coro``'s first step now (most events finish in it: storage never yields);
        if it is not done, await the returned ``_Steps`` for the rest."""
        return _Steps(self, coro, limit_ms / 1000.0).first()


class _Steps:
    """Drives a coroutine one step at a time, timing each step against the event's budget.
    ``done`` and ``value`` tell whether the first step finished it."""

    __slots__ = ("coro", "done", "guard", "limit", "pending", "used", "value")

    def __init__(self, guard: CpuGuard, coro: Coroutine[Any, Any, Any], limit: float) -> None:
        self.guard = guard
        self.coro = coro
        self.limit = limit
        self.used = 0.0
        self.done = False
        self.value: Any = None
        self.pending: Any = None  # what the first step yielded, passed on by __await__

    def first(self) -> _Steps:
        finished, self.pending = self._step(None, None)
        if finished:
            self.done, self.value = True, self.pending
        return self

    def _step(self, send: Any, throw: BaseException | None) -> tuple[bool, Any]:
        """One step: (True, result) when the coroutine returned, else (False, what it yielded)."""
        guard, coro = self.guard, self.coro
        outer = guard.step
        started = time.perf_counter()
        guard.step = (threading.get_ident(), started, self.limit - self.used)
        try:
            yielded = coro.throw(throw) if throw is not None else coro.send(send)
        except StopIteration as stopped:
            return True, stopped.value
        except _Interrupt:
            coro.close()
            raise CpuTimeExceeded(int(self.limit * 1000)) from None
        finally:
            guard.step = outer
            self.used += time.perf_counter() - started
        if self.used > self.limit:
            coro.close()
            raise CpuTimeExceeded(int(self.limit * 1000))
        return False, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        if self.done:
            return self.value
        yielded = self.pending
        while True:
            try:
                send, throw = (yield yielded), None
            except BaseException as e:  # cancellation and errors go into the coroutine
                send, throw = None, e
            finished, yielded = self._step(send, throw)
            if finished:
                return yielded
