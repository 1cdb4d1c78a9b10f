"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.host import Host
from durable.host import host_of as find_host
from durable.testing import VirtualClock

Runner = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_700_000_000.0)


@pytest.fixture
def run(tmp_path: Path, clock: VirtualClock) -> Runner:
    """`async with run(worker) as env:` — in process, fresh data dir, virtual clock."""

    @asynccontextmanager
    async def runner(worker: durable.Worker, **kw: Any) -> AsyncIterator[Any]:
        kw.setdefault("data_dir", tmp_path / "data")
        kw.setdefault("clock", clock)
        async with durable.connect(worker, **kw) as env:
            yield env

    return runner


def host_of(env: Any) -> Host:
    """The in-process Host behind an env (its namespaces' transport)."""
    host = find_host(env)
    if host is None:
        raise LookupError("env has no in-process namespace")
    return host
