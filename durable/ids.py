"""Object ids: 32 bytes that name one Durable Object within one namespace (binding).

An id is a 24-byte body followed by 8 check bytes, ``hmac_sha256(k, body)[:8]``, where
``k = sha256(b"durable/ns/" + namespace.encode())``. A name-derived body is
``hmac_sha256(k, b"name:" + name.encode())[:24]``; a unique body is 24 random bytes. The algorithm
is fixed (CONTRACTS §2) so every node and every version computes the same id for a name::

    >>> str(id_from_name("COUNTER", "a"))[:8]     # 64 lower-case hex digits in all
    '620fd1e1'

Guarantees:
    - ``id_from_name`` is deterministic across processes, nodes and restarts: it is a pure
      function of (namespace, name), with no salt and no use of Python's randomised ``hash()``.
    - Ids differ per namespace: the namespace keys every HMAC, so binding one class twice gives
      two disjoint id spaces, and an id of one namespace fails ``id_from_string`` in another.
    - ``id_from_string`` accepts exactly the strings ``str(id)`` produces (in any letter case) for
      ids of that namespace: the check bytes reject typos and foreign ids before any object is
      made or any storage is touched.
    - ``new_unique_id`` never repeats in practice: 192 bits from ``secrets``.
    - ``partition(n)`` is stable: it reads the id's bytes, never ``hash()``.

Does not guarantee:
    - Secrecy. The check bytes detect mistakes, not forgery: anyone who knows the namespace can
      mint valid ids, as anyone can call ``id_from_name``.
    - That ``.name`` survives a round trip through a string: ``id_from_string`` cannot invert the
      HMAC, so its ids have ``name`` None even when a name made them (as on Cloudflare). Ids still
      compare equal by (namespace, bytes).

On failure:
    ``id_from_string`` raises ``InvalidObjectId`` (a ``TypeError`` and ``ValueError``) with
    Cloudflare's messages: "must be 64 hex digits" for a non-str, a wrong length or a non-hex
    digit; "not valid for this namespace" when the check bytes do not match. A non-str name or
    namespace, or one with a lone surrogate (not UTF-8), raises ``InvalidArgument``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from durable.errors import InvalidArgument, InvalidObjectId

__all__ = ["ObjectId", "id_from_name", "id_from_string", "new_unique_id"]

_BODY_BYTES = 24
_CHECK_BYTES = 8
_ID_BYTES = _BODY_BYTES + _CHECK_BYTES
_HEX_DIGITS = 2 * _ID_BYTES


class ObjectId:
    """The id of one object: immutable, hashable, equal by (namespace, bytes).

    Made by the functions below (or ``env.NS.id_from_name`` and friends), not by callers.
    """

    __slots__ = ("_hash", "_hex", "_name", "_namespace", "_raw")

    _raw: bytes
    _namespace: str
    _name: str | None
    _hex: str
    _hash: int

    def __init__(self, raw: bytes, namespace: str, name: str | None = None) -> None:
        if len(raw) != _ID_BYTES:
            raise InvalidObjectId.malformed()
        raw = bytes(raw)
        # Hex and hash are computed once: ids key the host's tables and name storage rows.
        setattr_ = object.__setattr__
        setattr_(self, "_raw", raw)
        setattr_(self, "_namespace", namespace)
        setattr_(self, "_name", name)
        setattr_(self, "_hex", raw.hex())
        setattr_(self, "_hash", hash((namespace, raw)))

    @property
    def raw(self) -> bytes:
        """The 32 bytes: 24 of body, 8 of check."""
        return self._raw

    @property
    def namespace(self) -> str:
        """The binding name that minted this id."""
        return self._namespace

    @property
    def name(self) -> str | None:
        """The name given to ``id_from_name``; None for unique ids and parsed strings."""
        return self._name

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"ObjectId is immutable; cannot set {attr!r}")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"ObjectId is immutable; cannot delete {attr!r}")

    def __reduce__(self) -> tuple[type[ObjectId], tuple[bytes, str, str | None]]:
        # Ray and multiprocessing pickle ids; the default protocol would call __setattr__.
        return (ObjectId, (self.raw, self.namespace, self.name))

    def __str__(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        name = "" if self.name is None else f", name={self.name!r}"
        return f"ObjectId({self._hex!r}, namespace={self.namespace!r}{name})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectId):
            return NotImplemented
        return self._raw == other._raw and self._namespace == other._namespace

    def __hash__(self) -> int:
        return self._hash

    def partition(self, partitions: int) -> int:
        """The partition (0 ≤ p < partitions) that holds this object, e.g. ``id.partition(64)``."""
        if partitions < 1:
            raise InvalidArgument(f"partitions must be at least 1, got {partitions}")
        return int.from_bytes(self.raw[:8], "big") % partitions


def id_from_name(namespace: str, name: str) -> ObjectId:
    """The id that ``name`` always maps to in ``namespace``."""
    if not isinstance(name, str):
        raise InvalidArgument(f"An object name must be a str, got {type(name).__name__}.")
    key = _namespace_key(namespace)
    if len(name) > _CACHED_NAME_CHARS:  # a cache of long names would pin their memory
        return _named_id.__wrapped__(key, namespace, name)
    return _named_id(key, namespace, name)


def new_unique_id(namespace: str) -> ObjectId:
    """A fresh random id in ``namespace``; its ``name`` is None."""
    body = secrets.token_bytes(_BODY_BYTES)
    return ObjectId(body + _hmac(_namespace_key(namespace), body)[:_CHECK_BYTES], namespace)


def id_from_string(namespace: str, text: str) -> ObjectId:
    """Parse ``str(id)`` back into an id of ``namespace`` (any letter case); ``name`` is None."""
    if not isinstance(text, str) or len(text) != _HEX_DIGITS:
        raise InvalidObjectId.malformed()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidObjectId.malformed() from None
    # fromhex skips whitespace between pairs, so "ab cd…" parses short: still malformed.
    if len(raw) != _ID_BYTES:
        raise InvalidObjectId.malformed()
    check = _hmac(_namespace_key(namespace), raw[:_BODY_BYTES])[:_CHECK_BYTES]
    if not hmac.compare_digest(check, raw[_BODY_BYTES:]):
        raise InvalidObjectId.foreign()
    return ObjectId(raw, namespace)


_CACHED_NAME_CHARS = 256  # hot objects have short names; 4,096 names of 60,000 chars held 300 MiB


@functools.lru_cache(maxsize=4096)
def _named_id(key: bytes, namespace: str, name: str) -> ObjectId:
    # Cached: a hot object is looked up by name on every request; two HMACs cost ~4 µs.
    body = _hmac(key, b"name:" + _utf8(name, "object name"))[:_BODY_BYTES]
    return ObjectId(body + _hmac(key, body)[:_CHECK_BYTES], namespace, name)


def _namespace_key(namespace: str) -> bytes:
    if not isinstance(namespace, str):
        raise InvalidArgument(f"A namespace must be a str, got {type(namespace).__name__}.")
    return _cached_namespace_key(namespace)


@functools.lru_cache(maxsize=1024)
def _cached_namespace_key(namespace: str) -> bytes:
    # Cached: id_from_name runs on every get_by_name, and there are few namespaces.
    return hashlib.sha256(b"durable/ns/" + _utf8(namespace, "namespace")).digest()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"The {what} {text!r} is not valid Unicode (it has a lone surrogate); "
            "it cannot be encoded as UTF-8."
        ) from None
