"""``durable.connect``: resources released on exit, the data dir lock, meta.json (CONTRACTS §7, §9)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.env import read_meta

CLIENT = Path(__file__).with_name("crash_client.py")


class Box(durable.DurableObject):
    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)

    async def get(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def promote(self) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t(x)")
        self.ctx.storage.sql.exec("INSERT INTO t VALUES (1)")


worker = durable.Worker(objects={"BOX": Box})


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connect_leaves_no_descriptors_tasks_or_threads_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fds, threads = open_fds(), threading.active_count()
    for i in range(100):
        async with durable.connect(worker, data_dir=data) as env:
            box = env.BOX.get_by_name(f"box{i % 20}")
            if i % 4 == 0:
                await box.promote()  # opens (and must close) the object's own file
            await box.put("i", i)
    assert open_fds() == fds
    assert threading.active_count() == threads
    assert asyncio.all_tasks() == {asyncio.current_task()}
    async with durable.connect(worker, data_dir=data) as env:
        assert [await env.BOX.get_by_name(f"box{i}").get("i") for i in range(20)] == list(
            range(80, 100)
        )


async def test_two_connects_one_after_another_see_the_same_data(tmp_path: Path) -> None:
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        await env.BOX.get_by_name("a").put("k", {"v": (1, b"2")})
        await env.BOX.get_by_name("b").promote()
        await env.BOX.get_by_name("b").put("k", 2)
    async with durable.connect(worker, data_dir=tmp_path / "data") as env:
        assert await env.BOX.get_by_name("a").get("k") == {"v": (1, b"2")}
        assert await env.BOX.get_by_name("b").get("k") == 2


async def test_relative_data_dir_is_resolved_when_connect_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with durable.connect(worker) as env:
        await env.BOX.get_by_name("a").put("k", 1)
    assert (tmp_path / ".durable" / "meta.json").exists()
    monkeypatch.chdir(tmp_path.parent)
    async with durable.connect(worker, data_dir=tmp_path / ".durable") as env:
        assert await env.BOX.get_by_name("a").get("k") == 1


async def test_meta_json_records_format_and_partition_count(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with durable.connect(worker, data_dir=data):
        pass
    meta = json.loads((data / "meta.json").read_text())
    assert meta["format"] == 1
    assert meta["partitions"] == 16
    assert isinstance(meta["created"], float)
    assert sorted(p.name for p in (data / "partitions").iterdir()) == [
        f"{i:04d}" for i in range(16)
    ]


async def test_partition_count_of_an_existing_data_dir_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    read_meta(data, partitions=4)  # as a cluster created with --partitions 4 would
    async with durable.connect(worker, data_dir=data) as env:
        await env.BOX.get_by_name("a").put("k", 1)
    assert json.loads((data / "meta.json").read_text())["partitions"] == 4
    assert sorted(p.name for p in (data / "partitions").iterdir()) == [f"{i:04d}" for i in range(4)]


async def test_data_dir_held_by_another_process_raises_data_dir_in_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, str(CLIENT), "hold", str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stderr is not None
        assert holder.stdout.readline() == b"ready\n", holder.stderr.read()
        fds = open_fds()
        with pytest.raises(durable.DataDirInUse, match=r"address="):
            async with durable.connect(worker, data_dir=data):
                pass
        assert open_fds() == fds  # the partitions opened before the refusal were closed
        holder.stdin.close()  # the holder exits when its stdin closes
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()
    async with durable.connect(worker, data_dir=data) as env:
        await env.BOX.get_by_name("a").put("k", 1)


async def test_data_dir_opened_twice_in_one_process_raises_data_dir_in_use(
    tmp_path: Path,
) -> None:
    """flock locks belong to an open file description, so a second open conflicts here too."""
    data = tmp_path / "data"
    async with durable.connect(worker, data_dir=data) as env:
        await env.BOX.get_by_name("a").put("k", 1)
        fds = open_fds()
        with pytest.raises(durable.DataDirInUse, match=r"address="):
            async with durable.connect(worker, data_dir=data):
                pass
        assert open_fds() == fds
        # The first connection is unharmed: its locks and databases are still its own.
        await env.BOX.get_by_name("a").put("k", 2)
        assert await env.BOX.get_by_name("a").get("k") == 2
    async with durable.connect(worker, data_dir=data) as env:
        assert await env.BOX.get_by_name("a").get("k") == 2
