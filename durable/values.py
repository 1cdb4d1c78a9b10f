"""The value codec: what storage keeps and what RPC sends, as msgpack with a versioned ext table.

``encode(value)`` is one format byte (``0x01``) then one msgpack object; ``decode`` reverses it
and returns the same types with the same values::

    >>> decode(encode({"at": (1, 2**70), "tags": {"a"}}))
    {'at': (1, 1180591620717411303424), 'tags': {'a'}}

msgpack carries ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``, ``list`` and
``dict`` natively. Everything else travels as an extension type whose payload is nested msgpack
(same rules) unless the table says otherwise. Format version 1:

    ====  =========  ==========================================================================
    code  name       payload
    ====  =========  ==========================================================================
    1     BIGINT     int outside [-2**63, 2**64): two's-complement big-endian bytes (raw)
    2     TUPLE      array of the items
    3     SET        array of the items
    4     FROZENSET  array of the items
    5     DATETIME   [year, month, day, hour, minute, second, microsecond, fold, offset]
    6     DATE       [year, month, day]
    7     TIME       [hour, minute, second, microsecond, fold, offset]
    8     TIMEDELTA  [days, seconds, microseconds]
    9     DECIMAL    str(value) as UTF-8 (raw); keeps NaN, sNaN, Infinity, -0 and the exponent
    10    UUID       the 16 bytes of UUID.bytes (raw)
    11    ENUM       [registered name, member value]
    12    OBJECT     [registered name, {field: value}] for a registered dataclass or model
    ====  =========  ==========================================================================

``offset`` is ``utcoffset()`` in microseconds, or nil when naive. Codes are never reused or
renumbered: a change is a new format byte, and ``decode`` keeps reading every older one.

Decisions where CONTRACTS §5 is silent:
    - An aware datetime or time comes back with a fixed-offset ``timezone`` (its ``utcoffset()``
      at that instant): zone names and rules are not stored. A ``tzinfo`` whose ``utcoffset()``
      is None (a ``ZoneInfo`` on a ``time``) makes the value naive, as Python itself treats it.
    - ``bytearray`` and ``memoryview`` are stored as ``bytes``. Subclasses of the built-in types
      (``OrderedDict``, ``defaultdict``, named tuples, str/int subclasses) are stored as the base
      type unless registered; ``IntEnum``/``StrEnum`` members unregistered as their ``.value``.
    - Unregistered dataclasses and pydantic models are stored as a dict of their fields (taken
      one level deep, so a registered class nested inside is still rebuilt; pydantic ``extra``
      fields included). Registered ones are rebuilt by name: a dataclass by calling the class
      with its init fields (then setting ``init=False`` fields), a model by
      ``model_validate(..., by_name=True)``; stored fields the class no longer has are dropped.
    - A dict key, set or frozenset element that decodes to a dict or list (an unregistered
      frozen dataclass used as a key, or a registered class this process has not registered)
      comes back frozen: a dict as a tuple of (key, value) pairs, a list as a tuple.

Guarantees:
    - Exact round trips of type and value for the types above (NaN, -0.0, big ints, naive vs
      aware datetimes, Decimal specials): each has its own code rather than a lossy native form.
    - ``encode`` raises ``DataCloneError`` before returning anything, so nothing partial is
      stored or sent: the whole value is packed into a private buffer first.
    - Decoding never imports anything: a registered name is looked up in this process's registry
      (``register_type``), never resolved as a module path read from storage.

Does not guarantee:
    - Identical bytes for equal values: set order follows hashing, which differs per process.
    - Shared or cyclic references: each reference is stored as a copy; a cycle raises.

On failure:
    ``encode`` raises ``DataCloneError`` for functions, coroutines, generators, files, sockets,
    modules, classes, other objects, lone surrogates and nesting over msgpack's depth limit.
    ``decode`` raises ``DataCloneError`` for empty or corrupt data, an unknown format byte or ext
    code, and a registered class that can no longer be built from its stored fields.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import reprlib
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar, overload
from uuid import UUID

import msgpack
from pydantic import BaseModel, RootModel

from durable.errors import DataCloneError, InvalidArgument

__all__ = ["decode", "encode", "register_type"]

T = TypeVar("T", bound=type)
Buffer = bytes | bytearray | memoryview

FORMAT_VERSION = 1
_FORMAT = bytes([FORMAT_VERSION])
MIN_INT64 = -(2**63)  # msgpack's native int range; beyond it: EXT_BIGINT
MAX_UINT64 = 2**64 - 1


# Extension codes of format version 1: the docstring table above, which a test checks.
# Plain ints, not an IntEnum: reading an enum member costs ~0.3 µs on this hot path.
EXT_BIGINT = 1
EXT_TUPLE = 2
EXT_SET = 3
EXT_FROZENSET = 4
EXT_DATETIME = 5
EXT_DATE = 6
EXT_TIME = 7
EXT_TIMEDELTA = 8
EXT_DECIMAL = 9
EXT_UUID = 10
EXT_ENUM = 11
EXT_OBJECT = 12


# --- registry -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Registered:
    name: str
    cls: type
    is_enum: bool  # else a dataclass or pydantic model


_BY_NAME: dict[str, _Registered] = {}
_BY_CLASS: dict[type, _Registered] = {}
_REGISTRY_LOCK = threading.Lock()


@overload
def register_type(cls: T, *, name: str | None = None) -> T: ...
@overload
def register_type(cls: None = None, *, name: str | None = None) -> Callable[[T], T]: ...
def register_type(cls: T | None = None, *, name: str | None = None) -> T | Callable[[T], T]:
    """Let values of ``cls`` (an Enum, dataclass or pydantic model) be rebuilt after decoding.

    Usable as ``@register_type`` or ``@register_type(name="Point")``. The name (default
    ``cls.__qualname__``) is what storage keeps, so keep it when moving or renaming the class.
    """
    if cls is None:
        return lambda c: register_type(c, name=name)
    is_enum = _is_enum(cls)
    key = cls.__qualname__ if name is None else name
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"register_type() name must be a non-empty str, got {key!r}.")
    with _REGISTRY_LOCK:
        _add(_Registered(key, cls, is_enum))
    return cls


def _is_enum(cls: object) -> bool:
    if isinstance(cls, type):
        if issubclass(cls, enum.Enum):
            return True
        if issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls):
            return False
    raise InvalidArgument(
        f"register_type() takes an Enum, dataclass or pydantic model class, got {cls!r}."
    )


def _add(entry: _Registered) -> None:
    taken = _BY_NAME.get(entry.name)
    if taken is not None and taken.cls is not entry.cls:
        raise InvalidArgument(
            f"The name {entry.name!r} is already registered for {_path(taken.cls)}; register "
            f"{_path(entry.cls)} under another name with register_type(cls, name=...)."
        )
    known = _BY_CLASS.get(entry.cls)
    if known is not None and known.name != entry.name:
        raise InvalidArgument(
            f"{_path(entry.cls)} is already registered as {known.name!r}; "
            "a class has one name, since storage keeps it."
        )
    _BY_NAME[entry.name] = entry
    _BY_CLASS[entry.cls] = entry


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- encoding -------------------------------------------------------------------------------


def encode(value: object) -> bytes:
    """``value`` as bytes: the format byte, then msgpack. Raises ``DataCloneError``."""
    try:
        return _FORMAT + _pack(value)
    except DataCloneError:
        raise
    except RecursionError:
        raise DataCloneError(_Shown(value), "it is nested too deeply or contains itself") from None
    except UnicodeEncodeError as exc:
        detail = f"a str in it is not valid UTF-8 ({exc.reason})"
        raise DataCloneError(_Shown(value), detail) from None
    except (TypeError, ValueError, OverflowError, BufferError) as exc:
        # msgpack's own limits (depth 512, 4 GiB strings, a strided memoryview) and errors
        # raised by the value itself.
        raise DataCloneError(_Shown(value), _reason(exc)) from exc


class _Shown:
    """A value as error messages show it: repr() of a huge, deep or broken value is bounded."""

    __slots__ = ("text",)

    def __init__(self, value: object) -> None:
        try:
            self.text = _REPR.repr(value)
        except Exception:
            self.text = f"<{type(value).__qualname__} object>"

    def __repr__(self) -> str:
        return self.text


_REPR = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
_REPR.maxlevel, _REPR.maxother, _REPR.maxstring = 3, 77, 77


def _reason(exc: Exception) -> str:
    return str(exc).rstrip(".") or type(exc).__name__


class _Packers(threading.local):
    """Idle packers of this thread: one Packer is not reentrant, and ext payloads nest."""

    def __init__(self) -> None:
        self.idle: list[msgpack.Packer] = []


_PACKERS = _Packers()


def _pack(obj: object) -> bytes:
    idle = _PACKERS.idle
    packer = idle.pop() if idle else msgpack.Packer(default=_default, strict_types=True)
    try:
        # On an exception, msgpack empties the buffer before re-raising: safe to reuse.
        return packer.pack(obj)  # type: ignore[no-any-return]
    finally:
        idle.append(packer)


# ExtType's own constructor re-checks its arguments in Python (0.7 µs); ours are always valid.
_new_ext: Callable[[tuple[int, bytes]], msgpack.ExtType] = functools.partial(
    tuple.__new__, msgpack.ExtType
)


def _ext(code: int, payload: object) -> msgpack.ExtType:
    return _new_ext((code, _pack(payload)))


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _offset(value: datetime | time) -> int | None:
    offset = value.utcoffset()
    return None if offset is None else _micros(offset)


def _int(n: int) -> object:
    if MIN_INT64 <= n <= MAX_UINT64:
        return int(n)
    return _new_ext((EXT_BIGINT, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)))


def _datetime(d: datetime) -> msgpack.ExtType:
    fields = [d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond]
    return _ext(EXT_DATETIME, [*fields, d.fold, _offset(d)])


def _time(t: time) -> msgpack.ExtType:
    return _ext(EXT_TIME, [t.hour, t.minute, t.second, t.microsecond, t.fold, _offset(t)])


# Exact type -> converter; msgpack calls _default only for what it cannot pack natively.
_BY_TYPE: dict[type, Callable[[Any], object]] = {
    int: _int,
    tuple: lambda v: _ext(EXT_TUPLE, list(v)),
    set: lambda v: _ext(EXT_SET, list(v)),
    frozenset: lambda v: _ext(EXT_FROZENSET, list(v)),
    datetime: _datetime,
    date: lambda v: _ext(EXT_DATE, [v.year, v.month, v.day]),
    time: _time,
    timedelta: lambda v: _ext(EXT_TIMEDELTA, [v.days, v.seconds, v.microseconds]),
    Decimal: lambda v: _new_ext((EXT_DECIMAL, str(v).encode())),
    UUID: lambda v: _new_ext((EXT_UUID, v.bytes)),
    bytearray: bytes,
    memoryview: bytes,
}

# Subclasses become their base type; order matters (datetime is a date, bool cannot be derived).
_BY_BASE: tuple[tuple[type, Callable[[Any], object]], ...] = (
    (str, str.__str__),
    (bytes, bytes.__bytes__),
    (int, lambda v: _int(int.__index__(v))),
    (float, float.__float__),
    (dict, dict),
    (list, list),
    (tuple, _BY_TYPE[tuple]),
    (set, _BY_TYPE[set]),
    (frozenset, _BY_TYPE[frozenset]),
    (datetime, _datetime),
    (date, _BY_TYPE[date]),
    (time, _time),
    (timedelta, _BY_TYPE[timedelta]),
    (Decimal, _BY_TYPE[Decimal]),
    (UUID, _BY_TYPE[UUID]),
    (bytearray, bytes),
)

_NATIVE = frozenset({str, bytes, float, bool, type(None), list, dict, msgpack.ExtType})


def _default(obj: Any) -> object:
    convert = _BY_TYPE.get(type(obj))
    if convert is not None:
        return convert(obj)
    entry = _BY_CLASS.get(type(obj))
    if entry is not None:
        if entry.is_enum:
            return _ext(EXT_ENUM, [entry.name, obj.value])
        return _ext(EXT_OBJECT, [entry.name, _fields(obj)])
    return _plain(_convert_other(obj))


def _plain(value: object) -> object:
    # msgpack calls `default` once per object: a converted value must be packable as it is.
    return value if type(value) in _NATIVE else _default(value)


def _convert_other(obj: object) -> object:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, BaseModel) or (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        return _fields(obj)
    for base, convert in _BY_BASE:
        if isinstance(obj, base):
            return convert(obj)
    if isinstance(obj, type):
        raise DataCloneError(_Shown(obj), "a class is code, not data; store an instance or a name")
    raise DataCloneError(_Shown(obj))


def _fields(obj: Any) -> dict[str, object]:
    # One level only, unlike asdict()/model_dump(): nested values go through _default, so a
    # registered class inside is kept, and nothing is deep-copied (sockets cannot be).
    if isinstance(obj, BaseModel):
        fields = {name: getattr(obj, name) for name in type(obj).model_fields}
        extra = obj.__pydantic_extra__
        return {**fields, **extra} if extra else fields
    return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}


# --- decoding -------------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> object:
    """The value ``encode`` made ``data`` from. Raises ``DataCloneError`` for bad data."""
    if data[:1] != _FORMAT:
        detail = "it is empty" if not data else f"unknown value format {data[0]}"
        raise DataCloneError(bytes(data[:16]), detail)
    # A slice copies; a memoryview costs more than copying a small value.
    body = data[1:] if len(data) < 4096 else memoryview(data)[1:]
    try:
        return _unpack_fast(body)
    except DataCloneError:
        raise
    except TypeError:
        # A dict or list as a dict key (see "frozen" in the module docstring): rare, slow path.
        return _decode_with(_unpack_tolerant, body)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DataCloneError(
            bytes(data[:16]), f"it is not valid durable data ({_reason(exc)})"
        ) from exc


def _decode_with(unpack: Callable[[Buffer], object], body: Buffer) -> object:
    try:
        return unpack(body)
    except DataCloneError:
        raise
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise DataCloneError(
            bytes(body[:16]), f"it is not valid durable data ({_reason(exc)})"
        ) from exc


def _unpack_fast(data: Buffer) -> object:
    return msgpack.unpackb(
        data, ext_hook=_ext_hook_fast, strict_map_key=False, raw=False, use_list=True
    )


def _unpack_tolerant(data: Buffer) -> object:
    return msgpack.unpackb(
        data,
        ext_hook=_ext_hook_tolerant,
        object_pairs_hook=_tolerant_dict,
        strict_map_key=False,
        raw=False,
        use_list=True,
    )


def _ext_hook_fast(code: int, data: bytes) -> object:
    return _decode_ext(code, data, _unpack_fast)


def _ext_hook_tolerant(code: int, data: bytes) -> object:
    return _decode_ext(code, data, _unpack_tolerant)


def _decode_ext(code: int, data: bytes, unpack: Callable[[bytes], Any]) -> object:
    raw = _RAW_DECODERS.get(code)
    if raw is not None:
        return raw(data)
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise DataCloneError(code, "unknown ext code; it was written by a newer durable")
    return decoder(unpack(data))


def _hashable_set(items: list[object]) -> set[object]:
    try:
        return set(items)
    except TypeError:
        return {_freeze(item) for item in items}


def _tolerant_dict(pairs: list[tuple[object, object]]) -> dict[object, object]:
    try:
        return dict(pairs)
    except TypeError:
        return {_freeze(key): value for key, value in pairs}


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return tuple((_freeze(k), _freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


def _tz(offset: int | None) -> timezone | None:
    return None if offset is None else timezone(timedelta(microseconds=offset))


def _decode_datetime(f: list[Any]) -> datetime:
    year, month, day, hour, minute, second, micro, fold, offset = f
    return datetime(year, month, day, hour, minute, second, micro, _tz(offset), fold=fold)


def _decode_time(f: list[Any]) -> time:
    return time(f[0], f[1], f[2], f[3], fold=f[4], tzinfo=_tz(f[5]))


def _decode_registered(f: list[Any]) -> object:
    name, payload = f
    entry = _BY_NAME.get(name)
    if entry is None:
        return payload  # not registered in this process: the plain value or dict
    try:
        if entry.is_enum:
            return entry.cls(payload)
        return _build(entry.cls, payload)
    except Exception as exc:
        raise DataCloneError(
            name,
            f"the stored value no longer fits {_path(entry.cls)} ({exc}); "
            "make the class accept what it held when the value was stored",
        ) from exc


def _build(cls: Any, fields: dict[str, Any]) -> object:
    if issubclass(cls, RootModel):
        return cls.model_validate(fields.get("root"))
    if issubclass(cls, BaseModel):
        return cls.model_validate(fields, by_name=True)
    init = {f.name: f.init for f in dataclasses.fields(cls)}
    obj = cls(**{k: v for k, v in fields.items() if init.get(k)})
    for key, value in fields.items():
        if init.get(key) is False:
            object.__setattr__(obj, key, value)  # works on frozen dataclasses too
    return obj


# Payloads that are raw bytes, not nested msgpack.
_RAW_DECODERS: dict[int, Callable[[bytes], object]] = {
    EXT_BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    EXT_DECIMAL: lambda data: Decimal(data.decode()),
    EXT_UUID: lambda data: UUID(bytes=data),
}

_DECODERS: dict[int, Callable[[Any], object]] = {
    EXT_TUPLE: tuple,
    EXT_SET: _hashable_set,
    EXT_FROZENSET: lambda items: frozenset(_hashable_set(items)),
    EXT_DATETIME: _decode_datetime,
    EXT_DATE: lambda f: date(*f),
    EXT_TIME: _decode_time,
    EXT_TIMEDELTA: lambda f: timedelta(days=f[0], seconds=f[1], microseconds=f[2]),
    EXT_ENUM: _decode_registered,
    EXT_OBJECT: _decode_registered,
}
