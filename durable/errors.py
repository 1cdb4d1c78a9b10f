"""Every public error of durable, in one tree.

Callers pass data (``KeyTooLarge(size, limit)``); each class builds its own message saying what
was wrong, the limit and the fix. Messages follow Cloudflare's runtime
(``../shared/reference/semantics.md``) with Python names. Where Cloudflare throws ``TypeError`` or
``RangeError``, the class also subclasses the matching Python builtin, so ``except ValueError``
keeps working for code that does not know durable::

    DurableError                        .retryable .overloaded .remote
    ├── InvalidObjectId                 (TypeError, ValueError) bad hex, length, check, namespace
    ├── InvalidArgument                 (TypeError, ValueError)  bad storage/alarm/list arguments
    │   └── InvalidRouteKey             router template fields missing, extra or not strings
    ├── RpcError                        (TypeError)  unknown/private method, no fetch()
    ├── RemoteError                     a remote exception whose class the caller cannot import
    ├── DataCloneError                  (TypeError)  a value the codec cannot store or send
    ├── KeyTooLarge                     (ValueError) key over Limits.max_key_bytes
    ├── ValueTooLarge                   (ValueError) value over Limits.max_value_bytes
    ├── BatchTooLarge                   (ValueError) more keys than Limits.max_batch_keys
    ├── MessageTooLarge                 (ValueError) RPC arguments or result over 32 MiB
    ├── StorageLimitExceeded            object storage over Limits.max_storage_bytes
    ├── StorageFull                     the disk under the data directory is full (HTTP 507)
    ├── SqlError                        (sqlite3.DatabaseError) a refused or failed sql.exec
    ├── TransactionError                (RuntimeError) misuse of a transaction
    ├── Overloaded                      too many pending events; retry later (HTTP 503)
    ├── RateLimited                     a caller's rate limit is spent; .retry_after (HTTP 429)
    ├── CpuTimeExceeded                 one event held the loop longer than Limits.cpu_ms
    ├── ObjectReset                     the object was reset while the call was pending
    ├── ConnectionLost                  the link dropped with the call in flight: it may have run
    ├── Unavailable                     no reachable owner for the object's partition: nothing ran
    ├── WebSocketError                  a hibernatable WebSocket limit or misuse (workerd's Error)
    ├── RequestTooLarge                 an HTTP request body over the gateway's limit (HTTP 413)
    ├── BackupCorrupt                   a backup without its manifest or failing its checksums
    ├── DataDirInUse                    another process holds the data directory
    └── PortInUse                       the HTTP port cannot be bound (``durable dev/serve``)

``retryable`` means the call can be sent again without risk of running twice; ``overloaded``
means the target was too busy; ``remote`` is set on errors raised inside an object and re-raised
at its caller.
"""

from __future__ import annotations

import sqlite3


class DurableError(Exception):
    """Base of every durable error."""

    retryable: bool = False
    overloaded: bool = False
    remote: bool = False


class InvalidObjectId(DurableError, TypeError, ValueError):
    """An object id string that is malformed or was minted by another namespace."""

    @classmethod
    def malformed(cls) -> InvalidObjectId:
        return cls("Invalid Durable Object ID: must be 64 hex digits")

    @classmethod
    def foreign(cls) -> InvalidObjectId:
        return cls("Durable Object ID is not valid for this namespace.")


class InvalidArgument(DurableError, TypeError, ValueError):
    """A storage, list or alarm argument of the wrong type or out of range."""


class InvalidRouteKey(InvalidArgument):
    """A router key or template field that is missing, extra or not usable in a name."""


class RpcError(DurableError, TypeError):
    """A call the receiving object does not implement."""

    @classmethod
    def no_method(cls, name: str) -> RpcError:
        return cls(f'The RPC receiver does not implement the method "{name}".')

    @classmethod
    def no_fetch(cls) -> RpcError:
        return cls("Handler does not export a fetch() function.")


class RemoteError(DurableError):
    """An exception raised inside an object whose class the caller cannot import."""

    remote = True

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name


class DataCloneError(DurableError, TypeError):
    """A value the codec cannot store or send (functions, coroutines, files, sockets...)."""

    def __init__(self, value: object, detail: str = "") -> None:
        text = repr(value)
        if len(text) > 80:
            text = text[:77] + "..."
        hint = detail or "store plain data, or register the type with durable.register_type()"
        super().__init__(f"{text} could not be cloned: {hint}.")


class KeyTooLarge(DurableError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Key is {size} bytes (UTF-8), over the limit of {limit} bytes. "
            "Use a shorter key, or hash long keys."
        )


class ValueTooLarge(DurableError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Value is {size} bytes once serialized, over the limit of {limit} bytes. "
            "Split it over several keys or use ctx.storage.sql."
        )


class BatchTooLarge(DurableError, ValueError):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"A batch call may name at most {limit} keys, but {count} were given. "
            "Split it into several calls."
        )


class MessageTooLarge(DurableError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        mib, rest = divmod(limit, 1 << 20)
        bound = f"{mib}MiB" if not rest else f"{limit} bytes"
        super().__init__(
            f"Serialized RPC arguments or return values are limited to {bound}, "
            f"but the size of this value was: {size} bytes."
        )


class StorageLimitExceeded(DurableError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"This write would bring the object's storage to {size} bytes, over its limit of "
            f"{limit} bytes. Delete data, or raise Limits.max_storage_bytes for the namespace."
        )


class StorageFull(DurableError):
    """A commit failed because the disk holding the data directory is full; nothing was written.

    Not ``retryable`` in the ``Overloaded`` sense: retrying helps only once space is freed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"The disk holding {path} is full: the write was not committed and the object was "
            "reset. Free disk space (or move the data directory); writes resume by themselves."
        )


class SqlError(DurableError, sqlite3.DatabaseError):
    """``sql.exec`` failed or was refused; the message is SQLite's, as workerd words it."""


class TransactionError(DurableError, RuntimeError):
    """A transaction used after rollback, or an operation not allowed inside one."""


class Overloaded(DurableError):
    """Too many events are pending for the object (or the connection); retry later."""

    retryable = True
    overloaded = True

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(
            f"{what} has {limit} pending events, the most it may queue; "
            "the call was not delivered. Retry later with backoff, or shard the object."
        )


class RateLimited(DurableError):
    """A caller spent its rate limit (``durable.patterns.RateLimiter``); nothing ran.

    ``retry_after`` is the number of seconds until the call would be allowed. The gateway answers
    429 with a ``Retry-After`` header (whole seconds, rounded up) and ``retry_after`` in the body.
    """

    retryable = True

    def __init__(self, what: str, retry_after: float) -> None:
        self.what = what
        self.retry_after = retry_after
        super().__init__(
            f"Rate limit for {what} reached; retry after {retry_after:.2f} s. Slow down, or raise "
            "the limit where the RateLimiter is built."
        )


class CpuTimeExceeded(DurableError):
    def __init__(self, limit_ms: int) -> None:
        super().__init__(
            f"An event held the object's thread for more than {limit_ms} ms without yielding; "
            "the object was reset. Move heavy work off the event loop or raise Limits.cpu_ms."
        )


class ObjectReset(DurableError):
    """The object was reset (failed commit, abort, blocked init) while this call was pending."""

    retryable = True

    def __init__(self, reason: str) -> None:
        super().__init__(f"The Durable Object was reset: {reason}")
        self.durable_object_reset = True


class ConnectionLost(DurableError):
    """The connection dropped with the call in flight: it may or may not have run."""

    def __init__(self, detail: str = "") -> None:
        tail = f" ({detail})" if detail else ""
        super().__init__(
            "The connection to the object's host was lost while the call was in flight; "
            f"it may or may not have run{tail}. It was not resent."
        )


class WebSocketError(DurableError):
    """A hibernatable WebSocket limit or misuse: too many sockets or tags, a long tag, a large
    attachment. Messages are workerd's (a plain ``Error`` there)."""


class RequestTooLarge(DurableError):
    """An HTTP request body over the gateway's limit; the gateway answers 413 and runs nothing."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        seen = f"{size} bytes" if size is not None else "more"
        super().__init__(
            f"The request body is {seen}, over the limit of {limit} bytes. Send a smaller body, "
            "or raise the worker's max_request_bytes."
        )


class Unavailable(DurableError):
    """The object's partition had no reachable owner in time (restart, move); nothing ran."""

    retryable = True

    def __init__(self, partition: int, waited: float) -> None:
        super().__init__(
            f"Partition {partition} had no reachable owner for {waited:.1f} s (its host is "
            "restarting or the partition is moving); the call was not run. Retry later."
        )


class BackupCorrupt(DurableError):
    """A backup whose manifest is missing or whose files do not match their checksums."""

    def __init__(self, dest: object, detail: str) -> None:
        super().__init__(
            f"The backup at {dest} cannot be used: {detail}. Take a new backup with "
            "`durable backup DATA_DIR DEST`; nothing was restored."
        )


class DataDirInUse(DurableError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"The data directory {path} is held by another process (a running `durable dev` or "
            "`durable serve`?). Pass address='auto' to connect() to use that server instead."
        )


class PortInUse(DurableError):
    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"Cannot listen on {host}:{port} ({reason}). Stop the other server on that port, "
            "or pass --port with a free one."
        )
