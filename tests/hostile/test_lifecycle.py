"""``durable serve --in-process`` as a subprocess: expected start-up failures are one line with
the fix and exit code 2 (no traceback); SIGTERM and SIGINT both commit, close and exit 0 with the
WAL checkpointed; ``--log-format json`` writes one JSON object per line, access paths cut short."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

import durable
from tests.hostile.app import make_worker

APP = str(Path(__file__).with_name("app.py"))
DURABLE = [str(Path(sys.executable).parent / "durable")]  # the installed console script
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    *args: str, data_dir: Path, ray: bool = False, log: IO[str] | None = None
) -> subprocess.Popen[str]:
    """``durable serve``; its log (stderr) goes to ``log`` (a file: a pipe nobody reads while the
    server runs would fill and block its logging), or both streams to pipes if None."""
    mode = [] if ray else ["--in-process"]
    command = [*DURABLE, "serve", *args, *mode, "--data-dir", str(data_dir)]
    if log is None:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)


def fails_at_start(*args: str, data_dir: Path, ray: bool = False) -> str:
    """Run a serve that must refuse to start; its stderr (one line, exit code 2)."""
    process = serve(*args, data_dir=data_dir, ray=ray)
    _, err = process.communicate(timeout=START_TIMEOUT)
    assert process.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@contextmanager
def serving(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str, IO[str]]]:
    """A server on ``data_dir`` answering ``/healthz``: (process, base URL, its log file)."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = serve(APP, "--port", str(port), *extra, data_dir=data_dir, log=log)
        try:
            yield process, _ready(process, f"http://127.0.0.1:{port}"), log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _ready(process: subprocess.Popen[str], base: str) -> str:
    """``base`` once ``/healthz`` answers 200 (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def ended(process: subprocess.Popen[str], log: IO[str], sig: signal.Signals) -> str:
    """Send ``sig``, wait (bounded) for the exit, return everything the server logged."""
    process.send_signal(sig)
    process.wait(timeout=10)
    log.seek(0)
    return log.read()


def wal_is_checkpointed(data_dir: Path) -> bool:
    wals = list(data_dir.glob("partitions/*/*-wal"))
    return all(wal.stat().st_size == 0 for wal in wals)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_commit_close_and_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "data"
    with serving(data_dir) as (process, base, log):
        assert httpx.get(base + "/t/kept/count").json() == {"n": 1}
        err = ended(process, log, sig)
        assert process.returncode == 0, err
    assert "Traceback" not in err
    assert wal_is_checkpointed(data_dir)

    async def stored() -> object:
        env: Any
        async with durable.connect(make_worker(), data_dir=data_dir) as env:
            return await env.TARGET.get_by_name("kept").stored()

    assert asyncio.run(stored()) == {"n": 1}


def test_a_held_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serving(data_dir):
        line = fails_at_start(APP, "--port", str(free_port()), data_dir=data_dir)
    assert "is held by another process" in line and "--data-dir" in line


def test_a_ray_server_refuses_a_held_data_dir_before_starting_ray(tmp_path: Path) -> None:
    """Checked before Ray starts, so the refused server never serves, binds or replaces
    anything of the running one: that one keeps answering."""
    data_dir = tmp_path / "data"
    with serving(data_dir) as (_, base, _log):
        runtime = sorted(Path(f"/tmp/durable-{os.getuid()}").glob("**/*"))
        start = time.monotonic()
        line = fails_at_start(APP, "--port", str(free_port()), data_dir=data_dir, ray=True)
        assert time.monotonic() - start < 15  # Ray alone takes ~8 s to start here
        assert "is held by another process" in line
        assert httpx.get(base + "/t/after/count").json() == {"n": 1}
        assert sorted(Path(f"/tmp/durable-{os.getuid()}").glob("**/*")) == runtime


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = fails_at_start(APP, "--port", str(port), data_dir=tmp_path / "data")
    assert f"Cannot listen on 127.0.0.1:{port}" in line and "--port" in line


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("no/such/file.py", "no such file"),
        (f"{APP}:nothing_here", "is not a durable.Worker"),
        ("no_such_module_anywhere", "No module named"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_2(tmp_path: Path, target: str, says: str) -> None:
    line = fails_at_start(target, data_dir=tmp_path / "data")
    assert says in line


def test_log_format_json_writes_one_object_per_line_with_paths_cut(tmp_path: Path) -> None:
    with serving(tmp_path / "data", "--log-format", "json") as (process, base, log):
        long_name = "n" * 5000
        assert httpx.get(f"{base}/t/{long_name}/count").status_code == 200
        err = ended(process, log, signal.SIGTERM)
    records = [json.loads(line) for line in err.strip().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = [r["message"] for r in records if r["logger"] == "uvicorn.access"]
    long_lines = [m for m in access if "nnnn" in m]
    assert long_lines and all(len(m) < 400 and "chars)" in m for m in long_lines)
