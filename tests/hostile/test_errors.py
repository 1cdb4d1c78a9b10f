"""Errors that say what happened, against a real uvicorn: an object raising ``SystemExit`` or
``KeyboardInterrupt`` gets a JSON 500 and a reset (not uvicorn's plain-text 500); a full disk
answers 507 ``StorageFull``, logged once per episode, and writes resume once space is freed; a
malformed RPC payload is a durable error and runs nothing; an alarm raising ``SystemExit`` is
retried like any failing alarm and stops no other."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import values
from durable.errors import InvalidArgument, RpcError
from durable.frontdoor import GatewayLimits
from durable.ids import id_from_name
from durable.testing import VirtualClock
from tests.conftest import Runner, host_of
from tests.disks import small_disk
from tests.hostile.app import make_worker
from tests.hostile.server import ServerThread, json_error

GET = b"GET /t/%s/%s HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(make_worker(), tmp_path_factory.mktemp("errors"), GatewayLimits()) as s:
        yield s


@pytest.mark.parametrize("action", [b"exit", b"interrupt"])
def test_an_object_raising_a_base_exception_gets_a_json_500_and_is_reset(
    server: ServerThread, action: bytes
) -> None:
    assert server.live is not None
    name = b"base-" + action
    assert server.exchange(GET % (name, b"count"))[0] == 200
    resets = server.live.host.statistics().resets
    status, headers, body = server.exchange(GET % (name, action))
    assert status == 500 and headers["content-type"] == "application/json"
    assert json_error(body) == "RemoteError"
    assert server.live.host.statistics().resets == resets + 1
    assert server.exchange(GET % (name, b"count"))[0] == 200  # a new activation serves
    assert server.stored(name.decode()) == {"n": 2}
    assert server.healthz() == 200


def test_a_route_outside_any_object_raising_system_exit_gets_a_json_500(
    server: ServerThread,
) -> None:
    status, headers, body = server.exchange(b"GET /raw/exit HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500 and headers["content-type"] == "application/json"
    assert json_error(body) == "InternalError"
    assert server.healthz() == 200


@pytest.mark.parametrize(
    ("method", "payload", "error"),
    [
        ("add", b"\xc1", InvalidArgument),  # not msgpack
        ("add", values.encode("just a string"), InvalidArgument),
        ("add", values.encode([[1], {1: 2}]), InvalidArgument),  # kwargs keys not str
        ("add", values.encode([[1], {}, 3]), InvalidArgument),
        ("_private", values.encode([[], {}]), RpcError),
        ("nope", values.encode([[], {}]), RpcError),
    ],
)
def test_a_malformed_rpc_payload_is_a_durable_error_and_runs_nothing(
    server: ServerThread, method: str, payload: bytes, error: type[Exception]
) -> None:
    assert server.live is not None
    oid = id_from_name("TARGET", "rpc-bad")
    with pytest.raises(error):
        server.run(server.live.host.call(oid, method, payload))
    assert server.stored("rpc-bad") == {}


# -- a full disk (a real tmpfs: needs root to mount) -------------------------------------------
def fill(disk: Path) -> Path:
    """Write a file until the disk has no space left; returns it (delete it to free the disk)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
    return filler


def test_a_full_disk_answers_507_storage_full_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durable")
    store = b"POST /t/disk/store HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
    with (
        small_disk(tmp_path / "disk") as disk,
        ServerThread(make_worker(), disk / "data", GatewayLimits()) as server,
    ):
        assert server.exchange(store % (5, b"first"))[0] == 200
        filler = fill(disk)
        for _ in range(5):
            body = b"x" * 20_000
            status, _, answer = server.exchange(store % (len(body), body))
            assert status == 507 and json_error(answer) == "StorageFull"
            assert server.healthz() == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "full" in errors[0].getMessage(), caplog.text
        filler.unlink()
        status, _, _ = server.exchange(store % (6, b"second"))
        assert status == 200
        assert server.stored("disk") == {"body": "second", "n": 2}
        assert any("succeed again" in r.getMessage() for r in caplog.records)


# -- a BaseException from alarm(), on the virtual clock ------------------------------------------
RUNS: list[tuple[str, int]] = []


class Exiting(durable.DurableObject):
    """Its first alarm raises ``SystemExit``; the retry stores that it ran."""

    async def arm(self, at_ms: int) -> None:
        await self.ctx.storage.set_alarm(at_ms)

    async def alarm(self, info: Any) -> None:
        RUNS.append((self.ctx.id.name or "", info.retry_count))
        if info.retry_count == 0:
            raise SystemExit(5)
        await self.ctx.storage.put("ran", info.retry_count)

    async def ran(self) -> Any:
        return await self.ctx.storage.get("ran")


async def test_an_alarm_raising_system_exit_is_retried_and_other_alarms_still_fire(
    run: Runner, clock: VirtualClock
) -> None:
    RUNS.clear()
    worker = durable.Worker(objects={"EXITING": Exiting})
    async with run(worker) as env:
        now_ms = int(clock.now() * 1000)
        for name in ("first", "second"):
            await env.EXITING.get_by_name(name).arm(now_ms + 1000)
        resets = host_of(env).statistics().resets
        await clock.advance(1)
        assert sorted(RUNS) == [("first", 0), ("second", 0)]  # the first exit stopped nothing
        assert host_of(env).statistics().resets == resets + 2
        await clock.advance(10)  # the retry after 2 s (+ jitter)
        assert sorted(RUNS) == [("first", 0), ("first", 1), ("second", 0), ("second", 1)]
        assert await env.EXITING.get_by_name("first").ran() == 1
