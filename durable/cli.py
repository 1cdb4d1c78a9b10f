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
import importlib
import importlib.util
import sys
import tomllib
from pathlib import Path

import typer
import uvicorn

from durable.connection import connect
from durable.errors import InvalidArgument
from durable.gateway import Health, build_app
from durable.worker import Worker

app = typer.Typer(add_completion=False, help="Durable Objects for Python.")


def load_target(target: str) -> Worker:
    """Import ``file.py[:attr]`` or ``module[:attr]`` and return its Worker."""
    spec, _, attr = target.partition(":")
    attr = attr or "worker"
    sys.path.insert(0, str(Path.cwd()))
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        if not path.is_file():
            raise InvalidArgument(f"{spec}: no such file")
        sys.path.insert(0, str(path.parent))
        module = importlib.import_module(path.stem)
    else:
        module = importlib.import_module(spec)
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise InvalidArgument(f"{target}: {attr!r} is not a durable.Worker")
    return worker


def default_target(pyproject: Path = Path("pyproject.toml")) -> str:
    if pyproject.is_file():
        app_target = tomllib.loads(pyproject.read_text()).get("tool", {}).get("durable", {})
        if "app" in app_target:
            return str(app_target["app"])
    raise InvalidArgument("no TARGET given and no [tool.durable] app in ./pyproject.toml")


async def serve_in_process(worker: Worker, host: str, port: int, data_dir: Path) -> None:
    health = Health()
    async with connect(worker, data_dir=data_dir) as env:
        config = uvicorn.Config(
            build_app(worker, env, health), host=host, port=port, log_level="info",
            loop="none", lifespan="off",
        )  # fmt: skip
        server = uvicorn.Server(config)
        health.ready = True
        await server.serve()
        health.ready = False


def _run(target: str | None, host: str, port: int, data_dir: Path, address: str | None) -> None:
    if address is not None:
        typer.echo("--address (joining a Ray cluster) arrives with issue #9.", err=True)
        raise typer.Exit(2)
    try:
        worker = load_target(target or default_target())
    except (InvalidArgument, ImportError) as error:
        typer.echo(f"durable: {error}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(serve_in_process(worker, host, port, data_dir))


@app.command()
def dev(
    target: str = typer.Argument(None, help="file.py[:attr] or module[:attr]"),
    port: int = 8787,
    host: str = "127.0.0.1",
    data_dir: Path = Path(".durable"),
    reload: bool = typer.Option(False, help="restart when a file under . changes"),
) -> None:
    """Serve a worker locally (embedded), data in ./.durable."""
    if reload:
        import watchfiles

        watchfiles.run_process(Path.cwd(), target=_run, args=(target, host, port, data_dir, None))
    else:
        _run(target, host, port, data_dir, None)


@app.command()
def serve(
    target: str = typer.Argument(..., help="file.py[:attr] or module[:attr]"),
    port: int = 8787,
    host: str = "127.0.0.1",
    data_dir: Path = Path(".durable"),
    address: str = typer.Option(None, help="Ray cluster to join (auto or HOST:PORT)"),
) -> None:
    """Serve a worker."""
    _run(target, host, port, data_dir, address)


def main() -> None:
    app()
