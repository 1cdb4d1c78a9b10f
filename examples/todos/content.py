"""TinyBase content as the Remote Persister sends it: ``[tables, values]`` JSON, checked.

``parse_content(b'[{"todos":{"t1":{"text":"milk","done":false}}},{}]')`` → ``Content`` with the
tables and values; the original bytes are what the store keeps and returns (verbatim, so
``"\\uFFFD"``-prefixed object cells round-trip untouched).

Guarantees: only a 2-element array ``[{tableId: {rowId: {cellId: cell}}}, {valueId: value}]``
whose cells are strings, finite numbers, booleans or null is accepted; anything else raises
``InvalidContent`` naming the first offending path, before any storage is touched.

Does not guarantee: schema checks (which tables or cells a todo app should have) are the
client's; a store accepts any TinyBase content.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from durable.errors import InvalidArgument

Tables = dict[str, dict[str, dict[str, Any]]]
Values = dict[str, Any]
_CELL = (str, int, float, bool, type(None))


class InvalidContent(InvalidArgument):
    """A save whose body is not TinyBase ``[tables, values]`` content (HTTP 400)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(
            f"The body is not TinyBase content [tables, values]: {where} {problem}. "
            "Send JSON.stringify([store.getTables(), store.getValues()]); nothing was saved."
        )


@dataclass(frozen=True, slots=True)
class Content:
    """Checked content and the exact bytes it came from."""

    tables: Tables
    values: Values
    raw: bytes

    @property
    def etag(self) -> str:
        return etag_of(self.raw)

    def todo_texts(self, table: str = "todos") -> list[str]:
        """The ``text`` cells of ``table`` (for search indexes)."""
        rows = self.tables.get(table, {})
        return [str(row["text"]) for row in rows.values() if isinstance(row.get("text"), str)]

    def done_count(self, table: str = "todos") -> int:
        return sum(row.get("done") is True for row in self.tables.get(table, {}).values())


def etag_of(raw: bytes) -> str:
    """A strong ETag that changes with the content: ``etag_of(b"[{},{}]")`` → ``'"44136f…"'``."""
    return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_content(raw: bytes) -> Content:
    """Check ``raw`` as TinyBase content (see module docstring)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidContent("the body", "is not UTF-8") from None
    except ValueError as error:
        raise InvalidContent("the body", f"is not JSON ({error})") from None
    if not isinstance(data, list) or len(data) != 2:
        raise InvalidContent("the body", "must be a 2-element array")
    tables, values = data
    _mapping(tables, "tables", depth=3)
    _mapping(values, "values", depth=1)
    return Content(tables, values, raw)


def _mapping(node: Any, where: str, depth: int) -> None:
    """``node`` is ``{str: ...}`` nested ``depth`` levels, with cells at the bottom."""
    if not isinstance(node, dict):
        raise InvalidContent(where, f"must be an object, not {type(node).__name__}")
    for key, child in node.items():
        path = f"{where}.{key}"
        if not key:
            raise InvalidContent(where, "has an empty id")
        if depth > 1:
            _mapping(child, path, depth - 1)
        elif not isinstance(child, _CELL) or (
            isinstance(child, float) and not math.isfinite(child)
        ):
            raise InvalidContent(path, f"is not a cell value (got {json.dumps(child)[:40]})")
