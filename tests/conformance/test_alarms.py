"""Conformance: alarms (semantics.md, "Alarms"), on the virtual clock.

Decisions where the contracts are silent:

* `info.scheduled_time` is an `int` of epoch milliseconds, the same unit `get_alarm()` returns and
  `set_alarm()` takes, and it stays the originally scheduled time on every retry.
* Argument errors of `set_alarm` are `durable.errors.InvalidArgument` (a `TypeError` and a
  `ValueError`), re-raised at the caller with the reference messages in Python names.
* The retry gaps are measured with `ctx.now()` inside `alarm()` while the clock advances in 0.5 s
  steps, so each measured gap may be off by up to one step either way of 2^n s .. 1.25 × 2^n s.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import durable.errors as errors
from durable import DurableObject, Worker
from durable.testing import VirtualClock

CALLS: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


class AlarmProbe(DurableObject):
    async def set_alarm(self, when: Any) -> Any:
        return await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> Any:
        return await self.ctx.storage.get_alarm()

    async def delete_alarm(self) -> Any:
        return await self.ctx.storage.delete_alarm()

    async def set_then_get(self, when: Any) -> Any:
        await self.ctx.storage.set_alarm(when)
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: Any) -> None:
        CALLS.append(
            {
                "now": self.ctx.now(),
                "retry_count": info.retry_count,
                "is_retry": info.is_retry,
                "scheduled_time": info.scheduled_time,
                "get_alarm": await self.ctx.storage.get_alarm(),
                "name": self.ctx.id.name,
            }
        )


class FailingAlarm(AlarmProbe):
    async def alarm(self, info: Any) -> None:
        await super().alarm(info)
        raise RuntimeError("alarm boom")


class NoAlarm(DurableObject):
    async def set_alarm(self, when: Any) -> Any:
        return await self.ctx.storage.set_alarm(when)

    async def get_alarm(self) -> Any:
        return await self.ctx.storage.get_alarm()


@pytest.fixture
def worker() -> Worker:
    return Worker(objects={"ALARM": AlarmProbe, "FAILING": FailingAlarm, "NONE": NoAlarm})


def now_ms(clock: VirtualClock) -> int:
    return round(clock.now() * 1000)


async def test_get_alarm_returns_the_int_ms_that_was_set(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 50
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        assert await stub.set_alarm(t) is None
        got = await stub.get_alarm()
    assert got == t
    assert type(got) is int


async def test_alarm_fires_once_when_due_with_first_invocation_info(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 50
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        await stub.set_alarm(t)
        assert CALLS == []
        await clock.advance(0.05)
        assert len(CALLS) == 1
        call = CALLS[0]
        assert call["retry_count"] == 0
        assert call["is_retry"] is False
        assert call["scheduled_time"] == t
        assert type(call["scheduled_time"]) is int
        assert call["name"] == "a"
        assert call["now"] * 1000 >= t - 1
        await clock.advance(5)
        assert len(CALLS) == 1


async def test_get_alarm_is_none_inside_alarm_and_after(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        await stub.set_alarm(now_ms(clock) + 50)
        await clock.advance(0.05)
        assert [c["get_alarm"] for c in CALLS] == [None]
        assert await stub.get_alarm() is None


async def test_set_alarm_accepts_a_datetime(run: Any, worker: Worker, clock: VirtualClock) -> None:
    t = now_ms(clock) + 1000
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t)
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        assert await stub.set_alarm(when) is None
        assert await stub.get_alarm() == t
        await clock.advance(1)
        assert [c["scheduled_time"] for c in CALLS] == [t]


async def test_past_alarm_time_is_clamped_to_now_and_fires_at_once(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    now = now_ms(clock)
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        assert await stub.set_then_get(now - 10_000) == now
        await clock.advance(0)
        assert len(CALLS) == 1
        assert CALLS[0]["retry_count"] == 0
        assert await stub.get_alarm() is None


async def test_second_set_alarm_replaces_the_first(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    first, second = now_ms(clock) + 300, now_ms(clock) + 700
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        await stub.set_alarm(first)
        await stub.set_alarm(second)
        assert await stub.get_alarm() == second
        await clock.advance(0.3)
        assert CALLS == []
        await clock.advance(0.4)
        assert [c["scheduled_time"] for c in CALLS] == [second]
        await clock.advance(5)
        assert len(CALLS) == 1


async def test_delete_alarm_cancels_it(run: Any, worker: Worker, clock: VirtualClock) -> None:
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        await stub.set_alarm(now_ms(clock) + 50)
        assert await stub.delete_alarm() is None
        assert await stub.get_alarm() is None
        await clock.advance(1)
        assert CALLS == []


async def test_delete_alarm_without_an_alarm_returns_none(run: Any, worker: Worker) -> None:
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        assert await stub.delete_alarm() is None
        assert await stub.get_alarm() is None


@pytest.mark.parametrize("value", ["abc", "1700000000000", None])
async def test_set_alarm_rejects_values_that_are_not_dates(
    run: Any, worker: Worker, value: Any
) -> None:
    msg = (
        "Failed to execute 'set_alarm' on 'DurableObjectStorage': "
        "parameter 1 is not of type 'date'."
    )
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        with pytest.raises(errors.InvalidArgument, match=re.escape(msg)):
            await stub.set_alarm(value)
        assert await stub.get_alarm() is None


async def test_set_alarm_rejects_nan(run: Any, worker: Worker) -> None:
    msg = "The value cannot be converted because it is not a valid Date."
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        with pytest.raises(errors.InvalidArgument, match=re.escape(msg)):
            await stub.set_alarm(float("nan"))
        assert await stub.get_alarm() is None


@pytest.mark.parametrize("value", [-1, 0])
async def test_set_alarm_rejects_times_at_or_before_the_epoch(
    run: Any, worker: Worker, value: int
) -> None:
    msg = "set_alarm() cannot be called with an alarm time <= 0"
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        with pytest.raises(errors.InvalidArgument, match=re.escape(msg)):
            await stub.set_alarm(value)
        assert await stub.get_alarm() is None


async def test_set_alarm_drops_the_fraction_of_a_millisecond(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 1000
    async with run(worker) as env:
        stub = env.ALARM.get_by_name("a")
        await stub.set_alarm(t + 0.7)
        got = await stub.get_alarm()
    assert got == t
    assert type(got) is int


async def test_set_alarm_needs_an_alarm_handler(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    msg = "Your Durable Object class must have an alarm() handler in order to call set_alarm()"
    async with run(worker) as env:
        stub = env.NONE.get_by_name("a")
        with pytest.raises(errors.InvalidArgument, match=re.escape(msg)):
            await stub.set_alarm(now_ms(clock) + 50)
        assert await stub.get_alarm() is None


async def test_alarm_set_before_close_fires_after_reopening(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 5_000
    async with run(worker) as env:
        await env.ALARM.get_by_name("a").set_alarm(t)
    assert CALLS == []
    later = VirtualClock(start=clock.now() + 3)
    async with run(worker, clock=later) as env:
        await later.advance(1)
        assert CALLS == []
        await later.advance(1.5)
        assert [c["scheduled_time"] for c in CALLS] == [t]
        assert CALLS[0]["retry_count"] == 0
        assert await env.ALARM.get_by_name("a").get_alarm() is None


async def advance_until_calls(clock: VirtualClock, count: int, limit: float, step: float) -> None:
    elapsed = 0.0
    while len(CALLS) < count and elapsed < limit:
        await clock.advance(step)
        elapsed += step


async def test_failing_alarm_is_retried_6_times_with_exponential_backoff(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 50
    step = 0.5
    async with run(worker) as env:
        stub = env.FAILING.get_by_name("a")
        await stub.set_alarm(t)
        await advance_until_calls(clock, 7, limit=200, step=step)
        assert [(c["retry_count"], c["is_retry"]) for c in CALLS] == [
            (0, False),
            (1, True),
            (2, True),
            (3, True),
            (4, True),
            (5, True),
            (6, True),
        ]
        assert {c["scheduled_time"] for c in CALLS} == {t}
        assert all(c["get_alarm"] is None for c in CALLS)
        times = [c["now"] for c in CALLS]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for n, gap in enumerate(gaps, start=1):
            assert 2**n - step <= gap <= 1.25 * 2**n + step, (n, gaps)
        await clock.advance(300)
        assert len(CALLS) == 7
        assert await stub.get_alarm() is None


async def test_get_alarm_from_outside_during_retries_returns_the_original_time(
    run: Any, worker: Worker, clock: VirtualClock
) -> None:
    t = now_ms(clock) + 50
    async with run(worker) as env:
        stub = env.FAILING.get_by_name("a")
        await stub.set_alarm(t)
        await clock.advance(0.05)
        assert len(CALLS) == 1
        assert await stub.get_alarm() == t
