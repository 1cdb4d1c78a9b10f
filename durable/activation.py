"""An activation: one live instance of an object, from its first event to eviction or reset.

Guarantees:
- Events start in arrival order: ``invoke`` runs the handler in the caller's task without
  yielding first, so calls issued in order start in order; held events (input gate closed) are
  released in order.
- At most ``Limits.max_pending_events`` events are in an activation at once; one more raises
  ``Overloaded`` before it is delivered.
- A reply leaves ``invoke`` only after the output gate (``gates.wait_durable``).
- A reset (``block_concurrency_while`` failure or timeout, ``abort()``, CPU limit, failed commit)
  is sticky: every event of this activation fails with the reset's error, the host forgets the
  activation, and the next event builds a new one (``__init__`` runs again).

Does not guarantee: an event cancelled by its caller stops at its next await; writes it made
before are kept (as a handler that raises).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from durable.cache import ObjectCache
from durable.errors import CpuTimeExceeded, ObjectReset, Overloaded, RemoteError, StorageFull
from durable.gates import InputGate, current_activation
from durable.limits import Limits
from durable.object import DurableObject, ObjectState
from durable.storage import Storage

if TYPE_CHECKING:
    from durable.clock import Clock
    from durable.host import Host
    from durable.ids import ObjectId

T = TypeVar("T")
BCW_TIMEOUT = 30.0


class ActivationState(Enum):
    """Lifecycle of an activation."""

    ACTIVE = "active"  # serving events; -> BROKEN (reset) or EVICTED (idle, memory)
    BROKEN = "broken"  # reset: every event fails; final
    EVICTED = "evicted"  # dropped by the host; final


class Activation:
    """The live instance of one object and its per-instance machinery."""

    def __init__(
        self,
        host: Host,
        cls: type[DurableObject],
        oid: ObjectId,
        cache: ObjectCache,
        storage: Storage,
        limits: Limits,
        idle_timeout: float,
        idle_group: OrderedDict[ObjectId, Activation],
    ) -> None:
        self.host = host
        self.oid = oid
        self.cache = cache
        self.storage = storage
        self.limits = limits
        self.env = host.env
        self.clock: Clock = host.clock
        self.state = ActivationState.ACTIVE
        self.gate = InputGate()
        self.pending = 0
        self.alarm_events = 0  # of the pending events, how many are alarms (no caller waits)
        self.tasks: set[asyncio.Future[Any]] = set()
        self.last_active = self.clock.now()
        self.retry_alarm = True
        self.idle_timeout = idle_timeout  # seconds without events before eviction
        self.idle_group = idle_group  # the host's last-activity order for that timeout
        self.instance = self._construct(cls)

    def _construct(self, cls: type[DurableObject]) -> DurableObject:
        instance = cls.__new__(cls)
        instance.ctx = ObjectState(self)  # set before __init__ so ctx works in subclasses' init
        instance.env = self.env
        instance.__init__(instance.ctx, self.env)  # type: ignore[misc]
        return instance

    @property
    def idle(self) -> bool:
        """No event in flight and no ``wait_until``/blocking work: safe to evict."""
        return not self.pending and not self.tasks and not self.gate.closed

    async def invoke(self, handler: Callable[[], Coroutine[Any, Any, T]], alarm: bool = False) -> T:
        """Run one event: input gate, the handler under the CPU guard, then the output gate
        (an ``alarm`` event's writes may be deferred: ``GroupCommit.mark_dirty``).

        Errors a caller can act on: ``StorageFull`` rather than the reset it caused, and a user
        ``BaseException`` (which would otherwise escape every ``except Exception`` up to the
        server) as a reset and a ``RemoteError``."""
        if self.pending >= self.limits.max_pending_events:
            raise Overloaded(f"Durable Object {self.oid}", self.limits.max_pending_events)
        self.pending += 1
        self.alarm_events += alarm
        try:
            gate = self.gate
            if gate.closed or gate.broken is not None:
                await gate.enter()
            token = current_activation.set(self)
            try:
                steps = self.host.guard.metered(handler(), self.limits.cpu_ms)
                result: T = steps.value if steps.done else await steps
            except Exception as error:
                error.remote = True  # type: ignore[attr-defined]
                raise
            finally:
                current_activation.reset(token)
            if gate.broken is not None:
                raise gate.broken
            # The output gate (gates.wait_durable), inline: one frame fewer to resume.
            cache = self.cache
            if not alarm:
                self.host.commits.expedite(cache)
            round_ = cache.round
            if round_ is not None:
                if not round_.done:
                    await round_.join()
                round_.check(cache)
            return result
        except ObjectReset as error:
            self._on_error(error)
            if isinstance(gate.broken, StorageFull):
                raise StorageFull(gate.broken.path) from None
            raise
        except (Exception, asyncio.CancelledError, GeneratorExit) as error:
            self._on_error(error)
            raise
        except BaseException as error:
            self.reset(ObjectReset(f"it raised {type(error).__name__}"))
            remote = RemoteError(type(error).__name__, str(error))
            remote.remote = True
            raise remote from None
        finally:
            self.pending -= 1
            self.alarm_events -= alarm
            self.last_active = self.clock.now()
            self.host.touched(self)

    def _on_error(self, error: BaseException) -> None:
        active = self.state is ActivationState.ACTIVE
        if active and isinstance(error, CpuTimeExceeded | ObjectReset):
            self.reset(error)

    def evicted(self) -> None:
        """The host dropped this idle activation. Dropping the instance breaks the one cycle
        (instance -> ctx -> activation -> instance), so reference counting frees it all now,
        without waiting for the cyclic collector (``collector.py``)."""
        self.state = ActivationState.EVICTED
        del self.instance

    def reset(self, error: BaseException) -> None:
        """Break this activation: pending and later events fail with ``error``."""
        if self.state is not ActivationState.ACTIVE:
            return
        self.state = ActivationState.BROKEN
        error.durable_object_reset = True  # type: ignore[attr-defined]
        self.gate.break_(error)
        self.host.forget(self)

    # -- ctx controls -----------------------------------------------------------------------------
    def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        self.gate.close()
        task = asyncio.ensure_future(self._blocking(fn))
        self.tasks.add(task)
        task.add_done_callback(self._blocking_done)
        return task

    async def _blocking(self, fn: Callable[[], Awaitable[T]]) -> T:
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        # The 30 s limit runs on the injected clock, so tests can advance past it.
        timer = self.clock.call_at(self.clock.now() + BCW_TIMEOUT, expire)
        try:
            return await fn()
        except BaseException as raised:
            error = raised
            if expired:
                error = ObjectReset("block_concurrency_while() callback ran longer than 30 s")
            error.remote = True  # type: ignore[attr-defined]
            self.reset(error)
            raise error from None
        finally:
            timer.cancel()

    def _blocking_done(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        self.gate.open()
        if not task.cancelled():
            task.exception()  # retrieved: the error reaches callers through the broken gate

    def wait_until(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        self.last_active = self.clock.now()
        self.host.touched(self)
        if not task.cancelled() and task.exception() is not None:
            self.host.log_background_error(self, task.exception())

    def abort(self, reason: str | None, *, retry_alarm: bool) -> None:
        self.retry_alarm = retry_alarm
        error = ObjectReset(reason or "ctx.abort() was called")
        self.reset(error)
        raise error
