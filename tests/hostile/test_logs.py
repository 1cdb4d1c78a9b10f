"""``durable.logs``: a flood of one error costs one line per window with a count, access paths are
cut short, JSON records are one line each, and an episode (a full disk) logs its start and end
once. Time comes from a list the test advances, never from sleeping."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from durable.logs import AccessPathFilter, Episode, JsonFormatter, RepeatFilter, truncated


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, level: int = logging.ERROR, name: str = "durable.x"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


def test_repeat_filter_lets_one_record_per_window_through_and_counts_the_rest() -> None:
    clock = Clock()
    repeats = RepeatFilter(window=10.0, clock=clock)
    passed = [repeats.filter(record("commit of %s failed", i)) for i in range(313)]
    assert passed == [True] + [False] * 312
    clock.now = 10.0
    later = record("commit of %s failed", "z")
    assert repeats.filter(later)
    assert later.getMessage() == "commit of z failed (repeated 312 times)"
    assert repeats.filter(record("another template"))  # templates are counted apart


def test_repeat_filter_never_folds_info_lines_such_as_access_logs() -> None:
    repeats = RepeatFilter(clock=Clock())
    assert all(repeats.filter(record("%s", i, level=logging.INFO)) for i in range(50))


def test_repeat_filter_tracks_a_bounded_number_of_templates() -> None:
    repeats = RepeatFilter(clock=Clock(), max_keys=8)
    for i in range(1000):
        repeats.filter(record(f"distinct {i}"))  # an attacker's text in the template itself
    assert len(repeats._seen) == 8


def test_access_paths_are_cut_to_the_limit_with_a_count() -> None:
    line = record('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/t/" + "a" * 60_000, "1.1", 200,
                  level=logging.INFO, name="uvicorn.access")  # fmt: skip
    assert AccessPathFilter(max_path=200).filter(line)
    message = line.getMessage()
    assert len(message) < 300 and "(+59803 chars)" in message
    assert truncated("short") == "short"


def test_json_records_are_one_line_with_the_traceback_as_a_string() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        entry = logging.LogRecord("durable.x", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                  sys.exc_info())  # fmt: skip
    text = JsonFormatter().format(entry)
    assert "\n" not in text
    document = json.loads(text)
    assert document["message"] == "failed x" and document["level"] == "ERROR"
    assert "ValueError: boom" in document["exception"]


def test_an_episode_logs_its_start_once_and_its_end_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("durable.test_episode")
    episode = Episode(logger, "disk %s is full", "recovered after %d failures")
    with caplog.at_level(logging.WARNING, logger="durable.test_episode"):
        for _ in range(40):
            episode.struck("/data")
        episode.ended()
        episode.ended()  # nothing ongoing: silent
    assert [r.getMessage() for r in caplog.records] == [
        "disk /data is full",
        "recovered after 40 failures",
    ]
    assert not episode.ongoing
