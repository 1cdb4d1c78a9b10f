"""What crosses an RPC: arguments and results as the other side sees them.

Guarantees:
- The callee never shares a mutable value with its caller, nor the caller with the callee's
  result: a value crosses as ``values.decode(values.encode(value))``, a copy, except a *plain*
  value, which crosses as itself because that copy would be equal, of the same type and
  immutable: ``None``, ``bool``, ``float``, ``int`` in msgpack's range, ASCII ``str`` and
  ``bytes`` (exact types; a subclass is copied, so it arrives as its base type either way).
- In process and over a channel a call sees the same values and the same errors: an argument or
  result that cannot be encoded raises ``DataCloneError``, one whose encoding is over the limit
  ``MessageTooLarge``, before the callee runs (arguments) or instead of the reply (result).
- ``decode_call`` refuses a malformed payload with ``InvalidArgument`` before anything runs.

Does not guarantee: identity. A plain value may arrive as the very same object, a copied one
never does; code must not rely on either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from durable import values
from durable.errors import InvalidArgument, MessageTooLarge

if TYPE_CHECKING:
    from durable.ids import ObjectId

_FIXED = 10  # an upper bound of the encoded size of a plain value besides its str/bytes length


def _plain_size(value: Any) -> int:
    """An upper bound of ``value``'s encoded size if it is plain, else -1."""
    kind = type(value)
    if kind is str:
        return len(value) + _FIXED if value.isascii() else -1
    if kind is int:
        return _FIXED if values.MIN_INT64 <= value <= values.MAX_UINT64 else -1
    if kind is bytes:
        return len(value) + _FIXED
    return _FIXED if value is None or kind is bool or kind is float else -1


def arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any], limit: int
) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """``args`` and ``kwargs`` as the callee receives them (see the module's guarantees)."""
    total = _FIXED
    for value in args:
        size = _plain_size(value)
        if size < 0:
            return decode_call(encode_call(args, kwargs, limit))
        total += size
    for key, value in kwargs.items():
        size = _plain_size(value)
        if size < 0 or not key.isascii():
            return decode_call(encode_call(args, kwargs, limit))
        total += size + len(key)
    if total > limit:
        return decode_call(encode_call(args, kwargs, limit))
    return args, kwargs


def result(value: Any, limit: int) -> Any:
    """``value`` as the caller receives it (see the module's guarantees)."""
    size = _plain_size(value)
    if 0 <= size <= limit:
        return value
    return values.decode(encode_result(value, limit))


def encode_call(args: Sequence[Any], kwargs: Mapping[str, Any], limit: int) -> bytes:
    """The payload of a call: ``[args, kwargs]`` encoded, at most ``limit`` bytes."""
    payload = values.encode([list(args), kwargs])  # a list: no tuple extension
    if len(payload) > limit:
        raise MessageTooLarge(len(payload), limit)
    return payload


def encode_result(value: Any, limit: int) -> bytes:
    data = values.encode(value)
    if len(data) > limit:
        raise MessageTooLarge(len(data), limit)
    return data


def decode_call(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """An RPC payload decoded as ``[args, kwargs]``, else ``InvalidArgument`` (nothing ran)."""
    try:
        decoded = values.decode(payload)
    except Exception as error:
        raise InvalidArgument(f"The RPC payload could not be decoded: {error}") from None
    if (
        not isinstance(decoded, list | tuple)
        or len(decoded) != 2
        or not isinstance(decoded[0], list | tuple)
        or not isinstance(decoded[1], dict)
        or not all(isinstance(k, str) for k in decoded[1])
    ):
        raise InvalidArgument("An RPC payload must be [args, kwargs] (a list and a str-keyed map).")
    return list(decoded[0]), cast(dict[str, Any], decoded[1])


async def call_encoded(
    send: Callable[[ObjectId, str, bytes], Awaitable[bytes]],
    oid: ObjectId,
    method: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    limit: int,
) -> Any:
    """A call through a transport that carries bytes (a channel, a Ray actor): encode the
    arguments, ``send`` them, decode the result."""
    return values.decode(await send(oid, method, encode_call(args, kwargs, limit)))
