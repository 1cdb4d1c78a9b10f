"""The facade: durable/__init__.py re-exports exactly the public names, sorted."""

from __future__ import annotations

import doctest
import importlib

import durable

PUBLIC = {
    "DurableObject", "Worker", "connect", "ObjectId", "Limits", "Request", "Response",
    "JSONResponse", "WebSocket", "register_type", "DurableError", "InvalidObjectId", "RpcError",
    "RemoteError", "DataCloneError", "KeyTooLarge", "ValueTooLarge", "BatchTooLarge",
    "StorageLimitExceeded", "Overloaded", "CpuTimeExceeded", "ObjectReset", "ConnectionLost",
    "DataDirInUse", "InvalidRouteKey",
}  # fmt: skip


def test_all_is_sorted_and_complete() -> None:
    assert durable.__all__ == sorted(durable.__all__)
    assert set(durable.__all__) >= PUBLIC
    for name in durable.__all__:
        assert hasattr(durable, name), name


def test_every_error_is_a_durable_error_with_flags() -> None:
    for name in durable.__all__:
        obj = getattr(durable, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == "durable.errors"
        ):
            assert issubclass(obj, durable.DurableError)
            assert {"retryable", "overloaded", "remote"} <= set(dir(obj))


def test_errors_that_cloudflare_throws_as_type_errors_catch_as_builtins() -> None:
    assert issubclass(durable.InvalidObjectId, ValueError)
    assert issubclass(durable.InvalidObjectId, TypeError)
    assert issubclass(durable.KeyTooLarge, ValueError)
    assert issubclass(durable.DataCloneError, TypeError)


def test_docstring_examples_hold() -> None:
    for module in ("durable.cache", "durable.storage"):
        result = doctest.testmod(importlib.import_module(module))
        assert result.failed == 0 and result.attempted > 0, module
