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
import ctypes
import threading
import time
from collections import deque
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from durable.errors import CpuTimeExceeded, ObjectReset

if TYPE_CHECKING:
    from durable.cache import ObjectCache

T = TypeVar("T")


class InputGate:
    """Holds events that have not started while ``block_concurrency_while`` runs."""

    def __init__(self) -> None:
        self._locks = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.broken: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._locks > 0

    def close(self) -> None:
        self._locks += 1

    def open(self) -> None:
        self._locks -= 1
        while not self._locks and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def break_(self, error: BaseException) -> None:
        self.broken = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def enter(self) -> None:
        if self.broken is not None:
            raise self.broken
        if self._locks:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


async def wait_durable(cache: ObjectCache) -> None:
    """The output gate: wait for the commit of every write buffered so far."""
    round_ = cache.round
    if round_ is None:
        return
    failed = await asyncio.shield(round_) if not round_.done() else round_.result()
    if cache in failed:
        raise ObjectReset("a storage write failed to commit; the write was not acknowledged")


class _Interrupt(BaseException):
    """Raised by the watchdog thread inside a step that overran the CPU limit."""


class CpuGuard:
    """Watches the step that is running now; one daemon thread per guard."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step: tuple[int, float, float] | None = None  # (thread id, started, limit seconds)
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
            with self._lock:
                step = self._step
                if step is None or time.perf_counter() - step[1] <= step[2]:
                    continue
                self._step = None
                self.interrupts += 1
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(step[0]), ctypes.py_object(_Interrupt)
                )

    def metered(self, coro: Coroutine[Any, Any, T], limit_ms: int) -> Coroutine[Any, Any, T]:
        return _Metered(self, coro, limit_ms / 1000.0).run()

    def _enter(self, limit: float) -> tuple[int, float, float] | None:
        with self._lock:
            outer = self._step
            self._step = (threading.get_ident(), time.perf_counter(), limit)
            return outer

    def _leave(self, outer: tuple[int, float, float] | None) -> None:
        with self._lock:
            self._step = outer


class _Metered:
    """Drives a coroutine one step at a time, timing each step."""

    def __init__(self, guard: CpuGuard, coro: Coroutine[Any, Any, Any], limit: float) -> None:
        self.guard = guard
        self.coro = coro
        self.limit = limit
        self.used = 0.0

    async def run(self) -> Any:
        return await _Steps(self)


class _Steps:
    def __init__(self, meter: _Metered) -> None:
        self.meter = meter

    def __await__(self) -> Generator[Any, Any, Any]:
        m = self.meter
        send: Any = None
        throw: BaseException | None = None
        while True:
            outer = m.guard._enter(m.limit - m.used)
            started = time.perf_counter()
            try:
                yielded = m.coro.throw(throw) if throw is not None else m.coro.send(send)
            except StopIteration as done:
                return done.value
            except _Interrupt:
                m.coro.close()
                raise CpuTimeExceeded(int(m.limit * 1000)) from None
            finally:
                m.guard._leave(outer)
                m.used += time.perf_counter() - started
            if m.used > m.limit:
                m.coro.close()
                raise CpuTimeExceeded(int(m.limit * 1000))
            try:
                send, throw = (yield yielded), None
            except BaseException as e:  # cancellation and errors go into the coroutine
                send, throw = None, e
