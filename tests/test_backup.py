"""``durable.backup``: consistent copies while serving, and restores of all, one partition or one
object (rows or a promoted file), refusing corrupt backups and data dirs in use."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import durable
from durable.backup import backup, read_manifest, restore
from durable.cli import app
from durable.errors import BackupCorrupt
from durable.ids import id_from_name


class Pair(durable.DurableObject):
    """Writes ``a`` and ``b`` in one commit: any consistent copy has ``a == b``."""

    async def bump(self) -> int:
        n = await self.ctx.storage.get("a", 0) + 1
        await self.ctx.storage.put({"a": n, "b": n})
        return n

    async def read(self) -> tuple[int, int]:
        got = await self.ctx.storage.get(["a", "b"])
        return got.get("a", 0), got.get("b", 0)


class Notes(durable.DurableObject):
    """An SQL object: its first ``sql.exec`` promotes it to a file of its own."""

    async def add(self, text: str) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        sql.exec("INSERT INTO notes VALUES (?)", text)
        return int(sql.exec("SELECT count(*) AS n FROM notes").one()["n"])

    async def texts(self) -> list[str]:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        return [row["text"] for row in sql.exec("SELECT text FROM notes ORDER BY rowid")]


worker = durable.Worker(objects={"PAIR": Pair, "NOTES": Notes})
NAMES = [f"p{i}" for i in range(12)]


async def state(data_dir: Path) -> dict[str, Any]:
    async with durable.connect(worker, data_dir=data_dir) as env:
        pairs = {name: await env.PAIR.get_by_name(name).read() for name in NAMES}
        notes = await env.NOTES.get_by_name("n").texts()
    return {"pairs": pairs, "notes": notes}


async def fill(data_dir: Path, rounds: int = 1) -> None:
    async with durable.connect(worker, data_dir=data_dir) as env:
        for _ in range(rounds):
            for name in NAMES:
                await env.PAIR.get_by_name(name).bump()
        await env.NOTES.get_by_name("n").add(f"note {rounds}")


async def test_backup_then_restore_into_a_new_dir_gives_the_same_objects(tmp_path: Path) -> None:
    await fill(tmp_path / "data", rounds=2)
    summary = backup(tmp_path / "data", tmp_path / "backup")
    assert summary.partitions >= 1 and summary.object_files == 1
    manifest = read_manifest(tmp_path / "backup")
    assert manifest["meta"]["partitions"] == 16
    assert all(len(p["sha256"]) == 64 for p in manifest["partitions"])
    assert restore(tmp_path / "backup", tmp_path / "copy")
    assert await state(tmp_path / "copy") == await state(tmp_path / "data")
    assert (await state(tmp_path / "copy"))["notes"] == ["note 2"]


async def test_backup_while_serving_is_consistent_and_writes_go_on(tmp_path: Path) -> None:
    acked = 0
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        await env.NOTES.get_by_name("n").add("before")
        stop = asyncio.Event()

        async def writer(name: str) -> None:
            nonlocal acked
            while not stop.is_set():
                await env.PAIR.get_by_name(name).bump()
                acked += 1
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(writer(name)) for name in NAMES]
        while acked < 100:  # the writers are running
            await asyncio.sleep(0)
        during = acked
        await asyncio.to_thread(backup, tmp_path / "data", tmp_path / "backup")
        written_meanwhile = acked - during
        stop.set()
        await asyncio.gather(*tasks)
    assert written_meanwhile > 0  # the server was not blocked by the backup
    restore(tmp_path / "backup", tmp_path / "copy")
    copied = await state(tmp_path / "copy")
    assert all(a == b for a, b in copied["pairs"].values())  # each object as of one commit
    assert 0 < sum(a for a, _ in copied["pairs"].values()) <= acked
    assert copied["notes"] == ["before"]


async def test_restore_refuses_a_data_dir_a_server_holds(tmp_path: Path) -> None:
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        await env.PAIR.get_by_name("p0").bump()
        with pytest.raises(durable.DataDirInUse, match="held by another process"):
            restore(tmp_path / "backup", tmp_path / "data")
        assert await env.PAIR.get_by_name("p0").read() == (2, 2)


async def test_restore_one_object_leaves_its_partition_neighbours_alone(tmp_path: Path) -> None:
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    await fill(tmp_path / "data", rounds=3)  # everything moves on: pairs at 4, notes +1
    touched = restore(tmp_path / "backup", tmp_path / "data", object=("PAIR", "p3"))
    assert touched == [id_from_name("PAIR", "p3").partition(16)]
    after = await state(tmp_path / "data")
    assert after["pairs"]["p3"] == (1, 1)
    assert all(pair == (4, 4) for name, pair in after["pairs"].items() if name != "p3")
    assert after["notes"] == ["note 1", "note 3"]


async def test_restore_one_promoted_object_brings_back_its_file(tmp_path: Path) -> None:
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    await fill(tmp_path / "data", rounds=2)
    restore(tmp_path / "backup", tmp_path / "data", object=("NOTES", "n"))
    after = await state(tmp_path / "data")
    assert after["notes"] == ["note 1"]
    assert after["pairs"]["p0"] == (3, 3)


async def test_restore_one_partition_keeps_the_others(tmp_path: Path) -> None:
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    await fill(tmp_path / "data", rounds=2)
    index = id_from_name("PAIR", "p5").partition(16)
    assert restore(tmp_path / "backup", tmp_path / "data", partition=index) == [index]
    after = await state(tmp_path / "data")
    for name, pair in after["pairs"].items():
        same = id_from_name("PAIR", name).partition(16) == index
        assert pair == ((1, 1) if same else (3, 3)), name


async def test_a_corrupt_or_incomplete_backup_is_refused_and_nothing_changes(
    tmp_path: Path,
) -> None:
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    await fill(tmp_path / "data", rounds=2)
    before = await state(tmp_path / "data")
    entry = read_manifest(tmp_path / "backup")["partitions"][-1]
    damaged = tmp_path / "backup" / entry["path"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match="does not match its checksum"):
        restore(tmp_path / "backup", tmp_path / "data")
    (tmp_path / "backup" / "manifest.json").unlink()
    with pytest.raises(BackupCorrupt, match=r"no manifest\.json"):
        restore(tmp_path / "backup", tmp_path / "data")
    assert await state(tmp_path / "data") == before


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(durable.InvalidArgument, match="not a durable data dir"):
        backup(tmp_path / "nothing", tmp_path / "backup")
    await fill(tmp_path / "data")
    backup(tmp_path / "data", tmp_path / "backup")
    with pytest.raises(durable.InvalidArgument, match="is not empty"):
        backup(tmp_path / "data", tmp_path / "backup")
    with pytest.raises(durable.InvalidArgument, match="Partition 99 does not exist"):
        restore(tmp_path / "backup", tmp_path / "data", partition=99)
    with pytest.raises(durable.InvalidArgument, match="not both"):
        restore(tmp_path / "backup", tmp_path / "data", partition=1, object=("PAIR", "p1"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"format": 1, "partitions": 4}))
    with pytest.raises(durable.InvalidArgument, match="different partition count"):
        restore(tmp_path / "backup", other)


async def test_cli_backup_and_restore(tmp_path: Path) -> None:
    await fill(tmp_path / "data", rounds=2)
    runner = CliRunner()
    made = runner.invoke(app, ["backup", str(tmp_path / "data"), str(tmp_path / "backup")])
    assert made.exit_code == 0, made.output
    assert "object files" in made.output
    await fill(tmp_path / "data", rounds=1)
    args = ["restore", str(tmp_path / "backup"), str(tmp_path / "data"), "--object", "PAIR:p1"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0 and "restored object PAIR:p1" in done.output, done.output
    assert (await state(tmp_path / "data"))["pairs"]["p1"] == (2, 2)
    bad = runner.invoke(app, [*args[:3], "--object", "p1"])
    assert bad.exit_code == 2 and "NS:NAME" in bad.output
    refused = runner.invoke(app, ["restore", str(tmp_path / "nowhere"), str(tmp_path / "data")])
    assert refused.exit_code == 2 and "no manifest.json" in refused.output


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ([], "--rehome takes --partition N"),
        (["--partition", "1"], "has no home-id: give the data dir of a node"),
    ],
)
def test_cli_rehome_refuses_bad_input_before_touching_anything(
    tmp_path: Path, extra: list[str], why: str
) -> None:
    target = tmp_path / "not-a-node"
    args = ["restore", str(tmp_path / "backup"), str(target), "--rehome", *extra]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and why in refused.output, refused.output
    assert not target.exists()
