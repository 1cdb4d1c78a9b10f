"""``durable inspect``: namespaces and objects of a data dir, read while a real server serves it
(read-only: the server keeps writing), as JSON and as rich tables, and 100,000 objects in under
5 s."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from typer.testing import CliRunner
from websockets.asyncio.client import connect as ws_connect

import durable
from durable import values
from durable.cli import app
from durable.ids import id_from_name
from durable.inspect import ObjectInfo, inspect_data_dir
from tests.live_server import live

ALARM_AT = 4_000_000_000_000  # epoch ms, far ahead: never fires during the test


class Note(durable.DurableObject):
    async def fetch(self, request: Request) -> durable.Response:
        return self.ctx.accept_websocket(request)

    async def write(self, **items: Any) -> None:
        await self.ctx.storage.put(items)

    async def remind(self) -> None:
        await self.ctx.storage.put("due", True)
        await self.ctx.storage.set_alarm(ALARM_AT)

    async def promote(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE t(x)")
        self.ctx.storage.sql.exec("INSERT INTO t VALUES (1)")

    async def alarm(self, info: Any) -> None:
        pass


def make_worker() -> durable.Worker:
    worker = durable.Worker(objects={"NOTES": Note, "OTHER": Note})

    @worker.websocket_route("/ws/{name}")
    async def socket(websocket: durable.WebSocket, env: Any) -> Any:
        return await env.NOTES.get_by_name(websocket.path_params["name"]).fetch(websocket)

    return worker


def by_name(objects: list[ObjectInfo], ns: str, name: str) -> ObjectInfo:
    raw = id_from_name(ns, name).raw.hex()
    found = [o for o in objects if o.namespace == ns and o.id == raw]
    assert len(found) == 1, (ns, name, objects)
    return found[0]


async def test_inspect_reads_a_serving_data_dir_without_disturbing_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with live(make_worker(), data_dir) as server:
        notes, other = server.env.NOTES, server.env.OTHER
        await notes.get_by_name("plain").write(a="x" * 100, b=1)
        await notes.get_by_name("reminder").remind()
        await notes.get_by_name("sql").promote()
        await other.get_by_name("plain").write(c="y")
        async with ws_connect(server.ws + "/ws/chat"):
            inventory = inspect_data_dir(data_dir)
            await notes.get_by_name("plain").write(after="still writable")  # no lock was taken
    objects = inventory.objects
    plain = by_name(objects, "NOTES", "plain")
    expected = len(b"a") + len(values.encode("x" * 100)) + len(b"b") + len(values.encode(1))
    assert (plain.keys, plain.bytes, plain.promoted, plain.alarm) == (2, expected, False, None)
    reminder = by_name(objects, "NOTES", "reminder")
    assert reminder.alarm == ALARM_AT and reminder.name == "reminder"
    sql = by_name(objects, "NOTES", "sql")
    assert sql.promoted and sql.bytes > 0 and sql.last_write is not None
    assert by_name(objects, "NOTES", "chat").sockets == 1
    assert {(n.namespace, n.objects) for n in inventory.namespaces} == {("NOTES", 4), ("OTHER", 1)}
    notes_total = next(n for n in inventory.namespaces if n.namespace == "NOTES")
    assert (notes_total.alarms, notes_total.promoted, notes_total.sockets) == (1, 1, 1)
    assert inventory.errors == []


def test_the_cli_prints_json_and_tables_and_refuses_what_is_not_a_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = fill(tmp_path / "data", 30)
    runner = CliRunner()
    as_json = runner.invoke(app, ["inspect", str(data_dir), "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert len(document["objects"]) == 30 and document["namespaces"][0]["objects"] == 30
    table = runner.invoke(app, ["inspect", str(data_dir), "--limit", "5"])
    assert table.exit_code == 0 and "BULK" in table.output and "5 of 30" in table.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a durable data directory" in missing.output


def fill(data_dir: Path, count: int, partitions: int = 16) -> Path:
    """A data dir with ``count`` objects of two keys each, written as the partitions store them
    (the runtime's schema, ids and value codec), in bulk: the runtime would take minutes."""

    async def create() -> None:
        async with durable.connect(make_worker(), data_dir=data_dir):
            pass  # meta.json and every partition's schema

    asyncio.run(create())
    rows: list[list[tuple[str, bytes, bytes, bytes]]] = [[] for _ in range(partitions)]
    for i in range(count):
        oid = id_from_name("BULK", f"object-{i}")
        for key in (b"n", b"name"):
            rows[oid.partition(partitions)].append(("BULK", oid.raw, key, values.encode(i)))
    for index, batch in enumerate(rows):
        path = data_dir / "partitions" / f"{index:04d}" / "partition.sqlite"
        with sqlite3.connect(path) as conn:
            conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?)", batch)
    return data_dir


def test_inspect_answers_for_100_000_objects_in_under_5_seconds(tmp_path: Path) -> None:
    data_dir = fill(tmp_path / "data", 100_000)
    start = time.perf_counter()
    inventory = inspect_data_dir(data_dir)
    document = inventory.to_json()
    elapsed = time.perf_counter() - start
    assert len(inventory.objects) == 100_000 and len(document) > 100_000
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    print(f"inspect: 100,000 objects in {elapsed:.2f} s")
