"""``Coalesced``: the writes of one loop step leave as one, a close sends them first, an abort or a
peer that left drops them. (The limits themselves are attacked in ``tests/hostile/``.)"""

from __future__ import annotations

import asyncio
from typing import Any

from durable.frontdoor import Coalesced


class Recorder:
    """A transport that records what it is asked to do."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def coalesced() -> tuple[Coalesced, Recorder]:
    recorder = Recorder()
    return Coalesced(recorder, asyncio.get_running_loop()), recorder  # type: ignore[arg-type]


async def test_the_writes_of_one_step_leave_as_one_at_its_end() -> None:
    transport, recorder = coalesced()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert recorder.writes == []  # not before the step ends
    await asyncio.sleep(0)
    assert recorder.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert recorder.writes[1:] == [b"next"]


async def test_close_sends_what_was_written_first() -> None:
    transport, recorder = coalesced()
    transport.write(b"408 refusal")
    transport.close()
    assert recorder.writes == [b"408 refusal"] and recorder.closed
    await asyncio.sleep(0)
    assert recorder.writes == [b"408 refusal"]  # the scheduled flush finds nothing left


async def test_abort_and_a_closing_peer_drop_the_pending_writes() -> None:
    transport, recorder = coalesced()
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert recorder.writes == []
    transport, recorder = coalesced()
    transport.write(b"to a peer that left")
    recorder.closed = True
    await asyncio.sleep(0)
    assert recorder.writes == []


async def test_unwrap_flushes_and_the_rest_is_the_transports_own() -> None:
    transport, recorder = coalesced()
    assert transport.get_extra_info("peername") == "info:peername"
    transport.write(b"before the upgrade")
    assert transport.unwrap() is recorder
    assert recorder.writes == [b"before the upgrade"]
