"""Cron triggers: crontab parsing on top of APScheduler, validation, firing on the virtual clock."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger

import durable
from durable.cron import CronSchedule, CronScheduler, ScheduledEvent
from durable.testing import VirtualClock
from tests.conftest import Runner

MONDAY = datetime(2024, 1, 1, tzinfo=UTC).timestamp()  # Monday 2024-01-01 00:00 UTC


def occurrences(expression: str, count: int = 4, after: float = MONDAY) -> list[str]:
    schedule = CronSchedule.parse(expression)
    found = []
    for _ in range(count):
        when = schedule.next_after(after)
        assert when is not None
        found.append(datetime.fromtimestamp(when, UTC).strftime("%a %d %H:%M"))
        after = when
    return found


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_apscheduler_alone_reads_weekday_0_as_monday() -> None:
    """Why day of week is translated: APScheduler 3's from_crontab disagrees with crontab."""
    trigger = CronTrigger.from_crontab("0 12 * * 0", timezone=UTC)
    first = trigger.get_next_fire_time(None, datetime(2024, 1, 1, tzinfo=UTC))
    assert first.strftime("%a") == "Mon"
    assert occurrences("0 12 * * 0", 1) == ["Sun 07 12:00"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 12 * * 0", ["Sun 07 12:00", "Sun 14 12:00", "Sun 21 12:00", "Sun 28 12:00"]),
        ("0 12 * * 7", ["Sun 07 12:00", "Sun 14 12:00", "Sun 21 12:00", "Sun 28 12:00"]),
        ("0 12 * * 1", ["Mon 01 12:00", "Mon 08 12:00", "Mon 15 12:00", "Mon 22 12:00"]),
        ("0 12 * * 6", ["Sat 06 12:00", "Sat 13 12:00", "Sat 20 12:00", "Sat 27 12:00"]),
        ("0 0 * * 1-5", ["Tue 02 00:00", "Wed 03 00:00", "Thu 04 00:00", "Fri 05 00:00"]),
        ("0 0 * * 0-6/2", ["Tue 02 00:00", "Thu 04 00:00", "Sat 06 00:00", "Sun 07 00:00"]),
        ("0 0 * * */3", ["Wed 03 00:00", "Sat 06 00:00", "Sun 07 00:00", "Wed 10 00:00"]),
        ("0 0 * * 5-7", ["Fri 05 00:00", "Sat 06 00:00", "Sun 07 00:00", "Fri 12 00:00"]),
        ("0 0 * * 0,3", ["Wed 03 00:00", "Sun 07 00:00", "Wed 10 00:00", "Sun 14 00:00"]),
        ("0 0 * * 3/2", ["Wed 03 00:00", "Fri 05 00:00", "Wed 10 00:00", "Fri 12 00:00"]),
        ("0 0 * * mon-fri/2", ["Wed 03 00:00", "Fri 05 00:00", "Mon 08 00:00", "Wed 10 00:00"]),
        ("0 0 * * SUN,Sat", ["Sat 06 00:00", "Sun 07 00:00", "Sat 13 00:00", "Sun 14 00:00"]),
        ("0 0 * * fri-sun", ["Fri 05 00:00", "Sat 06 00:00", "Sun 07 00:00", "Fri 12 00:00"]),
    ],
)  # fmt: skip
def test_day_of_week_follows_crontab_numbering(expression: str, expected: list[str]) -> None:
    assert occurrences(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Quartz/Cloudflare extensions: last weekday of the month, nth weekday, last day.
        ("0 18 * * friL", ["Fri 26 18:00", "Fri 23 18:00", "Fri 29 18:00", "Fri 26 18:00"]),
        ("0 18 * * 5L", ["Fri 26 18:00", "Fri 23 18:00", "Fri 29 18:00", "Fri 26 18:00"]),
        ("0 10 * * mon#2", ["Mon 08 10:00", "Mon 12 10:00", "Mon 11 10:00", "Mon 08 10:00"]),
        ("59 23 L * *", ["Wed 31 23:59", "Thu 29 23:59", "Sun 31 23:59", "Tue 30 23:59"]),
        # Both day fields restricted: either matches (Vixie cron), here Fridays or the 13th.
        ("0 0 13 * fri", ["Fri 05 00:00", "Fri 12 00:00", "Sat 13 00:00", "Fri 19 00:00"]),
        # One day field starts with * (here */2): then both must match, as in Vixie cron.
        ("0 0 */2 * mon", ["Mon 01 00:00", "Mon 15 00:00", "Mon 29 00:00", "Mon 05 00:00"]),
        ("0 0 1 jan-dec/3 *", ["Mon 01 00:00", "Mon 01 00:00", "Mon 01 00:00", "Tue 01 00:00"]),
        ("*/20 9-10 * * *", ["Mon 01 09:00", "Mon 01 09:20", "Mon 01 09:40", "Mon 01 10:00"]),
    ],
)  # fmt: skip
def test_extensions_and_day_field_union(expression: str, expected: list[str]) -> None:
    assert occurrences(expression, after=MONDAY - 1) == expected


def test_next_occurrence_is_strictly_after_the_given_time() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    assert schedule.next_after(epoch("2024-01-01T00:05:00")) == epoch("2024-01-01T00:10:00")
    assert schedule.next_after(epoch("2024-01-01T00:04:59.9")) == epoch("2024-01-01T00:05:00")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "cron schedule '* * *' must have 5 fields."),
        (5, "cron schedule must be a str like '*/5 * * * *', not 5."),
        ("61 * * * *", "cron schedule '61 * * * *' is invalid: Error validating expression '61': the last value (61) is higher than the maximum value (59)"),
        ("* 24 * * *", "is invalid: Error validating expression '24': the last value (24) is higher than the maximum value (23)"),
        ("*/0 * * * *", "is invalid: Increment must be higher than 0"),
        ("0 0 0 * *", "is invalid: Error validating expression '0': the first value (0) is lower than the minimum value (1)"),
        ("0 0 * foo *", 'is invalid: Invalid month name "foo"'),
        ("0 0 * * 8", 'is invalid: Unrecognized expression "8" for field "day_of_week"'),
        ("0 0 * * xyz", 'is invalid: Invalid weekday name "xyz"'),
        ("0 0 * * 5-1", 'is invalid: The day-of-week range "5-1" runs backwards'),
        ("0 0 * * mon#6", 'is invalid: The week number in "#6" must be between 1 and 5'),
        ("0 0 LW * *", 'is invalid: Unrecognized expression "LW" for field "day"'),
        ("0 0 */2 * */2,friL", "is invalid: a day of month cannot be combined with L or # in day of week"),
        ("0 0 31 2 *", "cron schedule '0 0 31 2 *' never fires."),
    ],
)  # fmt: skip
def test_worker_refuses_bad_schedules_with_the_reason(expression: Any, message: str) -> None:
    worker = durable.Worker()
    with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
        worker.cron(expression)
    assert worker.crons == []


# -- firing ----------------------------------------------------------------------------------------
def _worker(*schedules: str, fail: set[int] | None = None) -> tuple[durable.Worker, list[Any]]:
    """A worker whose handlers record ``(now, event)``; calls numbered in ``fail`` raise."""
    worker = durable.Worker()
    seen: list[Any] = []
    for schedule in schedules:

        @worker.cron(schedule)
        async def handler(event: ScheduledEvent, env: Any) -> None:
            seen.append(event)
            if fail and len(seen) in fail:
                raise RuntimeError(f"cron boom {len(seen)}")

    return worker, seen


async def test_crons_fire_in_time_order_with_their_event() -> None:
    clock = VirtualClock(start=epoch("2024-01-01T00:01:00"))
    worker, seen = _worker("*/2 * * * *", "*/3 * * * *")
    crons = CronScheduler(worker, None, clock)
    crons.start()
    await clock.advance(7 * 60)
    minutes = [(e.scheduled_time - epoch("2024-01-01T00:00:00") * 1000) / 60_000 for e in seen]
    assert minutes == [2, 3, 4, 6, 6, 8]
    assert sorted(e.cron for e in seen[3:5]) == ["*/2 * * * *", "*/3 * * * *"]
    assert all(isinstance(e.scheduled_time, int) for e in seen)
    assert crons.statistics().next_fire_time == epoch("2024-01-01T00:09:00")
    await crons.close()


async def test_advance_awaits_each_handler_before_the_next() -> None:
    clock = VirtualClock(start=epoch("2024-01-01T00:00:30"))
    worker = durable.Worker()
    log: list[str] = []

    @worker.cron("* * * * *")
    async def slow(event: ScheduledEvent, env: Any) -> None:
        log.append(f"start {event.scheduled_time // 60_000 % 60}")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append(f"end {event.scheduled_time // 60_000 % 60}")

    crons = CronScheduler(worker, None, clock)
    crons.start()
    await clock.advance(120)
    assert log == ["start 1", "end 1", "start 2", "end 2"]
    await crons.close()


async def test_failing_handler_is_logged_and_counted_and_the_next_still_fires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock(start=epoch("2024-01-01T00:00:30"))
    worker, seen = _worker("* * * * *", fail={1})
    crons = CronScheduler(worker, None, clock)
    crons.start()
    with caplog.at_level(logging.ERROR, logger="durable.cron"):
        await clock.advance(180)
    assert len(seen) == 3
    stats = crons.statistics()
    assert (stats.schedules, stats.fired, stats.failed, stats.running) == (1, 3, 1, 0)
    assert "cron handler" in caplog.text and "cron boom 1" in caplog.text
    await crons.close()


async def test_first_occurrence_is_after_start_and_nothing_is_backfilled() -> None:
    clock = VirtualClock(start=epoch("2024-01-01T00:05:00"))
    worker, seen = _worker("*/5 * * * *")
    crons = CronScheduler(worker, None, clock)
    crons.start()
    await clock.advance(299)
    assert seen == []
    await clock.advance(1)
    assert [e.scheduled_time for e in seen] == [int(epoch("2024-01-01T00:10:00") * 1000)]
    await crons.close()


async def test_close_cancels_timers_and_running_handlers() -> None:
    clock = VirtualClock(start=epoch("2024-01-01T00:00:30"))
    worker = durable.Worker()
    started = asyncio.Event()
    cancelled: list[bool] = []

    @worker.cron("* * * * *")
    async def stuck(event: ScheduledEvent, env: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    crons = CronScheduler(worker, None, clock)
    crons.start()
    advancing = asyncio.ensure_future(clock.advance(60))
    await asyncio.wait_for(started.wait(), timeout=10)
    assert crons.statistics().running == 1
    await crons.close()
    await advancing  # the clock's wait ends with the cancelled handler
    assert cancelled == [True]
    assert clock.pending() == 0
    assert crons.statistics() == durable.cron.CronStatistics(1, 1, 0, 0, None)
    with pytest.raises(RuntimeError, match="start\\(\\) on a closed scheduler"):
        crons.start()


class Tally(durable.DurableObject):
    async def add(self) -> int:
        n = int(await self.ctx.storage.get("n", 0)) + 1
        await self.ctx.storage.put("n", n)
        return n


async def test_connect_runs_crons_with_env_and_stops_them_on_exit(
    run: Runner, clock: VirtualClock
) -> None:
    worker = durable.Worker(objects={"TALLY": Tally})
    events: list[ScheduledEvent] = []

    @worker.cron("*/10 * * * *")
    async def tick(event: ScheduledEvent, env: Any) -> None:
        events.append(event)
        await env.TALLY.get_by_name("ticks").add()

    async with run(worker) as env:
        await clock.advance(3600)
        assert await env.TALLY.get_by_name("ticks").add() == 7  # six ticks, then this call
    assert len(events) == 6 and {e.cron for e in events} == {"*/10 * * * *"}
    assert clock.pending() == 0  # every timer (crons, alarms, sweep) cancelled on exit
