"""Named fault points for crash tests; disarmed points cost one dict lookup.

``DURABLE_FAULT=<point>`` in the environment arms that point with ``kill_self`` (SIGKILL), so a
subprocess can be made to die exactly there. Points: ``commit.before``, ``promote.after_copy``,
``promote.after_flip``, ``demote.after_mark``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


class Faults:
    """Named fault points; disarmed points cost one dict lookup."""

    def __init__(self) -> None:
        self._armed: dict[str, Callable[[], None]] = {}
        env = os.environ.get("DURABLE_FAULT")
        if env:
            self._armed[env] = kill_self

    def arm(self, point: str, action: Callable[[], None]) -> None:
        self._armed[point] = action

    def disarm(self, point: str | None = None) -> None:
        if point is None:
            self._armed.clear()
        else:
            self._armed.pop(point, None)

    def hit(self, point: str) -> None:
        action = self._armed.get(point)
        if action is not None:
            action()


def kill_self() -> None:
    """SIGKILL this process: no finally blocks, no flush, like a crash."""
    os.kill(os.getpid(), signal.SIGKILL)


faults = Faults()
