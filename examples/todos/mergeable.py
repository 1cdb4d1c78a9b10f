"""A Python port of TinyBase 10.0.1's MergeableStore: the CRDT a room's server-held store runs.

Ported from ``mergeable-store/index.js`` of the npm package (``getHash`` L282-295, HLCs
L393-490, ``validateMergeable`` L2796, ``mergeContentOrChanges``/``mergeCellsOrValues``
L2863-2979, the diff responders L3145-3274) and the synchronizer's ``mergeTablesStamps``
(``synchronizers/synchronizer-ws-client/index.js``). Shapes, as on the wire::

    content  [[{tableId: [{rowId: [{cellId: [cell, hlc, hash]}, hlc, hash]}, hlc, hash]},
               hlc, hash],
              [{valueId: [value, hlc, hash]}, hlc, hash]]
    changes  the same without hashes (a stamp is [thing] or [thing, hlc]), plus a third item 1

Guarantees:
- The same HLCs, hashes, merge results and diff answers as TinyBase: hashes are maintained
  incrementally with TinyBase's exact XOR steps (including its "legacy v5" ``H(id:0)`` term on
  cells and values), checked against vectors made by the real package (tests/todos/vectors/).
- Per cell and value, last writer wins by HLC string order (equal HLCs are ignored), so stores
  that have seen the same changes hold the same content whatever the order of arrival.
- ``apply_changes``/``set_content`` validate the whole input first (``validate_mergeable``): an
  invalid one raises ``InvalidMergeable`` and leaves the store unchanged, like TinyBase's, which
  ignores it. An HLC more than 5 minutes ahead of this store's clock makes the input invalid.

Does not guarantee: anything of TinyBase's plain Store (listeners, schemas, transactions). Cells
are held in the synchronizer's *encoded* form only: an object or array cell is the string
``"\\uFFFD" + JSON`` and a deleted cell or value (a tombstone) is ``DELETED``, the string
``"\\uFFFC"`` that TinyBase writes for ``undefined`` on the wire; no real cell can be that string
(TinyBase rejects it). Raw dict/list cells are refused: the real client never sends them.

On failure: ``InvalidMergeable`` names the first reason found; nothing was changed.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

MASK32 = 0xFFFFFFFF
DELETED = "\ufffc"  # TinyBase's wire form of undefined: a tombstone
HLC_MAX_FUTURE_OFFSET_MS = 5 * 60 * 1000
B64 = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"  # ASCII order
HLC_RE = re.compile(r"[-0-9A-Z_a-z]{16}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SAFE_INTEGER = 2**53

Stamp = list[Any]  # [thing, hlc, hash] in a store; [thing] or [thing, hlc] in changes
Changes = list[Any]  # [tablesStamp, valuesStamp, 1]


class InvalidMergeable(ValueError):
    """Content or changes that TinyBase's ``validateMergeable`` would refuse."""


# -- hashes ----------------------------------------------------------------------------------
def _utf8(text: str) -> bytes:
    """UTF-8 bytes as JS's TextEncoder makes them (a lone surrogate becomes U+FFFD)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode()


def get_hash(text: str) -> int:
    """TinyBase ``getHash``: 32-bit FNV-1a over UTF-8. ``get_hash("") == 2166136261``."""
    h = 2166136261
    for byte in _utf8(text):
        h = ((h ^ byte) * 16777619) & MASK32
    return h


def js_number(x: int | float) -> str:
    """``JSON.stringify`` of a finite number: ``js_number(1.0) == "1"``, ``js_number(1e21) ==
    "1e+21"``, ``js_number(1e-7) == "1e-7"``. Integers past 2**53 are doubles in JS."""
    if isinstance(x, int) and abs(x) <= _SAFE_INTEGER:
        return str(x)
    x = float(x)
    if x == 0:
        return "0"
    sign, text = ("-" if x < 0 else ""), repr(abs(x))  # repr: shortest round-trip digits, as JS
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + int(exp_text or 0) - (len(whole + frac) - len(digits))  # 0.DIGITS e point
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def js_json(value: Any) -> str:
    """``JSON.stringify(cell ?? null)`` for an encoded cell: ``js_json(DELETED) == "null"``."""
    if value is None or value == DELETED:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)  # well-formed
    raise TypeError(f"not an encoded TinyBase cell: {value!r}")


def cell_hash(value: Any, hlc: str) -> int:
    """``getValueHash``: ``H(JSON.stringify(cell ?? null) + ":" + hlc)``."""
    return get_hash(js_json(value) + ":" + hlc)


def in_hash(child_id: str, child_hash: int) -> int:
    """A child's share of its parent's hash: ``H(id + ":" + hash)``."""
    return get_hash(f"{child_id}:{child_hash}")


def _replace_hlc_hash(old: str, new: str) -> int:
    return ((get_hash(old) if old else 0) ^ get_hash(new)) if new > old else 0


def _latest(a: str, b: str) -> str:
    return a if a > b else b


# -- HLCs ------------------------------------------------------------------------------------
def _encode(n: int, shifts: tuple[int, ...]) -> str:
    return "".join(B64[(n >> s) & 63] for s in shifts)


def client_id_from_unique_id(unique_id: str) -> str:
    """The 5-char client part of a store's HLCs: the low 30 bits of ``get_hash(unique_id)``."""
    return _encode(get_hash(unique_id), (24, 18, 12, 6, 0))


def encode_hlc(time_ms: int, counter: int, client_id: str) -> str:
    """7 chars of 42-bit ms + 4 chars of 24-bit counter + client id, so that string order is
    (time, counter, client) order: ``encode_hlc(0, 0, "abcde") == "-----------abcde"``."""
    return (
        _encode(time_ms, (36, 30, 24, 18, 12, 6, 0)) + _encode(counter, (18, 12, 6, 0)) + client_id
    )


def decode_hlc(hlc: str) -> tuple[int, int, str]:
    """``(time_ms, counter, client_id)``; the inverse of ``encode_hlc``."""
    digits = [B64.index(c) for c in hlc[:11]]
    time_ms = counter = 0
    for d in digits[:7]:
        time_ms = time_ms * 64 + d
    for d in digits[7:]:
        counter = counter * 64 + d
    return time_ms, counter, hlc[11:]


def is_hlc(hlc: Any, max_time_ms: float) -> bool:
    """``""`` or 16 chars of the alphabet whose time is at most ``max_time_ms``."""
    if hlc == "":
        return True
    return (
        isinstance(hlc, str) and bool(HLC_RE.fullmatch(hlc)) and decode_hlc(hlc)[0] <= max_time_ms
    )


class HlcClock:
    """TinyBase's ``getHlcFunctions``: a hybrid logical clock over ``now_ms``."""

    def __init__(self, client_id: str, now_ms: Callable[[], int]) -> None:
        self.client_id = client_id
        self.now_ms = now_ms
        self.last_time = 0
        self.last_counter = -1

    def next_hlc(self) -> str:
        self.seen_hlc(None)
        self.last_counter += 1
        if self.last_counter == 1 << 24:
            self.last_time += 1
            self.last_counter = 0
        return encode_hlc(self.last_time, self.last_counter, self.client_id)

    def seen_hlc(self, hlc: str | None) -> None:
        """Fold a remote HLC in (ignored if invalid or more than 5 minutes ahead)."""
        now = self.now_ms()
        if hlc is not None and not is_hlc(hlc, now + HLC_MAX_FUTURE_OFFSET_MS):
            return
        previous = self.last_time
        remote_time, remote_counter = decode_hlc(hlc)[:2] if hlc else (0, 0)
        self.last_time = max(previous, remote_time, now)
        if self.last_time == previous:
            if self.last_time == remote_time:
                self.last_counter = max(self.last_counter, remote_counter)
        else:
            self.last_counter = remote_counter if self.last_time == remote_time else -1


# -- validation (validateMergeable) ----------------------------------------------------------
def is_cell(value: Any) -> bool:
    """An encoded cell or value: string, boolean, finite number, null, or the tombstone."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | bool | int)


def _is_stamp(stamp: Any, check: Callable[[Any], bool], max_time: float, hashes: bool) -> bool:
    if not isinstance(stamp, list):
        return False
    if len(stamp) == 3:
        hash_ = stamp[2]
        return (
            isinstance(stamp[1], str)
            and isinstance(hash_, int | float)
            and not isinstance(hash_, bool)
            and math.isfinite(hash_)
            and check(stamp[0])
            and is_hlc(stamp[1], max_time)
        )
    if hashes or len(stamp) not in (1, 2) or not check(stamp[0]):
        return False
    return len(stamp) == 1 or (isinstance(stamp[1], str) and is_hlc(stamp[1], max_time))


def validate_mergeable(mergeable: Any, max_time: float, hashes: bool) -> str | None:
    """Why ``mergeable`` is invalid (content when ``hashes``, else changes), or None."""
    if not isinstance(mergeable, list):
        return "not an array"
    if hashes and len(mergeable) != 2:
        return "content must have 2 items"
    third_ok = len(mergeable) == 3 and type(mergeable[2]) in (int, float) and mergeable[2] == 1
    if not hashes and len(mergeable) != 2 and not third_ok:
        return "changes must have 2 items, or 3 ending in 1"

    def stamp(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
        return lambda s: _is_stamp(s, check, max_time, hashes)

    def children(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
        return lambda obj: isinstance(obj, dict) and all(check(c) for c in obj.values())

    cells = children(stamp(is_cell))
    if not stamp(children(stamp(children(stamp(cells)))))(mergeable[0]):
        return "invalid tables stamp (shape, cell, HLC or one ahead of the clock)"
    if not stamp(cells)(mergeable[1]):
        return "invalid values stamp (shape, value, HLC or one ahead of the clock)"
    return None


# -- the store -------------------------------------------------------------------------------
def _unpack(stamp: Stamp) -> tuple[Any, str, int]:
    """``[thing, hlc = "", hash = 0]`` as JS destructuring defaults read it."""
    return stamp[0], (stamp[1] if len(stamp) > 1 else ""), (stamp[2] if len(stamp) > 2 else 0)


def _update(stamp: Stamp, hlc: str, hash_: int) -> None:
    """``stampUpdate``: a container's HLC only moves forward; its hash is replaced."""
    if hlc > stamp[1]:
        stamp[1] = hlc
    stamp[2] = hash_ & MASK32


def _without_hash(thing: Any, hlc: str) -> Stamp:
    """``stampNew``: ``[thing]`` when the HLC is empty, else ``[thing, hlc]``."""
    return [thing, hlc] if hlc else [thing]


def _strip(node: Stamp, depth: int) -> Stamp:
    """A node with every hash removed (``stampMapToObjWithoutHash``), ``depth`` levels down."""
    children, hlc = node[0], node[1]
    if depth == 0:
        return _without_hash(children, hlc)
    return _without_hash({k: _strip(v, depth - 1) for k, v in children.items()}, hlc)


def _new_node() -> Stamp:
    return [{}, "", 0]


class MergeableStore:
    """TinyBase's ``createMergeableStore(uniqueId, getNow)``: content, hashes, merge, diffs.

    ``touched`` paths (``("t", table, row, cell)``, ``("t", table, row)``, ``("t", table)``,
    ``("t",)``, ``("v", id)``, ``("v",)``) collect every node a merge wrote, so a caller can
    persist exactly those and then clear the set.
    """

    def __init__(self, unique_id: str | None = None, now_ms: Callable[[], int] | None = None):
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        client = (
            client_id_from_unique_id(unique_id)
            if unique_id is not None
            else "".join(secrets.choice(B64) for _ in range(5))
        )
        self.clock = HlcClock(client, self.now_ms)
        self.tables: Stamp = _new_node()
        self.values: Stamp = _new_node()
        self.touched: set[tuple[str, ...]] = set()

    # -- reading --------------------------------------------------------------------------
    def content(self) -> list[Stamp]:
        """``getMergeableContent`` (encoded): ``[tables, values]`` with HLCs and hashes."""
        copy: list[Stamp] = json.loads(json.dumps([self.tables, self.values]))
        return copy

    def content_hashes(self) -> list[int]:
        return [self.tables[2], self.values[2]]

    def visible_tables(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``getTables()``: cells without tombstones, rows and tables without emptied ones."""
        tables: dict[str, dict[str, dict[str, Any]]] = {}
        for table_id, (rows, _, _) in self.tables[0].items():
            for row_id, (cells, _, _) in rows.items():
                row = {c: leaf[0] for c, leaf in cells.items() if leaf[0] != DELETED}
                if row:
                    tables.setdefault(table_id, {})[row_id] = row
        return tables

    def nodes(self) -> Iterator[tuple[tuple[str, ...], Stamp]]:
        """Every node as ``(path, stamp)``, containers as ``[0, hlc, hash]`` (the DO layout)."""
        yield ("t",), [0, self.tables[1], self.tables[2]]
        for table_id, (rows, t_hlc, t_hash) in self.tables[0].items():
            yield ("t", table_id), [0, t_hlc, t_hash]
            for row_id, (cells, r_hlc, r_hash) in rows.items():
                yield ("t", table_id, row_id), [0, r_hlc, r_hash]
                for cell_id, leaf in cells.items():
                    yield ("t", table_id, row_id, cell_id), list(leaf)
        yield ("v",), [0, self.values[1], self.values[2]]
        for value_id, leaf in self.values[0].items():
            yield ("v", value_id), list(leaf)

    def node(self, path: tuple[str, ...]) -> Stamp:
        """One node as ``nodes()`` yields it."""
        stamp = self.tables if path[0] == "t" else self.values
        for key in path[1:]:
            stamp = stamp[0][key]
        return list(stamp) if _is_leaf(path) else [0, stamp[1], stamp[2]]

    # -- writing --------------------------------------------------------------------------
    def apply_changes(self, changes: Any) -> Changes:
        """``applyMergeableChanges`` (encoded); returns the cells and values that changed."""
        reason = validate_mergeable(changes, self.now_ms() + HLC_MAX_FUTURE_OFFSET_MS, False)
        if reason:
            raise InvalidMergeable(f"invalid changes: {reason}")
        return self._merge(changes, False)

    def set_content(self, content: Any) -> None:
        """``setMergeableContent``: replace everything, hashes taken as given."""
        reason = validate_mergeable(content, self.now_ms() + HLC_MAX_FUTURE_OFFSET_MS, True)
        if reason:
            raise InvalidMergeable(f"invalid content: {reason}")
        self.tables, self.values = _new_node(), _new_node()
        self._merge(content, True)

    def load_nodes(self, nodes: dict[tuple[str, ...], Stamp]) -> None:
        """Rebuild from ``nodes()`` output as persisted, trusting its hashes (no validation)."""
        self.tables, self.values = _new_node(), _new_node()
        for path in sorted(nodes, key=len):
            root = self.tables if path[0] == "t" else self.values
            parent = root
            for key in path[1:-1]:
                parent = parent[0][key]
            thing, hlc, hash_ = nodes[path]
            if len(path) == 1:
                root[1], root[2] = hlc, hash_
            else:
                parent[0][path[-1]] = [thing, hlc, hash_] if _is_leaf(path) else [{}, hlc, hash_]
        latest = max((stamp[1] for stamp in nodes.values()), default="")
        self.clock.seen_hlc(latest)

    def set_cell(self, table_id: str, row_id: str, cell_id: str, cell: Any) -> Changes:
        """A local edit (``setCell``; ``DELETED`` deletes): a new HLC, merged like a remote one.
        Unlike TinyBase's Store it stamps even an edit that changes nothing."""
        hlc = self.clock.next_hlc()
        return self._merge([[{table_id: [{row_id: [{cell_id: [cell, hlc]}]}]}], [{}], 1], False)

    def set_value(self, value_id: str, value: Any) -> Changes:
        hlc = self.clock.next_hlc()
        return self._merge([[{}], [{value_id: [value, hlc]}], 1], False)

    def _merge(self, changes: Any, is_content: bool) -> Changes:
        """``mergeContentOrChanges``, step for step (hash arithmetic included)."""
        tables_changes: dict[str, dict[str, dict[str, Any]]] = {}
        values_changes: dict[str, Any] = {}
        tables_obj, in_hlc, incoming_hash = _unpack(changes[0])
        node = self.tables
        old_hlc, old_hash = node[1], node[2]
        tables_hash = incoming_hash if is_content else old_hash
        tables_hlc = in_hlc
        for table_id, table_in in tables_obj.items():
            table = node[0].setdefault(table_id, _new_node())
            old_table_hash = table[2]
            table_hlc = self._merge_table(table_id, table, table_in, tables_changes, is_content)
            if not is_content:
                tables_hash ^= (_in_hash_or_0(table_id, old_table_hash)) ^ in_hash(
                    table_id, table[2]
                )
            tables_hlc = _latest(tables_hlc, table_hlc)
        if not is_content:
            tables_hash ^= _replace_hlc_hash(old_hlc, in_hlc)
        _update(node, in_hlc, tables_hash)
        self.touched.add(("t",))
        values_hlc = self._merge_leaves(("v",), changes[1], self.values, values_changes, is_content)
        self.clock.seen_hlc(_latest(tables_hlc, values_hlc))
        return [tables_changes, values_changes, 1]

    def _merge_table(
        self,
        table_id: str,
        table: Stamp,
        table_in: Stamp,
        changes: dict[str, Any],
        is_content: bool,
    ) -> str:
        rows_obj, in_hlc, incoming_hash = _unpack(table_in)
        old_hlc, old_hash = table[1], table[2]
        table_hash = incoming_hash if is_content else old_hash
        table_hlc = in_hlc
        for row_id, row_in in rows_obj.items():
            row = table[0].setdefault(row_id, _new_node())
            old_row_hash = row[2]
            row_changes = changes.setdefault(table_id, {}).setdefault(row_id, {})
            row_hlc = self._merge_leaves(
                ("t", table_id, row_id), row_in, row, row_changes, is_content
            )
            if not is_content:
                table_hash ^= _in_hash_or_0(row_id, old_row_hash) ^ in_hash(row_id, row[2])
            table_hlc = _latest(table_hlc, row_hlc)
        if not is_content:
            table_hash ^= _replace_hlc_hash(old_hlc, in_hlc)
        _update(table, in_hlc, table_hash)
        self.touched.add(("t", table_id))
        return table_hlc

    def _merge_leaves(
        self,
        path: tuple[str, ...],
        things: Stamp,
        node: Stamp,
        changes: dict[str, Any],
        is_content: bool,
    ) -> str:
        """``mergeCellsOrValues``: per leaf the newer HLC wins (an empty local HLC always loses)."""
        things_obj, in_hlc, incoming_hash = _unpack(things)
        old_hlc, old_hash = node[1], node[2]
        things_hlc = in_hlc
        things_hash = incoming_hash if is_content else old_hash
        for thing_id, leaf_in in things_obj.items():
            thing, thing_hlc, in_thing_hash = _unpack(leaf_in)
            leaf = node[0].setdefault(thing_id, [DELETED, "", 0])
            old_thing_hlc, old_thing_hash = leaf[1], leaf[2]
            if old_thing_hlc and thing_hlc <= old_thing_hlc:
                continue
            _update(leaf, thing_hlc, in_thing_hash if is_content else cell_hash(thing, thing_hlc))
            leaf[0] = thing
            changes[thing_id] = thing
            self.touched.add((*path, thing_id))
            if not is_content:
                things_hash ^= in_hash(thing_id, old_thing_hash) ^ in_hash(thing_id, leaf[2])
            things_hlc = _latest(things_hlc, thing_hlc)
        if not is_content:
            things_hash ^= _replace_hlc_hash(old_hlc, in_hlc)
        _update(node, in_hlc, things_hash)
        self.touched.add(path)
        return things_hlc

    # -- the synchronizer's questions (answered by the side that has the data) -------------------
    def table_hashes(self) -> dict[str, int]:
        return {t: node[2] for t, node in self.tables[0].items()}

    def table_diff(self, other: dict[str, int]) -> list[Any]:
        """``getMergeableTableDiff``: ``[tables the asker lacks, {table: my differing hash}]``."""
        new_tables: dict[str, Stamp] = {}
        differing: dict[str, int] = {}
        for table_id, table in self.tables[0].items():
            if table_id not in other:
                new_tables[table_id] = _strip(table, 2)
            elif table[2] != other[table_id]:
                differing[table_id] = table[2]
        return [_without_hash(new_tables, self.tables[1]), differing]

    def row_hashes(self, other: dict[str, int]) -> dict[str, dict[str, int]]:
        """``getMergeableRowHashes``: my row hashes for tables whose hash differs from ``other``."""
        hashes: dict[str, dict[str, int]] = {}
        for table_id, other_hash in other.items():
            table = self.tables[0].get(table_id)
            if table is not None and table[2] != other_hash:
                for row_id, row in table[0].items():
                    hashes.setdefault(table_id, {})[row_id] = row[2]
        return hashes

    def row_diff(self, other: dict[str, dict[str, int]]) -> list[Any]:
        """``getMergeableRowDiff``: ``[rows the asker lacks, {table: {row: differing hash}}]``."""
        new_rows: dict[str, Stamp] = {}
        differing: dict[str, dict[str, int]] = {}
        for table_id, other_rows in other.items():
            table = self.tables[0].get(table_id)
            for row_id, row in (table[0] if table else {}).items():
                if row_id not in other_rows:
                    new_rows.setdefault(table_id, [{}])[0][row_id] = _strip(row, 1)
                elif row[2] != other_rows[row_id]:
                    differing.setdefault(table_id, {})[row_id] = row[2]
        return [_without_hash(new_rows, self.tables[1]), differing]

    def cell_hashes(self, other: dict[str, dict[str, int]]) -> dict[str, dict[str, dict[str, int]]]:
        """``getMergeableCellHashes``: my cell hashes for rows whose hash differs from ``other``."""
        hashes: dict[str, dict[str, dict[str, int]]] = {}
        for table_id, other_rows in other.items():
            table = self.tables[0].get(table_id)
            for row_id, other_hash in other_rows.items() if table else ():
                row = table[0].get(row_id) if table else None
                if row is not None and row[2] != other_hash:
                    for cell_id, leaf in row[0].items():
                        hashes.setdefault(table_id, {}).setdefault(row_id, {})[cell_id] = leaf[2]
        return hashes

    def cell_diff(self, other: dict[str, dict[str, dict[str, int]]]) -> Stamp:
        """``getMergeableCellDiff``: cells whose hash differs from (or is missing in) ``other``."""
        tables: dict[str, Stamp] = {}
        for table_id, other_rows in other.items():
            for row_id, other_cells in other_rows.items():
                table = self.tables[0].get(table_id)
                row = table[0].get(row_id) if table else None
                if table is None or row is None:
                    continue
                for cell_id, (cell, hlc, hash_) in row[0].items():
                    if hash_ != other_cells.get(cell_id):
                        rows = tables.setdefault(table_id, _without_hash({}, table[1]))[0]
                        rows.setdefault(row_id, _without_hash({}, row[1]))[0][cell_id] = [cell, hlc]
        return _without_hash(tables, self.tables[1])

    def value_hashes(self) -> dict[str, int]:
        return {v: leaf[2] for v, leaf in self.values[0].items()}

    def value_diff(self, other: dict[str, int]) -> Stamp:
        """``getMergeableValueDiff``: values whose hash differs from or is missing in ``other``."""
        values = {
            v: _without_hash(leaf[0], leaf[1])
            for v, leaf in self.values[0].items()
            if leaf[2] != other.get(v)
        }
        return _without_hash(values, self.values[1])


def _in_hash_or_0(child_id: str, old_hash: int) -> int:
    """A row's or table's old share, which TinyBase skips (0) while its hash is 0."""
    return in_hash(child_id, old_hash) if old_hash else 0


def _is_leaf(path: tuple[str, ...]) -> bool:
    return len(path) == (4 if path[0] == "t" else 2)


def merge_tables_stamps(into: Stamp, other: Stamp) -> None:
    """The synchronizer's ``mergeTablesStamps``: fold one diff answer into the changes being
    gathered from a peer (later answers overwrite cells; container HLCs keep the latest)."""
    for table_id, table_in in other[0].items():
        table = into[0].setdefault(table_id, [{}])
        for row_id, row_in in table_in[0].items():
            row = table[0].setdefault(row_id, [{}])
            for cell_id, cell_in in row_in[0].items():
                row[0][cell_id] = _without_hash(cell_in[0], _unpack(cell_in)[1])
            _set_hlc(row, _latest(_unpack(row)[1], _unpack(row_in)[1]))
        _set_hlc(table, _latest(_unpack(table)[1], _unpack(table_in)[1]))
    _set_hlc(into, _latest(_unpack(into)[1], _unpack(other)[1]))


def _set_hlc(stamp: Stamp, hlc: str) -> None:
    """JS's ``stamp[1] = hlc`` on a 1- or 2-item array."""
    if len(stamp) > 1:
        stamp[1] = hlc
    else:
        stamp.append(hlc)
