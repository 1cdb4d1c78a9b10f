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
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import typer
import uvicorn

from durable.bench import STUDIES, run_suite
from durable.collector import Collector
from durable.connection import connect
from durable.errors import InvalidArgument
from durable.gateway import Health, build_app, host_of, server_config
from durable.worker import Worker, load_worker

app = typer.Typer(add_completion=False, help="Durable Objects for Python.")
STUDY_NAMES = [study.name for study in STUDIES]


def default_target(pyproject: Path = Path("pyproject.toml")) -> str:
    if pyproject.is_file():
        app_target = tomllib.loads(pyproject.read_text()).get("tool", {}).get("durable", {})
        if "app" in app_target:
            return str(app_target["app"])
    raise InvalidArgument("no TARGET given and no [tool.durable] app in ./pyproject.toml")


async def serve_in_process(worker: Worker, host: str, port: int, data_dir: Path) -> None:
    """The objects, the gateway and its WebSockets in this process; returns when stopped."""
    health = Health()
    async with connect(worker, data_dir=data_dir) as env:
        gateway = build_app(worker, env, health, host=host_of(env), sole_holder=True)
        server = uvicorn.Server(server_config(gateway, host, port, log_level="info"))
        health.ready = True
        serving = asyncio.ensure_future(server.serve())
        collector = Collector()  # full collections on a schedule, not behind requests
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
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


def _run(options: RunOptions) -> None:
    target = options.target or default_target()
    try:
        worker = load_worker(target)
    except (InvalidArgument, ImportError) as error:
        typer.echo(f"durable: {error}", err=True)
        raise typer.Exit(2) from None
    if options.in_process:
        asyncio.run(serve_in_process(worker, options.host, options.port, options.data_dir))
        return
    from durable.cluster import serve_cluster

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


def _absolute(target: str) -> str:
    """A file target made absolute, so Ray workers (another cwd) find it."""
    spec, sep, attr = target.partition(":")
    return str(Path(spec).resolve()) + sep + attr if spec.endswith(".py") else target


IN_PROCESS = typer.Option(False, "--in-process", help="run objects in this process, no Ray")
SLOTS = typer.Option(None, help="host slots (default: one per CPU left, at least 1)")
PARTITIONS = typer.Option(16, help="partitions of a new data dir (fixed once created)")


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
) -> None:
    """Serve a worker on a private local Ray (address="local"), data in ./.durable."""
    options = RunOptions(target, host, port, data_dir, None, in_process, slots, partitions)
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
) -> None:
    """Serve a worker: on a new local Ray, or on the cluster at --address."""
    _run(RunOptions(target, host, port, data_dir, address, in_process, slots, partitions))


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


def main() -> None:
    app()
