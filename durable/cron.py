"""Cron triggers: ``@worker.cron("*/5 * * * *")`` handlers fired on the injected clock.

A schedule is five crontab fields (minute, hour, day of month, month, day of week), in UTC as
Cloudflare's Cron Triggers. APScheduler 3's ``CronTrigger`` computes the next fire times, after
two translations, because APScheduler 3 reads some crontab text differently:

- Day of week is crontab's: ``0``-``7`` with ``0`` and ``7`` Sunday, names ``sun``-``sat``,
  ranges, lists and steps. APScheduler 3 numbers Monday 0 and silently drops a step after a name
  range (``mon-fri/2``), so the field is expanded here to an explicit list of names. Quartz's
  ``friL`` (last Friday of the month) and ``mon#2`` (second Monday), which Cloudflare accepts,
  become APScheduler's ``last fri`` and ``2nd mon``.
- Month names become numbers (APScheduler drops the step after a month-name range too).
- Day of month ``L`` becomes APScheduler's ``last``.
- When both day of month and day of week are restricted (neither starts with ``*``), a day
  matches if *either* matches, as in Vixie cron; APScheduler alone would require both. The
  schedule is then the union of two triggers.

Cloudflare's production parser numbers weekdays Quartz-style (1 = Sunday … 7 = Saturday); this
module follows crontab (and Miniflare/wrangler's local runtime), where 1 is Monday. Weekday names
mean the same everywhere: prefer them.

Guarantees:
- A schedule is checked when the Worker registers it: ``InvalidArgument`` with the reason
  (APScheduler's, or this module's for day of week), and a schedule that can never fire
  (``0 0 31 2 *``) is refused.
- Each schedule has one clock timer at its next occurrence; when it fires, the following
  occurrence is armed first, then ``handler(event, env)`` runs as a task. ``VirtualClock.advance``
  therefore runs every occurrence in its span, in time order, awaiting each handler.
- ``event.cron`` is the schedule string as registered; ``event.scheduled_time`` is the occurrence
  in epoch milliseconds (an int), not the time the handler started.
- ``close()`` cancels the timers and every running handler and waits for them.

Does not guarantee:
- Occurrences missed while the process was down or its loop was blocked are not run afterwards
  (Cloudflare does not backfill either); a slow handler may overlap the next occurrence.
- A single runner per cluster: each ``connect`` runs its worker's crons.

On failure: an exception in a handler is logged and counted (``statistics().failed``); the next
occurrence fires as usual.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.cron import CronTrigger

from durable.clock import Clock, Timer
from durable.errors import InvalidArgument

if TYPE_CHECKING:
    from durable.worker import CronSpec, Worker

log = logging.getLogger("durable.cron")

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 = Sunday
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th")
_DAY = r"(?:[0-7]|[a-z]{3})"
_RANGE = re.compile(rf"(?:(?P<all>\*)|(?P<first>{_DAY})(?:-(?P<last>{_DAY}))?)(?:/(?P<step>\d+))?")
_LAST = re.compile(rf"(?P<day>{_DAY})l")
_NTH = re.compile(rf"(?P<day>{_DAY})#(?P<n>\d+)")


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """What a cron handler receives: ``handler(event, env)``."""

    cron: str  # the schedule string, as registered
    scheduled_time: int  # the occurrence, epoch milliseconds


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed schedule: the union of one or two APScheduler triggers.

    >>> CronSchedule.parse("0 12 * * 0").next_after(1704067200.0)  # Mon 2024-01-01 00:00 UTC
    1704628800.0
    """

    expression: str
    triggers: tuple[Any, ...]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse five crontab fields; ``InvalidArgument`` saying why if they are not valid."""
        if not isinstance(expression, str):
            raise InvalidArgument(
                f"cron schedule must be a str like '*/5 * * * *', not {expression!r}."
            )
        fields = expression.split()
        if len(fields) != 5:
            raise InvalidArgument(f"cron schedule {expression!r} must have 5 fields.")
        try:
            triggers = tuple(CronTrigger(**kw, timezone=UTC) for kw in _trigger_fields(*fields))
        except ValueError as error:
            raise InvalidArgument(f"cron schedule {expression!r} is invalid: {error}") from None
        schedule = cls(expression, triggers)
        if schedule.next_after(0.0) is None:
            raise InvalidArgument(f"cron schedule {expression!r} never fires.")
        return schedule

    def next_after(self, when: float) -> float | None:
        """The first occurrence strictly after ``when`` (epoch seconds); None if there is none."""
        # Occurrences fall on whole minutes, so "at or after the next whole second" is "after".
        start = datetime.fromtimestamp(math.floor(when) + 1, UTC)
        times = [t.get_next_fire_time(None, start) for t in self.triggers]
        found = [t.timestamp() for t in times if t is not None]
        return min(found) if found else None


def _trigger_fields(
    minute: str, hour: str, day: str, month: str, weekday: str
) -> list[dict[str, str]]:
    """APScheduler keyword sets whose union is the crontab schedule (see the module docstring)."""
    common = {"minute": minute, "hour": hour, "month": _month_numbers(month)}
    day = ",".join("last" if item.lower() == "l" else item for item in day.split(","))
    names, positions = _weekday_field(weekday)
    if day.startswith("*") or weekday.startswith("*"):  # both must match
        parts = [{"day": day, "day_of_week": names}] if names else []
        if positions:
            if day != "*":
                raise ValueError("a day of month cannot be combined with L or # in day of week")
            parts.append({"day": positions, "day_of_week": "*"})
    else:  # either may match (Vixie cron)
        parts = [{"day": day, "day_of_week": "*"}]
        parts += [{"day": "*", "day_of_week": names}] if names else []
        parts += [{"day": positions, "day_of_week": "*"}] if positions else []
    return [{**common, **part} for part in parts]


def _month_numbers(field: str) -> str:
    """``"jan-jun/2"`` → ``"1-6/2"`` (APScheduler validates the numbers)."""

    def number(match: re.Match[str]) -> str:
        name = match.group(0).lower()
        if name not in MONTHS:
            raise ValueError(f'Invalid month name "{match.group(0)}"')
        return str(MONTHS.index(name) + 1)

    return re.sub(r"[A-Za-z]+", number, field)


def _weekday_field(field: str) -> tuple[str, str]:
    """Crontab day of week → (APScheduler day_of_week names, APScheduler day positions).

    ``"1-5"`` → ``("mon,tue,wed,thu,fri", "")``; ``"0-6/2"`` → ``("sun,tue,thu,sat", "")``;
    ``"*"`` → ``("*", "")``; ``"friL,mon#2"`` → ``("", "last fri,2nd mon")``.
    """
    days: set[int] = set()
    positions: list[str] = []
    for item in field.lower().split(","):
        if last := _LAST.fullmatch(item):
            positions.append(f"last {WEEKDAYS[_weekday(last['day'], 0) % 7]}")
        elif nth := _NTH.fullmatch(item):
            positions.append(f"{_ordinal(nth['n'])} {WEEKDAYS[_weekday(nth['day'], 0) % 7]}")
        elif span := _RANGE.fullmatch(item):
            days.update(_weekday_range(span))
        else:
            raise ValueError(f'Unrecognized expression "{item}" for field "day_of_week"')
    names = "*" if len(days) == 7 else ",".join(WEEKDAYS[d] for d in sorted(days))
    return names, ",".join(positions)


def _weekday_range(span: re.Match[str]) -> set[int]:
    """A ``*``, ``a`` or ``a-b``, optionally ``/step``, as days 0-6 (``5-7``: Fri, Sat, Sun)."""
    step = int(span["step"] or 1)
    if step < 1:
        raise ValueError("Increment must be higher than 0")
    if span["all"]:
        first, last = 0, 6
    else:
        first = _weekday(span["first"], sunday=0)
        last = _weekday(span["last"], sunday=7) if span["last"] else (6 if span["step"] else first)
    if last < first:
        raise ValueError(f'The day-of-week range "{span.group(0)}" runs backwards')
    return {day % 7 for day in range(first, last + 1, step)}


def _weekday(text: str, sunday: int) -> int:
    """``"mon"``/``"1"`` → 1; ``"sun"`` → ``sunday`` (0, or 7 at the end of a range)."""
    if text.isdigit():
        return int(text)  # 0-7 by the pattern; 7 is Sunday
    if text not in WEEKDAYS:
        raise ValueError(f'Invalid weekday name "{text}"')
    return sunday if text == "sun" else WEEKDAYS.index(text)


def _ordinal(text: str) -> str:
    n = int(text)
    if not 1 <= n <= 5:
        raise ValueError(f'The week number in "#{text}" must be between 1 and 5')
    return ORDINALS[n - 1]


class CronState(Enum):
    """Lifecycle of a ``CronScheduler``."""

    NEW = "new"  # built; -> RUNNING (start)
    RUNNING = "running"  # timers armed; -> CLOSED (close)
    CLOSED = "closed"  # timers cancelled, handlers cancelled; final


@dataclass(frozen=True, slots=True)
class CronStatistics:
    schedules: int
    fired: int  # handler invocations started
    failed: int  # handler invocations that raised
    running: int  # handler invocations in progress
    next_fire_time: float | None  # epoch seconds of the earliest armed occurrence


class _Trigger:
    """One registered schedule and its armed timer."""

    def __init__(self, spec: CronSpec) -> None:
        self.spec = spec
        self.schedule = CronSchedule.parse(spec.schedule)
        self.timer: Timer | None = None
        self.next_time: float | None = None


class CronScheduler:
    """Fires a worker's cron handlers on a clock; one per ``connect``."""

    def __init__(self, worker: Worker, env: Any, clock: Clock) -> None:
        self._triggers = [_Trigger(spec) for spec in worker.crons]
        self._env = env
        self._clock = clock
        self._state = CronState.NEW
        self._running: set[asyncio.Task[None]] = set()
        self._fired = self._failed = 0

    def start(self) -> None:
        """Arm each schedule's first occurrence strictly after now."""
        if self._state is not CronState.NEW:
            raise RuntimeError(f"CronScheduler.start() on a {self._state.value} scheduler")
        self._state = CronState.RUNNING
        now = self._clock.now()
        for trigger in self._triggers:
            self._arm(trigger, now)

    def _arm(self, trigger: _Trigger, after: float) -> None:
        trigger.next_time = when = trigger.schedule.next_after(after)
        if when is not None:
            trigger.timer = self._clock.call_at(when, lambda: self._fire(trigger, when))

    def _fire(self, trigger: _Trigger, when: float) -> Awaitable[object]:
        # Arm the next occurrence first, so a slow or failing handler cannot delay it. Counting
        # from now, not from ``when``, skips occurrences the loop was too busy to run.
        self._arm(trigger, max(when, self._clock.now()))
        event = ScheduledEvent(trigger.spec.schedule, round(when * 1000))
        task = asyncio.ensure_future(self._run(trigger.spec, event))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        # The clock awaits this: it ends with the handler, also when close() cancels it.
        return asyncio.wait((task,))

    async def _run(self, spec: CronSpec, event: ScheduledEvent) -> None:
        self._fired += 1
        try:
            result = spec.handler(event, self._env)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._failed += 1
            log.exception("cron handler %s (%r) failed", _name(spec), spec.schedule)

    async def close(self) -> None:
        """Cancel every timer and running handler, and wait for the handlers to stop."""
        self._state = CronState.CLOSED
        for trigger in self._triggers:
            if trigger.timer is not None:
                trigger.timer.cancel()
            trigger.timer = trigger.next_time = None
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> CronStatistics:
        armed = [t.next_time for t in self._triggers if t.next_time is not None]
        return CronStatistics(
            len(self._triggers),
            self._fired,
            self._failed,
            len(self._running),
            min(armed) if armed else None,
        )


def _name(spec: CronSpec) -> str:
    return getattr(spec.handler, "__qualname__", repr(spec.handler))
