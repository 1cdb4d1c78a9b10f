"""The ``durable`` command: ``dev``, ``serve``, ``inspect``, ``backup``/``restore``, ``bench``
(CONTRACTS §6), and on a running cluster ``nodes``, ``drain`` and ``restart``.

``durable dev [TARGET]`` serves TARGET's worker on http://127.0.0.1:8787 with data in
``./.durable``, on a private local Ray (never a cluster by accident): host slots (one per CPU
left, ``--slots``) each run objects, their channel and the gateway (``ray_host.py``). ``durable
serve TARGET --address auto|HOST:PORT`` does the same on an existing Ray cluster. With
``--in-process`` both run the objects and the gateway in this process instead (as
``connect(address=None)``), without Ray. A bare ``durable dev`` reads ``[tool.durable] app``
from ``./pyproject.toml``. TARGET is ``path/to/file.py[:attr]`` or ``package.module[:attr]``
(attr defaults to ``worker``); the current directory and the file's directory go on
``sys.path``. ``--channel tcp`` forces the channel over TCP between every caller and host
(default ``auto``: the Unix socket on the same node); ``--tls-cert PATH --tls-key PATH`` make
that TCP TLS (paths readable on every node).

Guarantees:
- The port is bound only when the objects' partitions are open (on Ray: when every partition
  has an owner); ``/healthz`` then answers 200.
- SIGTERM or Ctrl-C: stop accepting, flush, close, exit (a second Ctrl-C in process: without
  waiting for open connections).

``durable restart [--address auto] [--force]`` restarts every host slot, one at a time, each
emptied first (``durable.rollout``); exit 0 once every slot serves again, 1 if one did not
(which, and why), 2 if a slot is the only one of the cluster and ``--force`` was not given.

``durable drain NODE [--address auto]`` moves every partition homed on NODE to the other nodes
(``durable.moves``, one at a time) with a progress bar; NODE is a home id (the ``home-id`` file of
a data dir) or a Ray node id, or a unique prefix of either; ``durable nodes`` lists them. Exit 0
once every partition moved, 1 if some move was given up or not done within ``--timeout`` (each
listed with why), 2 if NODE is unknown or no other node has a live slot.

On failure: a data dir another server holds (``DataDirInUse``, checked before Ray starts), a
target that does not load, or a busy port in process (``PortInUse``): one line with the fix,
exit 2.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import signal
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer

from durable.backup import Progress, backup, restore
from durable.bench import STUDIES, run_suite
from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig, default_slots, new_token
from durable.connection import connect
from durable.directory import home_of
from durable.env import read_meta
from durable.errors import DataDirInUse, DurableError, InvalidArgument, PortInUse
from durable.gateway import Health, build_app
from durable.host import host_of
from durable.logs import configure as configure_logs
from durable.moves import DRAIN_TIMEOUT, drain_node, node_table
from durable.partition import Partition
from durable.ray_host import Cluster
from durable.rollout import SLOT_TIMEOUT
from durable.rollout import restart as rolling_restart
from durable.server import GatewayServer, bind
from durable.worker import Worker, load_worker, target_paths

app = typer.Typer(add_completion=False, help="Durable Objects for Python.")
STUDY_NAMES = [study.name for study in STUDIES]


def default_target(pyproject: Path = Path("pyproject.toml")) -> str:
    if pyproject.is_file():
        app_target = tomllib.loads(pyproject.read_text()).get("tool", {}).get("durable", {})
        if "app" in app_target:
            return str(app_target["app"])
    raise InvalidArgument("no TARGET given and no [tool.durable] app in ./pyproject.toml")


def _stop_on_signals(server: GatewayServer) -> None:
    """SIGTERM or SIGINT: stop serving (then ``connect`` commits and closes); a second SIGINT
    stops without waiting for open connections."""
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        server.exit(force=server.exiting and sig is signal.SIGINT)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)


async def serve_in_process(worker: Worker, host: str, port: int, data_dir: Path) -> None:
    """The objects, the gateway and its WebSockets in this process; returns when stopped."""
    async with connect(worker, data_dir=data_dir) as env:
        gateway = build_app(worker, env, Health(), host=host_of(env), sole_holder=True)
        server = GatewayServer(gateway, host, port, log_level="info", log_config=None)
        _stop_on_signals(server)
        listening = bind(host, port)  # only once the partitions are open
        await server.serve(
            listening, lambda: typer.echo(f"durable: serving on http://{host}:{port}")
        )


async def serve_cluster(
    target: str,
    http_host: str,
    http_port: int,
    data_dir: Path,
    address: str | None,
    *,
    slots: int | None = None,
    partitions: int = 16,
    ready: asyncio.Event | None = None,
    channel: str = "auto",
    tls: tuple[str, str] = ("", ""),
) -> None:
    """``durable dev``/``serve``: start (or join) Ray, launch the cluster, serve until a signal.

    SIGTERM/SIGINT: every slot stops HTTP, commits and closes (bounded), then Ray stops.
    """
    import ray

    root = data_dir.resolve()
    meta = read_meta(root, partitions)
    paths = target_paths(target.partition(":")[0] if target.endswith(".py") else target)
    pythonpath = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    ray.init(
        address=address or "local",  # dev: a private local Ray, never a cluster by accident
        namespace=RAY_NAMESPACE,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "RAY_worker_niceness": "0"}},
        log_to_driver=True,
    )
    config = ClusterConfig(
        target=target, data_dir=str(root), sys_path=tuple(paths),
        partitions=int(meta["partitions"]), slots=slots or default_slots(),
        http_host=http_host, http_port=http_port, token=new_token(),
        channel=channel, tls_cert=tls[0], tls_key=tls[1],
    )  # fmt: skip
    cluster = Cluster(config)
    try:
        cluster.start()
        await cluster.wait_ready()
        print(f"durable: serving {target} on http://{http_host}:{http_port}", flush=True)
        if ready is not None:
            ready.set()
        await _until_signal()
    finally:
        await cluster.stop()
        ray.shutdown()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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
    channel: str = "auto"
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def tls(self) -> tuple[str, str]:
        """Absolute cert and key paths (slots on other nodes read them), or ("", "")."""
        if (self.tls_cert is None) != (self.tls_key is None):
            _fail("--tls-cert and --tls-key go together")
        if self.tls_cert is None or self.tls_key is None:
            return ("", "")
        return (str(self.tls_cert.resolve()), str(self.tls_key.resolve()))


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
    try:
        _refuse_held(options.data_dir)
    except DataDirInUse as error:
        _fail(f"{error} {HELD_FIX}")
    serving = serve_cluster(
        _absolute(target), options.host, options.port, options.data_dir, options.address,
        slots=options.slots, partitions=options.partitions,
        channel=options.channel, tls=options.tls(),
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


class Channel(enum.StrEnum):
    auto = "auto"
    tcp = "tcp"


IN_PROCESS = typer.Option(False, "--in-process", help="run objects in this process, no Ray")
SLOTS = typer.Option(None, help="host slots (default: one per CPU left, at least 1)")
CHANNEL = typer.Option(
    "auto", help="auto: Unix socket to hosts on the same node, TCP to others; tcp: TCP always"
)
TLS_CERT = typer.Option(None, help="TLS for the channel's TCP: cert (also the CA peers trust)")
TLS_KEY = typer.Option(None, help="TLS for the channel's TCP: the cert's private key")
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
    channel: Channel = CHANNEL,
    tls_cert: Path = TLS_CERT,
    tls_key: Path = TLS_KEY,
) -> None:
    """Serve a worker on a private local Ray (address="local"), data in ./.durable."""
    options = RunOptions(
        target, host, port, data_dir, None, in_process, slots, partitions, log_format,
        channel.value, tls_cert, tls_key,
    )  # fmt: skip
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
    channel: Channel = CHANNEL,
    tls_cert: Path = TLS_CERT,
    tls_key: Path = TLS_KEY,
) -> None:
    """Serve a worker: on a new local Ray, or on the cluster at --address."""
    options = RunOptions(
        target, host, port, data_dir, address, in_process, slots, partitions, log_format,
        channel.value, tls_cert, tls_key,
    )  # fmt: skip
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


RAY_ADDRESS = typer.Option("auto", help="the Ray cluster the durable cluster runs on")
SOURCE_DIR = typer.Argument(..., help="the data dir to copy (may be serving)")
BACKUP_DIR = typer.Argument(..., help="a new or empty directory for the backup")
BACKUP_IN = typer.Argument(..., help="a backup made by `durable backup`")
TARGET_DIR = typer.Argument(
    ..., help="the data dir to restore into (not serving, but for --rehome: a serving node's)"
)
ONE_PARTITION = typer.Option(None, help="restore only this partition")
ONE_OBJECT = typer.Option(None, "--object", help="restore only this object: NS:NAME")
REHOME = typer.Option(
    False,
    "--rehome",
    help="with --partition: the partition's node is lost; serve it from DATA_DIR's node",
)


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
    rehome: bool = REHOME,
    address: str = RAY_ADDRESS,
) -> None:
    """Restore a backup: everything, one partition, or one object's rows or file. With
    ``--rehome``, a partition whose node is lost comes back on the node of DATA_DIR (serving)."""
    if rehome and partition is None:
        _fail("--rehome takes --partition N: the lost partition to serve from DATA_DIR's node")
    node = _node_of(data_dir) if rehome else None
    if node is not None:
        _rehome(address, partition, node, check=True)  # refused before any file is written
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
    if node is not None:
        _rehome(address, partition, node)
        typer.echo(f"partition {partition} now lives on node {node}; its slot serves it next")


def _node_of(data_dir: Path) -> str:
    """The home id of a serving node's data dir (never written here: bad input changes nothing)."""
    if not (data_dir / "home-id").is_file():
        _fail(f"{data_dir} has no home-id: give the data dir of a node of the running cluster")
    return home_of(data_dir)


def _rehome(address: str, partition: int, node: str, check: bool = False) -> None:
    import ray

    refused = ray.get(_directory_at(address).rehome.remote(partition, node, check))
    if refused is not None:
        _fail(f"cannot rehome: {refused}")


def _directory_at(address: str) -> Any:
    """The running cluster's directory actor (joins Ray as a driver, unless already one)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)
    try:
        return ray.get_actor(DIRECTORY, namespace=RAY_NAMESPACE)
    except ValueError:
        _fail(f"no durable cluster runs on the Ray cluster at {address}")


@app.command()
def nodes(address: str = RAY_ADDRESS) -> None:
    """The nodes of a running cluster: home id, Ray node id, slots and partitions homed there."""
    from rich.console import Console
    from rich.table import Table

    table = Table("home id", "Ray node id", "slots", "partitions")
    for home, ray_ids, slots, partitions in asyncio.run(node_table(_directory_at(address))):
        table.add_row(home, ray_ids, str(slots), str(len(partitions)))
    Console().print(table)


@app.command()
def drain(
    node: str = typer.Argument(..., help="home id or Ray node id (or a unique prefix)"),
    address: str = RAY_ADDRESS,
    timeout: float = typer.Option(DRAIN_TIMEOUT, help="seconds before giving up on the rest"),
) -> None:
    """Move every partition homed on NODE to the other nodes, one at a time (copy, verify,
    switch, delete); exit 0 when done."""
    directory = _directory_at(address)
    try:
        with _progress_bar(f"drain {node}") as progress:
            drained = asyncio.run(drain_node(directory, node, progress, timeout=timeout))
    except ValueError as error:
        _fail(str(error))
    typer.echo(f"drained {drained.node}: {len(drained.moved)} partition(s) moved")
    for partition, why in sorted(drained.failed.items()):
        typer.echo(f"durable: partition {partition} not moved: {why}", err=True)
    if drained.failed:
        raise typer.Exit(1)


@app.command()
def restart(
    address: str = RAY_ADDRESS,
    timeout: float = typer.Option(SLOT_TIMEOUT, help="seconds each slot may take"),
    force: bool = typer.Option(False, help="restart a slot that is alone anyway (unavailable)"),
) -> None:
    """Restart every host slot, one at a time, each emptied first (its partitions handed to
    another slot of its node, or moved to other nodes) and refilled once it serves again."""
    directory = _directory_at(address)
    try:
        with _progress_bar("restart") as progress:
            rollout = asyncio.run(rolling_restart(directory, progress, timeout, force))
    except ValueError as error:
        _fail(str(error))
    for slot in rollout.restarted:
        typer.echo(f"slot {slot} restarted in {rollout.seconds[slot]:.1f} s")
    for slot, why in rollout.failed.items():
        typer.echo(f"durable: slot {slot} not restarted: {why}", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()
