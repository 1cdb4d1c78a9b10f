"""The shape of ``durable/``, read from its import graph: layers, no cycle, modules of readable size.

Layers, lowest first. A module imports modules of its own layer or of lower ones, never higher:

1. foundation: errors, ids, the clock, limits, values and what crosses an RPC (``messages``),
   logs, fault points. Nothing here knows about storage or objects.
2. storage: a partition's SQLite files (``partition``, ``sql``, ``checkpoint``), an object's
   write buffer (``cache``) and KV API (``storage``), the alarm heap, D1-like ``database``s, and
   ``gates``: ``storage.py`` awaits the output gate (``wait_durable``) that ``gates`` defines, and
   ``gates`` needs only ``errors``, so it sits here rather than with the object runtime that also
   uses its input gate and CPU guard.
3. object runtime: objects and their host (``object``, ``activation``, ``host``, ``commits``,
   ``hibernation``, ``sockets``), stubs (``namespace``), the ``worker`` and its ``cron``
   schedules, and ``env``: a worker's bindings and a host's start-up, which open a Host and need
   no network.
4. gateway and cluster: HTTP and WebSockets (``gateway``, ``frontdoor``, ``upgrade``,
   ``responses``, ``fanout``, ``metrics``, ``server`` and its ``collector``), the data path and
   placement on Ray (``channel``, ``directory``, ``cluster``, ``transport``, ``dedicated``,
   ``ray_host``, and ``relay``: WebSockets across slots), ``connect`` (``connection``), and the ``routers`` and ``patterns`` packages,
   each placed as a whole: a module added under them is in their layer.
5. entry points: the ``durable`` command (``cli``, ``bench``, ``inspect``, ``backup``), the test
   kit users import (``testing``) and the package's facade (``durable/__init__.py``). No runtime
   module imports them.

The graph holds every ``import durable.x``, ``from durable.x import ...`` and ``from durable import
x`` of a module, at top level or inside a function, but not under ``if TYPE_CHECKING:`` (an
import only for annotations never runs). It must have no cycle: a function-local import that
closes one is a cycle all the same, only deferred to the first call.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "durable"
MAX_LINES = 600

LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"clock", "errors", "faults", "ids", "limits", "logs", "messages", "values"}),
    (
        "storage",
        # backup: copies of partitions (moves copy with it too); it imports only the foundation
        {"alarms", "backup", "cache", "checkpoint", "database", "gates", "partition", "sql",
         "storage"},
    ),
    (
        "object runtime",
        {
            "activation", "commits", "cron", "env", "eviction", "hibernation", "host", "namespace",
            "object", "sockets", "worker",
        },
    ),
    (
        "gateway and cluster",
        {
            "channel", "cluster", "collector", "connection", "dedicated", "directory", "endpoint", "fanout",
            "frontdoor", "gateway", "metrics", "moves", "patterns", "ray_host", "relay",
            "responses", "rollout", "routers", "server", "transport", "upgrade",
        },
    ),
    ("entry points", {"__init__", "bench", "cli", "inspect", "testing"}),
]  # fmt: skip

# Modules being split by noun right now, allowed over the limit until they are under it.
PENDING_SPLIT: set[str] = set()

# Import edges (importer, imported) that break the layer order in a file another change owns,
# each with why; the lead removes an entry when fixing its edge. Empty: none today.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the imported module, relative to ``durable`` ("routers.base", "__init__")
    line: int
    local: bool  # inside a function: runs at the first call, not at import


def module_name(path: Path) -> str:
    """``durable/routers/base.py`` → ``"routers.base"``; ``durable/routers/__init__.py`` →
    ``"routers"``; ``durable/__init__.py`` → ``"__init__"``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _resolve(dotted: str) -> str | None:
    """``"durable.routers.base"`` → ``"routers.base"``; None for anything outside durable."""
    if dotted == "durable":
        return "__init__"
    if not dotted.startswith("durable."):
        return None
    return dotted.removeprefix("durable.")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(
    name: str, source: str, known: dict[str, Path], is_package: bool = False
) -> Iterator[Import]:
    """The imports of durable modules in ``source``, the text of module ``name``."""
    package = name if is_package else name.rpartition(".")[0]

    def targets(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = _resolve(alias.name)
                if module is not None:
                    yield module
            return
        if node.level:  # relative: from the importing module's package
            base = package.split(".") if package and package != "__init__" else []
            base = base[: len(base) - (node.level - 1)]
            dotted = ".".join(["durable", *base, *([node.module] if node.module else [])])
        else:
            dotted = node.module or ""
        module = _resolve(dotted)
        if module is None:
            return
        for alias in node.names:  # ``from durable import values``: the submodule, if it is one
            prefix = "" if module == "__init__" else f"{module}."
            sub = f"{prefix}{alias.name}"
            yield sub if sub in known else module

    def visit(node: ast.AST, local: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for statement in child.orelse:
                    yield from visit_one(statement, local)
                continue
            yield from visit_one(child, local)

    def visit_one(node: ast.AST, local: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for module in targets(node):
                yield Import(module, node.lineno, local)
        inner = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from visit(node, local or inner)

    yield from visit(ast.parse(source), False)


def graph() -> dict[str, dict[str, Import]]:
    """module → {imported module → its first import}, self-imports left out."""
    known = modules()
    edges: dict[str, dict[str, Import]] = {}
    for name, path in known.items():
        edges[name] = {}
        source = path.read_text()
        for imp in imports_of(name, source, known, is_package=path.name == "__init__.py"):
            if imp.module != name:
                edges[name].setdefault(imp.module, imp)
    return edges


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        if module in members or module.split(".")[0] in members:
            return index
    return None


def describe(importer: str, imp: Import) -> str:
    where = "in a function" if imp.local else "at top level"
    return f"{importer} -> {imp.module} ({where}, line {imp.line})"


def find_cycle(edges: dict[str, dict[str, Import]]) -> list[str] | None:
    """One cycle as the lines of its edges, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, {})):
            if state.get(target) == 1:
                ring = [*path[path.index(target) :], target]
                return [describe(a, edges[a][b]) for a, b in itertools.pairwise(ring)]
            if target not in state:
                found = dfs(target)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found is not None:
                return found
    return None


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"place these modules in LAYERS (tests/test_layout.py): {unplaced}"
    known = modules()
    placed = {m for _, members in LAYERS for m in members}
    stale = sorted(m for m in placed if not any(k == m or k.startswith(f"{m}.") for k in known))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_modules_import_only_their_own_layer_or_lower() -> None:
    upward = []
    for importer, targets in graph().items():
        for imported, imp in targets.items():
            low, high = layer_of(importer), layer_of(imported)
            if low is None or high is None or high <= low:
                continue
            if (importer, imported) in KNOWN_VIOLATIONS:
                continue
            upward.append(f"{describe(importer, imp)}: {LAYERS[low][0]} imports {LAYERS[high][0]}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_known_violations_still_exist() -> None:
    edges = graph()
    fixed = sorted(edge for edge in KNOWN_VIOLATIONS if edge[1] not in edges.get(edge[0], {}))
    assert not fixed, f"fixed: remove from KNOWN_VIOLATIONS: {fixed}"


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle:\n" + "\n".join(cycle or [])


def test_no_module_exceeds_the_line_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in modules().values()
    }
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in PENDING_SPLIT}
    assert not over, f"modules over {MAX_LINES} lines (split them by noun): {over}"
    done = sorted(name for name in PENDING_SPLIT if sizes.get(name, 0) <= MAX_LINES)
    assert not done, f"split or gone: remove from PENDING_SPLIT: {done}"


def test_the_graph_sees_local_imports_and_skips_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from durable import values, connect\n"
        "import durable.ids\n"
        "if TYPE_CHECKING:\n"
        "    from durable.host import Host\n"
        "else:\n"
        "    from durable import clock\n"
        "class Probe:\n"
        "    from durable.errors import DurableError\n"
        "    def f(self):\n"
        "        from durable.routers.base import ShardRef\n"
    )
    found = [(i.module, i.local) for i in imports_of("probe", source, modules())]
    assert found == [
        ("values", False), ("__init__", False), ("ids", False), ("clock", False),
        ("errors", False), ("routers.base", True),
    ]  # fmt: skip
