"""The ``durable`` command: ``dev`` and ``serve`` (CONTRACTS §6).

``durable dev [TARGET]`` serves TARGET's worker on http://127.0.0.1:8787 with its objects in this
process and data in ``./.durable``; a bare ``durable dev`` reads ``[tool.durable] app`` from
``./pyproject.toml``. TARGET is ``path/to/file.py[:attr]`` or ``package.module[:attr]`` (attr
defaults to ``worker``); the current directory and the file's directory go on ``sys.path``.
SIGTERM or Ctrl-C: stop accepting, flush, close, exit. The port is bound only when the objects'
partitions are open; ``/healthz`` then answers 200.

Until the Ray hosts land (issue #9) both commands run the objects in process (as
``connect(address=None)``); ``--address`` is refused with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer
import uvicorn

from durable.backup import Progress, backup, restore
from durable.bench import STUDIES, run_suite
from durable.collector import Collector
from durable.connection import connect
from durable.errors import DataDirInUse, DurableError, InvalidArgument, PortInUse
from durable.gateway import Health, build_app, host_of, server_config
from durable.logs import configure as configure_logs
from durable.partition import Partition
from durable.worker import Worker, load_worker

app = typer.Typer(add_completion=False, help="Durable Objects for Python.")
STUDY_NAMES = [study.name for study in STUDIES]


def default_target(pyproject: Path = Path("pyproject.toml")) -> str:
    if pyproject.is_file():
        app_target = tomllib.loads(pyproject.read_text()).get("tool", {}).get("durable", {})
        if "app" in app_target:
            return str(app_target["app"])
    raise InvalidArgument("no TARGET given and no [tool.durable] app in ./pyproject.toml")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal capture: uvicorn re-raises a caught SIGTERM once it
    stops, which killed the process (exit -15) before ``connect`` could commit and close.
    ``serve_in_process`` handles SIGTERM and SIGINT itself."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop_on_signals(server: uvicorn.Server) -> None:
    """SIGTERM or SIGINT: stop serving (then ``connect`` commits and closes); a second SIGINT
    stops without waiting for open connections."""
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        server.force_exit = server.should_exit and sig is signal.SIGINT
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or ``PortInUse`` (one line with the fix, not uvicorn's exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP;
    # with Nagle on, a response's body waits for the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortInUse(host, port, error.strerror or str(error)) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve_in_process(worker: Worker, host: str, port: int, data_dir: Path) -> None:
    """The objects, the gateway and its WebSockets in this process; returns when stopped."""
    health = Health()
    async with connect(worker, data_dir=data_dir) as env:
        gateway = build_app(worker, env, health, host=host_of(env), sole_holder=True)
        config = server_config(gateway, host, port, log_level="info", log_config=None)
        server = _Server(config)
        _stop_on_signals(server)
        listening = _bind(host, port)  # only once the partitions are open
        health.ready = True
        serving = asyncio.ensure_future(server.serve(sockets=[listening]))
        collector = Collector()  # full collections on a schedule, not behind requests
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            typer.echo(f"durable: serving on http://{host}:{port}")
            collector.start()
            await serving
        finally:
            collector.stop()
            health.ready = False
            gateway.close()


@dataclass(frozen=True)
class RunOptions:
    target: str | None
    host: str
    port: int
    data_dir: Path
    address: str | None = None
    in_process: bool = False
    slots: int | None = None
    partitions: int = 16
    log_format: str = "text"


def _run(options: RunOptions) -> None:
    configure_logs(options.log_format)
    try:
        target = options.target or default_target()
        worker = load_worker(target)
    except (InvalidArgument, ImportError, SyntaxError) as error:
        _fail(f"cannot load {options.target or 'the app'}: {error}")
    if options.in_process:
        try:
            asyncio.run(serve_in_process(worker, options.host, options.port, options.data_dir))
        except DataDirInUse as error:  # expected: one line with the fix, exit 2
            _fail(f"{error} {HELD_FIX}")
        except PortInUse as error:
            _fail(str(error))
        return
    from durable.cluster import serve_cluster

    try:
        _refuse_held(options.data_dir)
    except DataDirInUse as error:
        _fail(f"{error} {HELD_FIX}")
    serving = serve_cluster(
        _absolute(target), options.host, options.port, options.data_dir, options.address,
        slots=options.slots, partitions=options.partitions,
    )  # fmt: skip
    asyncio.new_event_loop().run_until_complete(serving)
    # Every slot committed and closed and Ray is down: skip the loop's and the interpreter's
    # slow teardown (executor threads, Ray's atexit hooks) so SIGTERM ends us within 2 s.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


HELD_FIX = "Or stop that server, or pass another --data-dir."


def _refuse_held(data_dir: Path) -> None:
    """``DataDirInUse`` if a running server holds ``data_dir``, checked before Ray starts: a
    Ray server on a held directory would report serving, time out every call and take over the
    other server's channel socket. Each partition's ``flock`` is taken and released in turn."""
    meta = data_dir / "meta.json"
    if not meta.is_file():
        return  # a new data dir: nobody serves it yet
    for index in range(int(json.loads(meta.read_text())["partitions"])):
        partition = Partition(data_dir.resolve(), index)
        partition.open()
        partition.close()


def _fail(message: str) -> NoReturn:
    typer.echo(f"durable: {message}", err=True)
    raise typer.Exit(2)


def _absolute(target: str) -> str:
    """A file target made absolute, so Ray workers (another cwd) find it."""
    spec, sep, attr = target.partition(":")
    return str(Path(spec).resolve()) + sep + attr if spec.endswith(".py") else target


IN_PROCESS = typer.Option(False, "--in-process", help="run objects in this process, no Ray")
SLOTS = typer.Option(None, help="host slots (default: one per CPU left, at least 1)")
PARTITIONS = typer.Option(16, help="partitions of a new data dir (fixed once created)")
LOG_FORMAT = typer.Option("text", help="text or json (one JSON object per line)")


@app.command()
def dev(
    target: str = typer.Argument(None, help="file.py[:attr] or module[:attr]"),
    port: int = 8787,
    host: str = "127.0.0.1",
    data_dir: Path = Path(".durable"),
    reload: bool = typer.Option(False, help="restart when a file under . changes"),
    in_process: bool = IN_PROCESS,
    slots: int = SLOTS,
    partitions: int = PARTITIONS,
    log_format: str = LOG_FORMAT,
) -> None:
    """Serve a worker on a private local Ray (address="local"), data in ./.durable."""
    options = RunOptions(
        target, host, port, data_dir, None, in_process, slots, partitions, log_format
    )
    if reload:
        import watchfiles

        watchfiles.run_process(Path.cwd(), target=_run, args=(options,))
    else:
        _run(options)


@app.command()
def serve(
    target: str = typer.Argument(..., help="file.py[:attr] or module[:attr]"),
    port: int = 8787,
    host: str = "127.0.0.1",
    data_dir: Path = Path(".durable"),
    address: str = typer.Option(None, help="Ray cluster to join (auto or HOST:PORT)"),
    in_process: bool = IN_PROCESS,
    slots: int = SLOTS,
    partitions: int = PARTITIONS,
    log_format: str = LOG_FORMAT,
) -> None:
    """Serve a worker: on a new local Ray, or on the cluster at --address."""
    options = RunOptions(
        target, host, port, data_dir, address, in_process, slots, partitions, log_format
    )
    _run(options)


INSPECTED = typer.Argument(Path(".durable"), help="the data dir (may be serving)")
AS_JSON = typer.Option(False, "--json", help="everything as one JSON document")
LIMIT = typer.Option(50, help="objects shown in the table, largest first (0: all)")


@app.command("inspect")
def inspect_command(
    data_dir: Path = INSPECTED, as_json: bool = AS_JSON, limit: int = LIMIT
) -> None:
    """Namespaces and objects of a data dir: sizes, alarms, sockets (read-only: safe to run
    while it serves)."""
    from durable.inspect import inspect_data_dir, render

    try:
        inventory = inspect_data_dir(data_dir)
    except DurableError as error:
        _fail(str(error))
    if as_json:
        typer.echo(inventory.to_json())
    else:
        render(inventory, limit)


BENCH_OUT = typer.Option(None, help="results folder (default: benchmarks/results)")
STUDY_ARGS = typer.Option([], "--study-args", help="NAME=ARGS: extra arguments for one study")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="short runs (under 10 minutes in all)"),
    only: str = typer.Option(None, help="comma list of studies: " + ", ".join(STUDY_NAMES)),
    out: Path = BENCH_OUT,
    study_args: list[str] = STUDY_ARGS,
) -> None:
    """Run the benchmark studies one at a time and write REPORT.md beside their results."""
    try:
        report, outcomes = run_suite(quick, only, out, study_args)
    except InvalidArgument as error:
        typer.echo(f"durable: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {report}")
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@contextmanager
def _progress_bar(what: str) -> Iterator[Progress]:
    """A rich progress bar over partitions, as a ``backup.Progress`` callback."""
    from rich.progress import Progress as Bar

    with Bar(transient=False) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{what}: {label}")

        yield advance


SOURCE_DIR = typer.Argument(..., help="the data dir to copy (may be serving)")
BACKUP_DIR = typer.Argument(..., help="a new or empty directory for the backup")
BACKUP_IN = typer.Argument(..., help="a backup made by `durable backup`")
TARGET_DIR = typer.Argument(..., help="the data dir to restore into (not serving)")
ONE_PARTITION = typer.Option(None, help="restore only this partition")
ONE_OBJECT = typer.Option(None, "--object", help="restore only this object: NS:NAME")


@app.command("backup")
def backup_command(data_dir: Path = SOURCE_DIR, dest: Path = BACKUP_DIR) -> None:
    """Copy every partition and object file with SQLite's online backup API (safe while serving)."""
    try:
        with _progress_bar("backup") as progress:
            summary = backup(data_dir, dest, progress)
    except DurableError as error:
        typer.echo(f"durable: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"backed up {summary.partitions} partitions and {summary.object_files} object files "
        f"({summary.bytes} bytes) to {summary.dest} in {summary.seconds:.2f} s"
    )


@app.command("restore")
def restore_command(
    dest: Path = BACKUP_IN,
    data_dir: Path = TARGET_DIR,
    partition: int = ONE_PARTITION,
    object_: str = ONE_OBJECT,
) -> None:
    """Restore a backup: everything, one partition, or one object's rows or file."""
    target = None
    if object_ is not None:
        ns, sep, name = object_.partition(":")
        if not (sep and ns and name):
            message = f"--object takes NS:NAME (binding and object name), not {object_!r}"
            typer.echo(f"durable: {message}", err=True)
            raise typer.Exit(2)
        target = (ns, name)
    try:
        with _progress_bar("restore") as progress:
            touched = restore(dest, data_dir, partition, target, progress)
    except DurableError as error:
        typer.echo(f"durable: {error}", err=True)
        raise typer.Exit(2) from None
    what = f"object {object_}" if target else f"{len(touched)} partition(s)"
    typer.echo(f"restored {what} into {data_dir.resolve()}")


def main() -> None:
    app()
