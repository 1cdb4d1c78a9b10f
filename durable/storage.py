"""``ctx.storage``: Cloudflare's Durable Object storage API for one object.

Guarantees:
- Every method validates all of its arguments (types, key and value sizes, batch size) and
  encodes every value before it changes anything: a bad call raises and writes nothing.
- Storage calls never suspend the object's turn (they are ``async`` for Cloudflare's shape, but
  complete without yielding), so get-then-put from concurrent events never loses an update;
  any other await lets the next event in (input gate, as in workerd).
- ``put``/``delete`` return once buffered; the reply of the event (and any outgoing call) waits
  for the commit holding them (output gate). ``sync()`` waits for that commit itself.
- ``list()`` orders keys by UTF-8 bytes (= code points); ``get([...])`` returns found keys only,
  in that order. ``transaction(fn)`` commits all of ``fn``'s writes at once or none.
- While a transaction callback runs, ``storage`` itself reads and writes through it (as in
  Cloudflare, where ``storage.get`` inside the callback sees the transaction's writes).

Does not guarantee:
- Writes made by a handler that later raises are kept (as in Cloudflare); only ``transaction()``
  rolls back. SQL statements are not undone by ``transaction()``; use ``transaction_sync``.

On failure: a failed commit resets the object; callers waiting on it get ``ObjectReset``.

Python decisions where Cloudflare is JavaScript-shaped (documented for users): keys must be
``str`` (a non-str key raises ``InvalidArgument``, no coercion); ``list(limit=)`` takes a positive
``int``; a naive ``datetime`` passed to ``set_alarm`` means local time, as ``datetime.timestamp``.
"""

from __future__ import annotations

import builtins
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from durable import values
from durable.cache import KeyRange, ObjectCache, TxnLayer
from durable.errors import (
    BatchTooLarge,
    InvalidArgument,
    KeyTooLarge,
    TransactionError,
    ValueTooLarge,
)
from durable.gates import wait_durable
from durable.limits import Limits

if TYPE_CHECKING:
    from durable.sql import SqlStorage

T = TypeVar("T")
_NO_VALUE: Any = object()
_DATE_TYPE = (
    "Failed to execute 'set_alarm' on 'DurableObjectStorage': parameter 1 is not of type 'date'."
)


class StorageContext:
    """What every Storage view of one object shares: the cache, limits and open transactions."""

    __slots__ = ("cache", "has_alarm_handler", "limits", "stack")

    def __init__(self, cache: ObjectCache, limits: Limits, has_alarm_handler: bool) -> None:
        self.cache = cache
        self.limits = limits
        self.has_alarm_handler = has_alarm_handler
        self.stack: list[TxnLayer] = []

    def now_ms(self) -> int:
        return int(self.cache.host.clock.now() * 1000)

    def make_sql(self) -> SqlStorage:
        from durable.sql import SqlStorage

        host, cache = self.cache.host, self.cache
        return SqlStorage(lambda: host.open_file(cache), cache.touch_sql)

    async def sync(self) -> None:
        await wait_durable(self.cache)

    @property
    def top(self) -> ObjectCache | TxnLayer:
        return self.stack[-1] if self.stack else self.cache


class SyncKv:
    """``ctx.storage.kv``: the same KV API, synchronous (as Cloudflare's SQLite-backed ``kv``)."""

    def __init__(self, shared: StorageContext, layer: TxnLayer | None = None) -> None:
        self._shared = shared
        self._layer = layer
        self.rolled_back = False

    @property
    def _target(self) -> ObjectCache | TxnLayer:
        return self._layer if self._layer is not None else self._shared.top

    def _guard(self, op: str) -> None:
        if self.rolled_back:
            raise TransactionError(f"Cannot {op}() on rolled back transaction")

    def get(self, key: str | Iterable[str] = _NO_VALUE, default: Any = None) -> Any:
        self._guard("get")
        if isinstance(key, str):
            data = self._target.read(key)
            return default if data is None else values.decode(data)
        keys = self._keys(key, "get")
        found = {k: self._target.read(k) for k in sorted(set(keys))}
        return {k: values.decode(v) for k, v in found.items() if v is not None}

    def put(self, key: str | Mapping[str, Any], value: Any = _NO_VALUE) -> None:
        self._guard("put")
        if isinstance(key, str):
            if value is _NO_VALUE:
                raise InvalidArgument("put() called without a value; use put(key, value).")
            entries = {key: value}
        elif isinstance(key, Mapping) and value is _NO_VALUE:
            entries = dict(key)
            self._batch(len(entries))
        else:
            raise InvalidArgument(
                "put() may only be called with a single key-value pair as put(key, value) "
                "or with multiple key-value pairs as put({key: value, ...})"
            )
        encoded = {self._key(k): self._encode(v) for k, v in entries.items()}
        self._target.write(encoded)

    def delete(self, key: str | Iterable[str]) -> bool | int:
        self._guard("delete")
        if isinstance(key, str):
            existed = self._target.read(key) is not None
            if existed:
                self._target.write({key: None})
            return existed
        keys = set(self._keys(key, "delete"))
        present = {k: None for k in keys if self._target.read(k) is not None}
        if present:
            self._target.write(present)
        return len(present)

    def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        self._guard("list")
        r = _range(prefix, start, start_after, end, reverse, limit)
        return {k: values.decode(v) for k, v in self._target.scan(r)}

    # -- validation ---------------------------------------------------------------------------
    def _key(self, key: object) -> str:
        if not isinstance(key, str):
            raise InvalidArgument(f"Keys must be str, not {type(key).__name__}.")
        size = len(key.encode())
        if size > self._shared.limits.max_key_bytes:
            raise KeyTooLarge(size, self._shared.limits.max_key_bytes)
        return key

    def _keys(self, keys: object, op: str) -> builtins.list[str]:
        if keys is _NO_VALUE or isinstance(keys, bytes | Mapping) or not isinstance(keys, Iterable):
            raise InvalidArgument(
                f"Failed to execute '{op}' on 'DurableObjectStorage': parameter 1 is not of "
                "type 'str or list'."
            )
        out: builtins.list[object] = list(keys)
        self._batch(len(out))
        for k in out:
            if not isinstance(k, str):
                raise InvalidArgument(f"Keys must be str, not {type(k).__name__}.")
        return out  # type: ignore[return-value]  # every item checked above

    def _batch(self, count: int) -> None:
        if count > self._shared.limits.max_batch_keys:
            raise BatchTooLarge(count, self._shared.limits.max_batch_keys)

    def _encode(self, value: Any) -> bytes:
        data = values.encode(value)
        if len(data) > self._shared.limits.max_value_bytes:
            raise ValueTooLarge(len(data), self._shared.limits.max_value_bytes)
        return data


def _range(
    prefix: str | None,
    start: str | None,
    start_after: str | None,
    end: str | None,
    reverse: bool,
    limit: int | None,
) -> KeyRange:
    """Turn list() options into one key range (prefix intersected with start/end)."""
    options = {"prefix": prefix, "start": start, "start_after": start_after, "end": end}
    for name, v in options.items():
        if v is not None and not isinstance(v, str):
            raise InvalidArgument(f"list() option {name} must be a str, not {type(v).__name__}.")
    if start is not None and start_after is not None:
        raise InvalidArgument("list() cannot be called with both start and start_after values.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidArgument(f"list() limit must be an int, not {type(limit).__name__}.")
    if limit is not None and limit <= 0:
        raise InvalidArgument("List limit must be positive.")
    lo, lo_open = (start_after, True) if start_after is not None else (start, False)
    hi = end
    if prefix:
        if lo is None or lo < prefix:
            lo, lo_open = prefix, False
        bound = _successor(prefix)
        if bound is not None and (hi is None or bound < hi):
            hi = bound
    return KeyRange(lo, lo_open, hi, bool(reverse), limit)


class Storage:
    """``ctx.storage`` (and, bound to a transaction layer, ``txn``)."""

    def __init__(self, shared: StorageContext, layer: TxnLayer | None = None) -> None:
        self._shared = shared
        self.kv = SyncKv(shared, layer)

    async def get(self, key: str | Iterable[str] = _NO_VALUE, default: Any = None) -> Any:
        return self.kv.get(key, default)

    async def put(self, key: str | Mapping[str, Any], value: Any = _NO_VALUE) -> None:
        self.kv.put(key, value)

    async def delete(self, key: str | Iterable[str]) -> bool | int:
        return self.kv.delete(key)

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        return self.kv.list(
            prefix=prefix, start=start, start_after=start_after, end=end, reverse=reverse,
            limit=limit,
        )  # fmt: skip

    async def delete_all(self) -> None:
        if self._shared.stack:
            raise TransactionError("Cannot call delete_all() within a transaction")
        self._shared.cache.clear()

    # -- alarms -------------------------------------------------------------------------------
    async def get_alarm(self) -> int | None:
        self.kv._guard("get_alarm")
        return self.kv._target.get_alarm()

    async def set_alarm(self, when: int | float | datetime) -> None:
        self.kv._guard("set_alarm")
        ms = _alarm_ms(when)
        if not self._shared.has_alarm_handler:
            raise InvalidArgument(
                "Your Durable Object class must have an alarm() handler in order to call "
                "set_alarm()"
            )
        self.kv._target.set_alarm(max(ms, self._shared.now_ms()))

    async def delete_alarm(self) -> None:
        self.kv._guard("delete_alarm")
        self.kv._target.set_alarm(None)

    # -- transactions, sync, sql --------------------------------------------------------------
    async def transaction(self, fn: Callable[[Transaction], Awaitable[T] | T]) -> T:
        txn = Transaction(self._shared, TxnLayer(self.kv._target))
        self._shared.stack.append(txn.layer)
        try:
            result = fn(txn)
            if inspect.isawaitable(result):
                result = await result
            if not txn.kv.rolled_back:
                txn.layer.merge()
            return result
        finally:
            self._shared.stack.remove(txn.layer)

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` atomically: its KV writes and (for SQL objects) SQL writes, or none."""
        layer = TxnLayer(self.kv._target)
        self._shared.stack.append(layer)
        try:
            promoted = self._shared.cache.file is not None
            result = self.sql.transaction_sync(fn) if promoted else fn()
            layer.merge()
            return result
        finally:
            self._shared.stack.remove(layer)

    async def sync(self) -> None:
        await self._shared.sync()

    @property
    def sql(self) -> SqlStorage:
        return self._shared.make_sql()

    def scoped(self, key: str) -> ScopedStorage:
        """A view of this storage holding only routing key ``key``'s data (``ScopedStorage``)."""
        return ScopedStorage(self, key)


class Transaction(Storage):
    """``txn`` in ``storage.transaction(fn)``: a private buffer committed when ``fn`` returns."""

    def __init__(self, shared: StorageContext, layer: TxnLayer) -> None:
        super().__init__(shared, layer)
        self.layer = layer

    def rollback(self) -> None:
        """Discard this transaction's writes; later use of ``txn`` raises ``TransactionError``."""
        self.layer.changes.clear()
        self.kv.rolled_back = True


def _successor(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound).

    >>> _successor("user:")
    'user;'
    """
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if point <= 0x10FFFF:
            return "".join(chars) + chr(0xE000 if 0xD800 <= point <= 0xDFFF else point)
    return None


def _alarm_ms(when: object) -> int:
    if isinstance(when, datetime):
        return int(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise InvalidArgument(_DATE_TYPE)
    if math.isnan(when) or math.isinf(when):
        raise InvalidArgument("The value cannot be converted because it is not a valid Date.")
    if when <= 0:
        raise InvalidArgument("set_alarm() cannot be called with an alarm time <= 0")
    return int(when)


# -- scoped storage (routers, CONTRACTS §10) -----------------------------------------------------
SCOPE_SEPARATOR = "\x00"


class ScopedStorage:
    """``ctx.storage.scoped(key)``: one routing key's slice of an object's storage.

    Stored keys are ``key + "\\x00" + k``, so the runtime can copy, verify and delete one routing
    key's rows without knowing the app (CONTRACTS §10). Example: ``scoped("alice").put("n", 1)``
    stores ``"alice\\x00n"``; ``scoped("alice").list()`` returns ``{"n": 1}``.

    Guarantees: every method has ``Storage``'s semantics and validation, restricted to the scope:
    ``list`` options apply inside it and the prefix is stripped from returned keys;
    ``delete_all()`` deletes this scope's keys only (in one turn, so in one commit), never the
    alarm or SQL tables. Calls never suspend the turn, as ``Storage``'s.

    Does not guarantee: the key-size limit counts the stored key (routing key, separator, key).
    A routing key may not contain ``"\\x00"`` (``InvalidRouteKey``), or scopes would overlap.
    """

    __slots__ = ("_prefix", "_storage", "key")

    def __init__(self, storage: Storage, key: str) -> None:
        from durable.errors import InvalidRouteKey

        if not isinstance(key, str) or not key or SCOPE_SEPARATOR in key:
            raise InvalidRouteKey(
                f"A routing key must be a non-empty str without '\\x00', not {key!r}."
            )
        self._storage = storage
        self._prefix = key + SCOPE_SEPARATOR
        self.key = key

    def __repr__(self) -> str:
        return f"ScopedStorage({self.key!r})"

    def _full(self, key: Any) -> Any:
        # Non-str keys pass through unchanged so Storage raises its own message for them.
        return self._prefix + key if isinstance(key, str) else key

    def _strip(self, found: Mapping[str, Any]) -> dict[str, Any]:
        cut = len(self._prefix)
        return {k[cut:]: v for k, v in found.items()}

    async def get(self, key: str | Iterable[str] = _NO_VALUE, default: Any = None) -> Any:
        if isinstance(key, str) or key is _NO_VALUE:
            return self._storage.kv.get(self._full(key), default)
        if isinstance(key, bytes | Mapping) or not isinstance(key, Iterable):
            return self._storage.kv.get(key, default)  # raises Storage's type error
        return self._strip(self._storage.kv.get([self._full(k) for k in key]))

    async def put(self, key: str | Mapping[str, Any], value: Any = _NO_VALUE) -> None:
        if isinstance(key, Mapping) and value is _NO_VALUE:
            self._storage.kv.put({self._full(k): v for k, v in key.items()})
        else:
            self._storage.kv.put(self._full(key), value)

    async def delete(self, key: str | Iterable[str]) -> bool | int:
        if isinstance(key, str | bytes | Mapping) or not isinstance(key, Iterable):
            return self._storage.kv.delete(self._full(key))
        return self._storage.kv.delete([self._full(k) for k in key])

    async def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        inner = self._prefix + prefix if isinstance(prefix, str) else prefix
        found = self._storage.kv.list(
            prefix=self._prefix if inner is None else inner,
            start=self._full(start) if start is not None else None,
            start_after=self._full(start_after) if start_after is not None else None,
            end=self._full(end) if end is not None else None,
            reverse=reverse,
            limit=limit,
        )
        return self._strip(found)

    async def delete_all(self) -> int:
        """Delete every key of this scope in one buffered write; returns how many there were."""
        kv = self._storage.kv
        kv._guard("delete_all")
        rows = kv._target.scan(_range(self._prefix, None, None, None, False, None))
        if rows:
            kv._target.write({k: None for k, _ in rows})
        return len(rows)

    async def transaction(self, fn: Callable[[ScopedStorage], Awaitable[T] | T]) -> T:
        """``Storage.transaction`` with ``fn`` given this scope's view of the transaction."""

        async def scoped(txn: Transaction) -> T:
            result = fn(ScopedTransaction(txn, self.key))
            return await result if inspect.isawaitable(result) else result

        return await self._storage.transaction(scoped)


class ScopedTransaction(ScopedStorage):
    """``txn`` in ``scoped.transaction(fn)``: the scope's view of a transaction."""

    __slots__ = ()

    def rollback(self) -> None:
        txn = self._storage
        assert isinstance(txn, Transaction)  # only built by ScopedStorage.transaction
        txn.rollback()
