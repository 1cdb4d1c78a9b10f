from __future__ import annotations

import collections
import dataclasses
import enum
import math
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from durable import values
from durable.errors import DataCloneError, DurableError, InvalidArgument
from durable.values import decode, encode, register_type

# Names are prefixed: the registry is global to the process and other test modules register too.


@register_type(name="test_values.Color")
class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


@register_type(name="test_values.Level")
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@register_type(name="test_values.Point")
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0


@register_type(name="test_values.Item")
class Item(BaseModel):
    name: str
    tags: tuple[str, ...] = ()
    at: datetime | None = None
    where: Point | None = None


class Unregistered(enum.Enum):
    A = (1, "a")


class UnregisteredLevel(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass
class PlainRecord:
    name: str
    tags: set[str]
    where: Point


class PlainModel(BaseModel):
    name: str
    when: date


# --- strict equality: same types all the way down, NaN equal to NaN, -0.0 not 0.0 -----------


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return bool(a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())  # sign, digits, exponent; NaN, sNaN too
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        pairs = zip(a.items(), b.items(), strict=False)
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in pairs
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and same_elements(list(a), list(b))
    if isinstance(a, datetime | time):
        return same_clock(a, b)
    if isinstance(a, BaseModel):
        return same(dict(a), dict(b))
    if dataclasses.is_dataclass(a):
        return same(vars(a), vars(b))
    return bool(a == b)


def same_elements(a: list[Any], b: list[Any]) -> bool:
    remaining = list(b)
    for item in a:
        match = next((i for i, other in enumerate(remaining) if same(item, other)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def same_clock(a: datetime | time, b: datetime | time) -> bool:
    naive_a, naive_b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return (
        naive_a == naive_b
        and a.fold == b.fold
        and (a.tzinfo is None) == (b.tzinfo is None)
        and a.utcoffset() == b.utcoffset()
    )


def round_trip(value: object) -> object:
    return decode(encode(value))


def assert_round_trips(value: object) -> None:
    result = round_trip(value)
    assert same(result, value), f"{value!r} came back as {result!r}"


# --- the property test ------------------------------------------------------------------------

offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
fixed_zones = st.none() | st.just(UTC) | st.builds(timezone, offsets)
folds = st.integers(0, 1)

hashable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(),
    st.text(),
    st.binary(),
    st.builds(lambda d, f: d.replace(fold=f), st.datetimes(timezones=fixed_zones), folds),
    st.dates(),
    st.builds(lambda t, f: t.replace(fold=f), st.times(timezones=fixed_zones), folds),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.sampled_from(Color),
    st.sampled_from(Level),
    st.builds(Point, st.integers(), st.integers()),
)
hashable_keys = st.recursive(
    hashable,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
# NaN decimals cannot be hashed (sNaN) or set members, so they only appear as plain values.
leaves = (
    hashable
    | st.decimals(allow_nan=True)
    | st.sampled_from([Decimal("sNaN"), Decimal("-NaN"), Decimal("-0"), Decimal("1.000E+7")])
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(hashable_keys, children, max_size=5),
        st.dictionaries(st.text(), children, max_size=5),
        st.sets(hashable_keys, max_size=5),
        st.frozensets(hashable_keys, max_size=5),
        st.builds(Item, name=st.text(), tags=st.lists(st.text(), max_size=3).map(tuple)),
    )


storable = st.recursive(leaves, containers, max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(storable)
def test_every_supported_value_round_trips_with_its_type(value: object) -> None:
    assert_round_trips(value)


# --- each type --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        2**200,
        -(2**100),
        -(2**1000) + 7,
        True,
        False,
        None,
        1.5,
        float("nan"),
        -0.0,
        float("inf"),
        float("-inf"),
        "",
        "a\x00b",
        "😀 emoji",
        b"",
        b"\x00\xff",
        [],
        [1, [2, [3]]],
        (),
        (1,),
        ((1, 2), [3, (4,)]),
        {},
        {"a": 1},
        {1: "int key", 2.5: "float key", None: "none key", b"k": "bytes key"},
        {(1, 2): "tuple key", (1, (2, 3)): "nested", frozenset({1}): "frozenset key"},
        {True: "bool key", 2: "int key"},
        set(),
        {1, "a", (2, 3)},
        frozenset({frozenset({1}), 2}),
        date(2024, 2, 29),
        date.min,
        date.max,
        timedelta(0),
        timedelta(days=-3, seconds=5, microseconds=7),
        timedelta.max,
        timedelta.min,
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("NaN"),
        Decimal("-sNaN12"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("1E+999999"),
        UUID(int=0),
        uuid4(),
    ],
    ids=repr,
)
def test_value_round_trips_exactly(value: object) -> None:
    assert_round_trips(value)


def test_bool_is_not_turned_into_int() -> None:
    result = round_trip([True, 1, {True: False}])
    assert same(result, [True, 1, {True: False}])


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 2, 29, 12, 30, 15, 123456),
        datetime.min,
        datetime.max,
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=-7, microseconds=11))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-23, minutes=-59))),
        datetime(2021, 11, 7, 1, 30, fold=1),
    ],
    ids=repr,
)
def test_datetime_keeps_naivety_offset_and_microseconds(value: datetime) -> None:
    result = round_trip(value)
    assert isinstance(result, datetime)
    assert same_clock(result, value)
    assert result == value


def test_zoneinfo_datetime_keeps_its_offset_at_that_instant() -> None:
    zone = ZoneInfo("America/New_York")
    for fold in (0, 1):  # 01:30 on that day happened twice: EDT, then EST
        value = datetime(2021, 11, 7, 1, 30, tzinfo=zone, fold=fold)
        result = round_trip(value)
        assert isinstance(result, datetime)
        assert result.utcoffset() == value.utcoffset()
        assert result.tzinfo == timezone(value.utcoffset() or timedelta())
        assert result.timestamp() == value.timestamp()  # == is False across zones here (PEP 495)
        assert result.fold == fold


@pytest.mark.parametrize(
    "value",
    [
        time(0),
        time(23, 59, 59, 999999),
        time(1, 2, 3, 4, tzinfo=UTC),
        time(1, 2, tzinfo=timezone(timedelta(hours=-3, minutes=-15))),
        time(1, 2, fold=1),
    ],
    ids=repr,
)
def test_time_keeps_tzinfo_offset_and_fold(value: time) -> None:
    assert_round_trips(value)


def test_time_with_a_zone_that_has_no_fixed_offset_becomes_naive() -> None:
    result = round_trip(time(1, 2, tzinfo=ZoneInfo("Europe/Paris")))
    assert same(result, time(1, 2))


def test_byte_buffers_are_stored_as_bytes() -> None:
    assert same(round_trip(bytearray(b"ab")), b"ab")
    assert same(round_trip(memoryview(b"cd")), b"cd")
    assert same(round_trip([memoryview(b"abcdef")[1:3]]), [b"bc"])


def test_non_contiguous_memoryview_raises_data_clone_error() -> None:
    with pytest.raises(DataCloneError, match="not C-contiguous"):
        encode([memoryview(b"abcdef")[::2]])


# --- registered and unregistered classes ------------------------------------------------------


def test_registered_enum_members_come_back_as_members() -> None:
    result = round_trip([Color.RED, Color.PAIR, Level.HIGH, {Color.PAIR: Level.LOW}])
    assert result == [Color.RED, Color.PAIR, Level.HIGH, {Color.PAIR: Level.LOW}]
    assert isinstance(result, list)
    assert result[2] is Level.HIGH
    assert type(result[2]) is Level


def test_unregistered_enum_members_are_stored_as_their_value() -> None:
    assert same(round_trip(Unregistered.A), (1, "a"))
    assert same(round_trip(UnregisteredLevel.ONE), 1)
    assert same(round_trip({UnregisteredLevel.ONE: Unregistered.A}), {1: (1, "a")})


def test_registered_dataclass_is_rebuilt_with_its_class() -> None:
    value = {Point(1, 2): [Point(3)], "set": {Point(4, 5)}}
    result = round_trip(value)
    assert same(result, value)


def test_registered_pydantic_model_is_rebuilt_with_its_class() -> None:
    value = Item(name="x", tags=("a", "b"), at=datetime(2024, 1, 1, tzinfo=UTC))
    result = round_trip(value)
    assert type(result) is Item
    assert result == value
    assert same(result, value)


def test_registered_class_nested_in_a_registered_model_is_rebuilt() -> None:
    result = round_trip(Item(name="x", where=Point(1, 2)))
    assert isinstance(result, Item)
    assert type(result.where) is Point
    assert result.where == Point(1, 2)


def test_unregistered_dataclass_is_stored_as_a_dict_of_its_fields() -> None:
    value = PlainRecord("r", {"a"}, Point(1, 2))
    result = round_trip(value)
    # One level at a time: the registered Point inside is still rebuilt.
    assert same(result, {"name": "r", "tags": {"a"}, "where": Point(1, 2)})


def test_unregistered_pydantic_model_is_stored_as_a_dict_of_its_fields() -> None:
    result = round_trip(PlainModel(name="m", when=date(2024, 1, 2)))
    assert same(result, {"name": "m", "when": date(2024, 1, 2)})


def test_unregistered_frozen_dataclass_as_key_comes_back_frozen() -> None:
    @dataclasses.dataclass(frozen=True)
    class Key:
        a: int
        b: list[int] = dataclasses.field(default_factory=list, hash=False)

    result = round_trip({Key(1, [2]): "v", "s": {Key(3)}})
    assert same(result, {(("a", 1), ("b", (2,))): "v", "s": {(("a", 3), ("b", ()))}})


def test_registered_name_unknown_to_this_process_decodes_as_plain_data() -> None:
    obj = msgpack.ExtType(values.EXT_OBJECT, msgpack.packb(["nobody.Thing", {"a": 1}]))
    member = msgpack.ExtType(values.EXT_ENUM, msgpack.packb(["nobody.Enum", "v"]))
    assert same(decode(b"\x01" + msgpack.packb([obj, member])), [{"a": 1}, "v"])


def test_stored_fields_that_no_longer_fit_the_class_raise_data_clone_error() -> None:
    payload = msgpack.packb(["test_values.Point", {"y": 1}])  # x is required
    data = b"\x01" + msgpack.packb(msgpack.ExtType(values.EXT_OBJECT, payload))
    with pytest.raises(DataCloneError, match=r"no longer fits \S*Point \("):
        decode(data)


def test_stored_fields_the_class_dropped_are_ignored() -> None:
    payload = msgpack.packb(["test_values.Point", {"x": 1, "gone": 2}])
    data = b"\x01" + msgpack.packb(msgpack.ExtType(values.EXT_OBJECT, payload))
    assert decode(data) == Point(1)


def test_dataclass_init_false_fields_are_restored() -> None:
    @register_type(name="test_values.Counted")
    @dataclasses.dataclass
    class Counted:
        name: str
        count: int = dataclasses.field(default=0, init=False)

    value = Counted("c")
    value.count = 7
    result = round_trip(value)
    assert isinstance(result, Counted)
    assert (result.name, result.count) == ("c", 7)


def test_pydantic_model_with_aliases_and_extra_fields_round_trips() -> None:
    @register_type(name="test_values.Aliased")
    class Aliased(BaseModel):
        model_config = ConfigDict(extra="allow")
        user_name: str = Field(alias="userName")

    value = Aliased.model_validate({"userName": "ann", "other": (1, 2)})
    result = round_trip(value)
    assert isinstance(result, Aliased)
    assert result.user_name == "ann"
    assert result.model_extra == {"other": (1, 2)}


def test_subclasses_of_builtin_types_are_stored_as_the_base_type() -> None:
    class Name(str):
        pass

    class Count(int):
        def __index__(self) -> int:  # must not be what is stored
            return 0

    class Pair(NamedTuple):
        a: int
        b: int

    value = [
        collections.OrderedDict(a=1),
        collections.defaultdict(list, b=[2]),
        collections.Counter("aa"),
        Pair(1, 2),
        Name("n"),
        Count(5),
    ]
    assert same(round_trip(value), [{"a": 1}, {"b": [2]}, {"a": 2}, (1, 2), "n", 5])


def test_register_type_returns_the_class_and_uses_qualname_by_default() -> None:
    @dataclasses.dataclass
    class ValuesTestDefaultName:
        a: int

    assert register_type(ValuesTestDefaultName) is ValuesTestDefaultName
    data = encode(ValuesTestDefaultName(1))
    assert ValuesTestDefaultName.__qualname__.encode() in data
    assert round_trip(ValuesTestDefaultName(1)) == ValuesTestDefaultName(1)


def test_registering_the_same_class_again_is_fine() -> None:
    assert register_type(Point, name="test_values.Point") is Point


def test_registering_another_class_under_a_taken_name_raises() -> None:
    @dataclasses.dataclass
    class Impostor:
        x: int

    with pytest.raises(InvalidArgument, match=r"'test_values\.Point' is already registered"):
        register_type(Impostor, name="test_values.Point")


def test_a_class_has_one_registered_name() -> None:
    with pytest.raises(InvalidArgument, match=r"already registered as 'test_values\.Point'"):
        register_type(Point, name="test_values.Point2")


@pytest.mark.parametrize("cls", [int, dict, object, Point(1), "test_values.Point"], ids=repr)
def test_register_type_refuses_what_it_cannot_rebuild(cls: Any) -> None:
    with pytest.raises(InvalidArgument, match="takes an Enum, dataclass or pydantic model class"):
        register_type(cls)


def test_register_type_refuses_an_empty_name() -> None:
    with pytest.raises(InvalidArgument, match="non-empty str"):
        register_type(Point, name="")


# --- what cannot be stored ---------------------------------------------------------------------


async def _coroutine_function() -> None:
    pass


def _generator() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    "value",
    [lambda: 1, len, object(), _generator(), math, int, Point, threading.Lock()],
    ids=["lambda", "builtin", "object", "generator", "module", "class", "dataclass", "lock"],
)
def test_unstorable_values_raise_data_clone_error(value: object) -> None:
    with pytest.raises(DataCloneError, match="could not be cloned"):
        encode(value)


def test_coroutine_raises_data_clone_error() -> None:
    coroutine = _coroutine_function()
    try:
        with pytest.raises(DataCloneError, match="coroutine"):
            encode({"pending": coroutine})
    finally:
        coroutine.close()


def test_open_file_raises_data_clone_error(tmp_path: Path) -> None:
    with (tmp_path / "f.txt").open("w") as handle, pytest.raises(DataCloneError):
        encode([handle])


def test_socket_raises_data_clone_error() -> None:
    with socket.socket() as sock, pytest.raises(DataCloneError, match="socket"):
        encode((1, sock))


def test_unstorable_value_deep_inside_raises() -> None:
    with pytest.raises(DataCloneError, match="function"):
        encode({"a": [1, (2, {frozenset({3}): {"b": lambda: 1}})]})


def test_data_clone_error_is_a_type_error_and_durable_error() -> None:
    for error_type in (TypeError, DurableError, DataCloneError):
        with pytest.raises(error_type):
            encode(object())


def test_lone_surrogate_raises_data_clone_error() -> None:
    with pytest.raises(DataCloneError, match="not valid UTF-8"):
        encode({"k": "\ud800"})


def test_cycles_and_excessive_nesting_raise_data_clone_error() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(DataCloneError):
        encode(cycle)
    deep: object = []
    for _ in range(5000):
        deep = (deep,)
    with pytest.raises(DataCloneError, match="nested too deeply"):
        encode(deep)


def test_encoder_is_unharmed_by_a_failed_encode() -> None:
    with pytest.raises(DataCloneError):
        encode({"a": [1, (2, object())]})
    assert same(round_trip({"b": (2, 3)}), {"b": (2, 3)})


def test_encode_works_from_many_threads() -> None:
    results: list[bool] = []

    def work(n: int) -> None:
        value = {"n": n, "t": tuple(range(n)), "s": {n}}
        results.append(all(same(round_trip(value), value) for _ in range(200)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8


# --- the format -------------------------------------------------------------------------------


def test_encoded_value_starts_with_the_format_byte() -> None:
    assert encode(5)[:1] == b"\x01"
    assert encode({"n": 5}) == b"\x01" + msgpack.packb({"n": 5})


# Frozen bytes: stored data must stay readable, so a change here is a format change.
FROZEN = [
    ((1, 2), "01c70302920102"),
    (2**70, "01c70901400000000000000000"),
    (Decimal("-1.50"), "01c705092d312e3530"),
    (
        datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-3.5))),
        "01c7180599cd07e8021d0c1e0fce0001e24000d3fffffffd10fb4200",
    ),
    (date(2024, 2, 29), "01c7060693cd07e8021d"),
    (time(23, 59, 59, 999999), "01c70b0796173b3bce000f423f00c0"),
    (timedelta(days=-1, seconds=5, microseconds=6), "01d60893ff0506"),
    ({1}, "01d5039101"),
    (frozenset(), "01d40490"),
    (UUID(int=1), "01d80a00000000000000000000000000000001"),
]


@pytest.mark.parametrize(("value", "hex_bytes"), FROZEN, ids=repr)
def test_encoding_matches_frozen_bytes(value: object, hex_bytes: str) -> None:
    assert encode(value).hex() == hex_bytes
    assert same(decode(bytes.fromhex(hex_bytes)), value)


def docstring_table() -> dict[int, str]:
    doc = values.__doc__ or ""
    rows = re.findall(r"^\s+(\d+)\s+([A-Z]+)\s", doc, flags=re.MULTILINE)
    return {int(code): name for code, name in rows}


def test_docstring_table_matches_the_codes_in_code() -> None:
    in_code = {
        value: name.removeprefix("EXT_")
        for name, value in vars(values).items()
        if name.startswith("EXT_")
    }
    assert docstring_table() == in_code
    assert len(in_code) == 12


SAMPLES = {
    "BIGINT": 2**70,
    "TUPLE": (1,),
    "SET": {1},
    "FROZENSET": frozenset({1}),
    "DATETIME": datetime(2024, 1, 1),
    "DATE": date(2024, 1, 1),
    "TIME": time(1),
    "TIMEDELTA": timedelta(1),
    "DECIMAL": Decimal("1"),
    "UUID": UUID(int=1),
    "ENUM": Color.RED,
    "OBJECT": Point(1),
}


@pytest.mark.parametrize(("name", "sample"), SAMPLES.items())
def test_each_type_is_encoded_with_its_table_code(name: str, sample: object) -> None:
    codes = {code: table_name for code, table_name in docstring_table().items()}
    packed = msgpack.unpackb(encode(sample)[1:], ext_hook=lambda code, data: code)
    assert codes[packed] == name
    assert set(SAMPLES) == set(codes.values())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "it is empty"),
        (b"\x02\x05", "unknown value format 2"),
        (b"\x00", "unknown value format 0"),
        (b"\x01", "not valid durable data"),
        (b"\x01\xc1", "not valid durable data"),
        (b"\x01\x91", "not valid durable data"),
        (b"\x01\x05\x05", "not valid durable data"),
        (b"\x01\xd4\x63\x00", "unknown ext code"),
        (b"\x01\xd4\x05\x00", "not valid durable data"),
    ],
)
def test_bad_data_raises_data_clone_error(data: bytes, message: str) -> None:
    with pytest.raises(DataCloneError, match=message):
        decode(data)


def test_decode_accepts_memoryview_and_large_values() -> None:
    value = {"blob": b"x" * 100_000, "t": (1, 2)}
    data = encode(value)
    assert same(decode(memoryview(data)), value)
    assert same(decode(bytearray(data)), value)
