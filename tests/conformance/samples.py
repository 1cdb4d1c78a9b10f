"""Values of every type CONTRACTS §5 promises to round-trip, and an exact-type comparison.

Shared by ``test_values.py`` (through ``put``/``get``) and ``test_rpc.py`` (through ``echo``).
``assert_same`` is stricter than ``==``: ``1 == 1.0 == True`` and ``(1,) != [1]`` are not what a
round trip may blur, so it compares types at every level, keeps ``NaN`` and ``-0.0`` apart, and
checks a datetime's offset as well as its instant.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

UUID_1 = UUID("12345678-1234-5678-1234-567812345678")
IST = timezone(timedelta(hours=5, minutes=30))

SAMPLES: dict[str, Any] = {
    "int": 42,
    "negative int": -7,
    "zero": 0,
    "2**53+2": 2**53 + 2,
    "big int": 2**200 + 1,
    "negative big int": -(2**100),
    "float": 3.14,
    "nan": math.nan,
    "-0.0": -0.0,
    "inf": math.inf,
    "-inf": -math.inf,
    "str": "héllo 😀",
    "empty str": "",
    "str with NUL": "nul\x00key",
    "True": True,
    "False": False,
    "None": None,
    "bytes": b"\x00\xffbin",
    "empty bytes": b"",
    "list": [1, "two", [3.0, None]],
    "empty list": [],
    "tuple": (1, "two", (3,)),
    "empty tuple": (),
    "dict": {"a": {"b": [1, 2]}, "c": None},
    "empty dict": {},
    "dict with non-str keys": {1: "int", 2.5: "float", None: "none", (2, "x"): "tuple", b"k": "b"},
    "set": {1, "a", (2, 3)},
    "empty set": set(),
    "frozenset": frozenset({1, 2, "x"}),
    "naive datetime": datetime(2024, 2, 29, 23, 59, 59, 123456),
    "aware datetime UTC": datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC),
    "aware datetime +05:30": datetime(2024, 2, 29, 23, 59, 59, 7, tzinfo=IST),
    "date": date(2024, 2, 29),
    "time": time(12, 34, 56, 789),
    "timedelta": timedelta(days=-1, seconds=5, microseconds=7),
    "Decimal": Decimal("3.14159265358979323846264338327950288"),
    "Decimal trailing zeros": Decimal("-1.500"),
    "UUID": UUID_1,
    "nested": {
        "when": datetime(2025, 1, 1, tzinfo=IST),
        "tags": {"x", "y"},
        "pair": (Decimal("1.5"), UUID_1),
        "blobs": [b"\x01", b"\x02"],
        "deep": [[[{"k": (frozenset({1}),)}]]],
    },
}


def _key(value: Any) -> tuple[str, str]:
    return (type(value).__name__, repr(value))


def assert_same(expected: Any, actual: Any, path: str = "value") -> None:
    """Assert ``actual`` equals ``expected`` with the same type at every level."""
    assert type(actual) is type(expected), f"{path}: {type(actual)!r} is not {type(expected)!r}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not nan"
        else:
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
            assert math.copysign(1, actual) == math.copysign(1, expected), f"{path}: sign lost"
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert {_key(k) for k in actual} == {_key(k) for k in expected}, f"{path}: keys differ"
        for k, e in expected.items():
            assert_same(e, actual[k], f"{path}[{k!r}]")
    elif isinstance(expected, set | frozenset):
        assert {_key(v) for v in actual} == {_key(v) for v in expected}, f"{path}: {actual!r}"
    elif isinstance(expected, datetime):
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        assert actual.utcoffset() == expected.utcoffset(), f"{path}: offset lost in {actual!r}"
    elif isinstance(expected, Decimal):
        assert str(actual) == str(expected), f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
