"""Logs an attacker cannot flood: repeats folded into counts, paths cut short, JSON on request.

``configure(log_format="text" | "json", level="info")`` sets up durable's and uvicorn's loggers
for ``durable dev``/``serve``; tests and library users keep their own logging untouched unless
they call it.

Guarantees:
- ``RepeatFilter``: a WARNING or worse record whose (logger, level, message template) was let
  through in the last ``window`` seconds is dropped and counted; the next one let through after
  the window carries ``(repeated N times)``, so a flood of one error costs one line per window,
  not one per request. Tracked templates are bounded (``max_keys``); the oldest is forgotten first.
- ``AccessPathFilter``: uvicorn's access lines carry at most ``max_path`` characters of the path
  and query (a 60,000-character name is logged as its first 200 characters and a count).
- ``JsonFormatter``: one JSON object per line (time, level, logger, message, and the traceback
  as a string), never a multi-line record that a log shipper would split.
- ``Episode``: a failure that repeats (a full disk) is logged once when it starts and once when
  it ends, with how many times it struck in between.

Does not guarantee: a summary for repeats that stop arriving (the count is reported with the next
record of the same template, if any); ``RepeatFilter`` keys by template, so one template with many
argument values is folded too (that is the point).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

REPEAT_WINDOW = 10.0  # seconds during which a repeated template is counted, not written
MAX_PATH = 200  # characters of a request path kept in access lines
LOGGERS = ("durable", "uvicorn", "uvicorn.error", "uvicorn.access")


class RepeatFilter(logging.Filter):
    """Let one record per (logger, level, template) through per ``window``; count the rest."""

    def __init__(
        self,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
        level_from: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.level_from = level_from
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[str, int, str], list[float | int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level_from:
            return True  # access lines share one template: never fold them
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return False
        repeated = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        if repeated:
            record.msg = f"{record.msg} (repeated {repeated} times)"
            record.repeated = repeated
        return True


class AccessPathFilter(logging.Filter):
    """Cut the path of uvicorn's access lines (``args[2]``) to ``max_path`` characters."""

    def __init__(self, max_path: int = MAX_PATH) -> None:
        super().__init__()
        self.max_path = max_path

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], truncated(args[2], self.max_path), *args[3:])
        return True


def truncated(text: str, limit: int = MAX_PATH) -> str:
    """``text`` cut to ``limit`` characters with a count: ``truncated("a" * 300, 4)`` →
    ``"aaaa...(+296 chars)"``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        repeated = getattr(record, "repeated", None)
        if repeated:
            entry["repeated"] = repeated
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class Episode:
    """A failure logged at ERROR when it first strikes and at WARNING when it ends."""

    def __init__(self, logger: logging.Logger, started: str, ended: str) -> None:
        self.logger = logger
        self.started = started  # %-format with the caller's arguments
        self.ended_message = ended  # %-format with (count,)
        self.count = 0

    @property
    def ongoing(self) -> bool:
        return self.count > 0

    def struck(self, *args: object) -> None:
        if self.count == 0:
            self.logger.error(self.started, *args)
        self.count += 1

    def ended(self) -> None:
        if self.count:
            self.logger.warning(self.ended_message, self.count)
            self.count = 0


def configure(log_format: str = "text", level: str = "info") -> None:
    """One stderr handler for durable's and uvicorn's loggers, with the filters above."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name in ("durable", "uvicorn") else []
        logger.propagate = name not in ("durable", "uvicorn")
        logger.setLevel(level.upper())
    logging.getLogger("uvicorn.access").addFilter(AccessPathFilter())
