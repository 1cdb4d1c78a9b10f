"""Shared fixtures for the conformance suite (one file per section of reference/semantics.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.testing import VirtualClock

Runner = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_700_000_000.0)


@pytest.fixture
def run(tmp_path: Path, clock: VirtualClock) -> Runner:
    """`async with run(worker) as env:` — the worker in process, fresh data dir, virtual clock."""

    @asynccontextmanager
    async def runner(worker: durable.Worker, **kw: Any) -> AsyncIterator[Any]:
        kw.setdefault("data_dir", tmp_path / "data")
        kw.setdefault("clock", clock)
        async with durable.connect(worker, **kw) as env:
            yield env

    return runner
