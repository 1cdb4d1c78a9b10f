"""``examples/todos/mergeable.py`` reproduces TinyBase 10.0.1's MergeableStore exactly.

``vectors/mergeable.json`` is written by ``js/sync_vectors.mjs`` with the real npm package: four
stores make random local edits (each edit's changes reach a random subset of the others), pull
from each other as the synchronizer does (every request and answer recorded), are fed invalid
changes, and finally converge. The port replays every step and must produce the same HLCs,
changes, diff answers, hashes and content.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from examples.todos.mergeable import (
    DELETED,
    InvalidMergeable,
    MergeableStore,
    cell_hash,
    decode_hlc,
    encode_hlc,
    get_hash,
    js_json,
    merge_tables_stamps,
    validate_mergeable,
)

JS = Path(__file__).parent / "js"
VECTORS_PATH = Path(__file__).parent / "vectors" / "mergeable.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
NOW = [0]


def stores() -> list[MergeableStore]:
    return [MergeableStore(uid, lambda: NOW[0]) for uid in VECTORS["uniqueIds"]]


def encoded(cell: Any) -> Any:
    """A cell as TinyBase stores it: objects and arrays as "\\uFFFD" + JSON."""
    if isinstance(cell, dict | list):
        return "\ufffd" + json.dumps(cell, separators=(",", ":"), ensure_ascii=False)
    return cell


def visible(store: MergeableStore, path: tuple[str, ...]) -> Any:
    node: Any = store.tables if path[0] == "t" else store.values
    for key in path[1:]:
        node = node[0].get(key) if node is not None else None
    return DELETED if node is None else node[0]


def local_edit(store: MergeableStore, edit: list[Any]) -> None:
    """Replay one of TinyBase's Store edits; like the Store, an edit that changes nothing
    makes no HLC."""
    kind, *args = edit
    if kind in ("setCell", "delCell"):
        table, row, cell = args[:3]
        new = encoded(args[3]) if kind == "setCell" else DELETED
        if js_json(visible(store, ("t", table, row, cell))) != js_json(new) or (
            (new == DELETED) != (visible(store, ("t", table, row, cell)) == DELETED)
        ):
            store.set_cell(table, row, cell, new)
    else:
        value_id = args[0]
        new = encoded(args[1]) if kind == "setValue" else DELETED
        old = visible(store, ("v", value_id))
        if js_json(old) != js_json(new) or (new == DELETED) != (old == DELETED):
            store.set_value(value_id, new)


def leaves(changes: list[Any]) -> dict[tuple[str, ...], list[Any]]:
    """Every cell and value of a changes object, by path."""
    found = {}
    for table_id, table in changes[0][0].items():
        for row_id, row in table[0].items():
            for cell_id, stamp in row[0].items():
                found[("t", table_id, row_id, cell_id)] = stamp
    for value_id, stamp in changes[1][0].items():
        found[("v", value_id)] = stamp
    return found


def replay_edit(group: list[MergeableStore], step: dict[str, Any]) -> None:
    store = group[step["store"]]
    if any(edit[0] == "delRow" for edit in step["edits"]):
        store.apply_changes(step["changes"])  # TinyBase picks the cells of a row itself
    else:
        store.touched.clear()
        for edit in step["edits"]:
            local_edit(store, edit)
        made = {p: store.node(p)[:2] for p in store.touched if len(p) == (4 if p[0] == "t" else 2)}
        expected = {p: [stamp[0], stamp[1]] for p, stamp in leaves(step["changes"]).items()}
        assert made == expected, f"local edits {step['edits']}"
    for other in step["broadcastTo"]:
        group[other].apply_changes(step["changes"])


def replay_pull(group: list[MergeableStore], step: dict[str, Any]) -> None:
    """The synchronizer's pull: each question from ``to``, each answer from ``from``."""
    to, source = group[step["to"]], group[step["from"]]
    questions = {
        4: (to.table_hashes, source.table_diff),
        5: (lambda: to.row_hashes(previous[1]), source.row_diff),
        6: (lambda: to.cell_hashes(previous[1]), source.cell_diff),
        7: (to.value_hashes, source.value_diff),
    }
    previous: list[Any] = [None, None]
    tables: list[Any] = [{}]
    values: list[Any] = [{}]
    for kind, body, answer in step["requests"]:
        ask, respond = questions[kind]
        assert ask() == body, f"question {kind}"
        assert respond(body) == answer, f"answer {kind}"
        if kind == 4:
            tables = json.loads(json.dumps(answer[0]))
        elif kind in (5, 6):
            merge_tables_stamps(tables, answer[0] if kind == 5 else answer)
        else:
            values = answer
        previous = answer if kind in (4, 5) else previous
    assert [tables, values, 1] == step["changes"]
    to.apply_changes(step["changes"])


def replay_invalid(group: list[MergeableStore], step: dict[str, Any]) -> None:
    store = group[step["store"]]
    before = store.content()
    with pytest.raises(InvalidMergeable):
        store.apply_changes(step["changes"])
    assert store.content() == before


def test_port_replays_tinybase_step_for_step() -> None:
    """Every step's changes, answers and every store's hashes equal TinyBase's."""
    group = stores()
    replay = {"edit": replay_edit, "pull": replay_pull, "invalid": replay_invalid}
    for number, step in enumerate(VECTORS["steps"]):
        NOW[0] = step.get("now", NOW[0])
        if step["op"] == "check":
            assert [s.content() for s in group] == step["contents"], f"step {number}"
            continue
        replay[step["op"]](group, step)
        assert [s.content_hashes() for s in group] == step["hashes"], f"step {number} {step['op']}"


def test_vectors_cover_every_kind_of_step() -> None:
    ops = [step["op"] for step in VECTORS["steps"]]
    kinds = {
        kind for step in VECTORS["steps"] if step["op"] == "pull" for kind, *_ in step["requests"]
    }
    edits = {e[0] for step in VECTORS["steps"] if step["op"] == "edit" for e in step["edits"]}
    assert {"edit", "pull", "invalid", "check"} <= set(ops) and kinds == {4, 5, 6, 7}
    assert edits == {"setCell", "delCell", "delRow", "setValue", "delValue"}


def test_result_does_not_depend_on_arrival_order() -> None:
    """Every edit's changes, applied to fresh stores in three shuffled orders, give the content
    the four TinyBase stores converged on (last writer wins per cell by HLC)."""
    final = VECTORS["steps"][-1]["contents"][0]
    edits = [step["changes"] for step in VECTORS["steps"] if step["op"] == "edit"]
    for seed in range(3):
        random.Random(seed).shuffle(edits)
        store = MergeableStore("fresh", lambda: NOW[0])
        for changes in edits:
            store.apply_changes(changes)
        assert store.content() == final


def test_set_content_takes_hashes_as_given() -> None:
    loaded = VECTORS["loaded"]
    store = MergeableStore("loaded", lambda: NOW[0])
    store.set_content(loaded["content"])
    assert store.content_hashes() == loaded["hashes"]
    assert store.content() == loaded["content"]


def test_stored_nodes_rebuild_the_same_store() -> None:
    """``nodes()`` is what the room persists; ``load_nodes`` must give back every hash."""
    store = MergeableStore("a", lambda: NOW[0])
    store.set_content(VECTORS["loaded"]["content"])
    copy = MergeableStore("b", lambda: NOW[0])
    copy.load_nodes(dict(store.nodes()))
    assert copy.content() == store.content()


def test_hashes_and_json_match_tinybase() -> None:
    for text, expected in VECTORS["hashes"]:
        assert get_hash(text) == expected, text
    for value, expected in VECTORS["json"]:
        assert js_json(value) == expected, value


def test_hlc_encoding_orders_as_strings() -> None:
    a, b, c = (
        encode_hlc(1_780_000_000_000, 0, "zzzzz"),
        encode_hlc(1_780_000_000_000, 1, "-----"),
        encode_hlc(1_780_000_000_001, 0, "-----"),
    )
    assert a < b < c and decode_hlc(b) == (1_780_000_000_000, 1, "-----")


def test_tombstone_hashes_as_null() -> None:
    assert cell_hash(DELETED, "x") == cell_hash(None, "x") == get_hash("null:x")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ([[{"t": [{"r": [{"c": [{"raw": "object"}, ""]}]}]}], [{}], 1], "tables"),
        ([[{"t": [{"r": [{"c": [float("nan"), ""]}]}]}], [{}], 1], "tables"),
        ([[{}], [{"v": ["x", "", True]}], 1], "values"),
        ([[{}], [{"v": ["x", "P73MlKP----YqF8e", 1, 2]}], 1], "values"),
        ([[{}], [{}], True], "3 ending in 1"),
        ({"tables": {}}, "not an array"),
    ],
)
def test_invalid_changes_leave_the_store_unchanged(changes: Any, why: str) -> None:
    """Raw object cells, NaN, boolean hashes, 4-item stamps, ``true`` for 1, non-arrays."""
    store = MergeableStore("a", lambda: 1_780_000_000_000)
    store.set_cell("t", "r", "c", "kept")
    before = store.content()
    with pytest.raises(InvalidMergeable, match=why):
        store.apply_changes(changes)
    assert store.content() == before


def test_content_must_carry_hashes() -> None:
    assert validate_mergeable([[{}, "", 0], [{}, "", 0]], 0, True) is None
    assert "tables" in (validate_mergeable([[{}], [{}, "", 0]], 0, True) or "")


def test_vectors_are_what_tinybase_writes() -> None:
    """Regenerating the vectors with the installed tinybase gives the committed file."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "tinybase").is_dir():
        pytest.fail("node and tests/todos/js/node_modules are needed: run `make test`")
    out = subprocess.run(
        [node, "sync_vectors.mjs", str(VECTORS["seed"])],
        cwd=JS,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == VECTORS_PATH.read_bytes()
