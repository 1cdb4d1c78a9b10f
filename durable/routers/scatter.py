"""Scatter-gather: call every shard at once and gather what answered in time.

``await router.scatter(fn, timeout=2.0)`` runs ``fn(stub)`` for every object of the router
concurrently and returns a ``ScatterResult``::

    result = await board.scatter(lambda shard: shard.top(10), timeout=0.5)
    best = sorted(p for top in result.results.values() for p in top)[-10:]
    if not result.complete:
        log.warning("partial leaderboard: %s", result.errors)   # {"shard-3": TimeoutError(...)}

Guarantees:
- Every call starts before any is awaited; the result holds each shard's value or its error,
  never both, keyed by object name, in the router's order.
- The deadline is one ``timeout`` for the whole scatter, read from the router's clock (virtual in
  tests): calls still running then are cancelled and reported as ``TimeoutError``.
- Cancelling the scatter cancels every call it started.

Does not guarantee: a cancelled call may or may not have run in its object (as ``ConnectionLost``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from durable.clock import Clock, SystemClock
from durable.errors import InvalidArgument
from durable.namespace import Stub

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScatterResult(Generic[T]):
    """What a scatter gathered: values of the shards that answered, errors of the others."""

    results: Mapping[str, T]
    errors: Mapping[str, BaseException]

    @property
    def complete(self) -> bool:
        """Every shard answered."""
        return not self.errors


async def scatter(
    stubs: Mapping[str, Stub],
    fn: Callable[[Stub], Awaitable[T]],
    *,
    timeout: float,
    clock: Clock | None = None,
) -> ScatterResult[T]:
    """Run ``fn(stub)`` for every ``name: stub`` at once; gather within ``timeout`` seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidArgument(f"scatter() timeout must be a positive number, not {timeout!r}.")
    clock = clock or SystemClock()
    loop = asyncio.get_running_loop()
    tasks = {name: loop.create_task(_call(fn, stub)) for name, stub in stubs.items()}
    deadline: asyncio.Future[None] = loop.create_future()

    def expire() -> None:
        if not deadline.done():
            deadline.set_result(None)

    timer = clock.call_at(clock.now() + timeout, expire)
    pending: set[asyncio.Future[Any]] = set(tasks.values())
    try:
        while pending and not deadline.done():
            _, pending = await asyncio.wait(
                {*pending, deadline}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(deadline)
    finally:
        timer.cancel()
        deadline.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}
    for name, task in tasks.items():
        if task.cancelled():
            errors[name] = TimeoutError(
                f"{name} did not answer within {timeout} s; its call was cancelled."
            )
        elif task.exception() is not None:
            errors[name] = task.exception()  # type: ignore[assignment]
        else:
            results[name] = task.result()
    return ScatterResult(results, errors)


async def _call(fn: Callable[[Stub], Awaitable[T]], stub: Stub) -> T:
    return await fn(stub)
