"""Storage against a plain dict model: random operation sequences on both storage kinds.

A hypothesis state machine drives two objects in lockstep, one kept in its partition's rows and
one promoted to its own file (``sql.exec`` at the start, and again after each ``delete_all``, which
demotes it). Steps: put/get/delete (single and batch), ``list()`` with random prefix, start or
start_after, end, reverse and limit over a small key alphabet ('', NUL, 'é', '😀', ...), several
operations in one turn straight on storage or in a transaction that commits, rolls back or raises,
``delete_all``, eviction by the host, idle hibernation on the virtual clock, and a restart on the
same data dir. After every step both objects' whole ``list()`` must equal the model, types
included.

One machine for both kinds rather than one per kind: hypothesis' own work per step is shared and
their writes of a step share one group commit, so 500 examples cost about what 250 per kind would.
Each machine instance runs its own event loop (hypothesis drives rules synchronously) on a data dir
made with one partition: creating 16 partition databases per example would dominate the run time,
and the partition count does not matter to what is checked here. ``MODEL_EXAMPLES=50`` in the
environment gives a quick run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import durable
from durable.env import read_meta
from durable.testing import VirtualClock, wait_all_tasks_blocked
from tests.conftest import host_of

T = TypeVar("T")

MISSING = "\x00missing\x00"  # longer than any generated str value, so never a stored value
IDLE = 10.0
KEYS = ["", "\x00", "a", "a\x00", "aa", "ab", "abc", "b", "ba", "z", "é", "éa", "😀", "😀a"]
BOUNDS = [*KEYS, "\x00\x00", "a\x01", "c", "ÿ", "😀\x00"]

# fsync dominates on disk and durability is not what this file checks: use tmpfs when there is one.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

_generation = 0


class ModelObject(durable.DurableObject):
    """Thin RPC wrappers over ``ctx.storage``; results come back as ordered pairs."""

    def __init__(self, ctx: durable.ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        global _generation
        _generation += 1
        self.generation = _generation

    async def step(self, method: str, *args: Any) -> tuple[Any, str]:
        """Run another method, then read the whole ``list()`` in the same event: its ``digest``.

        Half the calls of a separate ``scan``, and a str is cheap to send back: most of the run
        time went into copying the list through the RPC codec. The list is the object's view
        before its commit; what was committed is read back after each evict, hibernate, reopen.
        """
        result = await getattr(self, method)(*args)
        return result, digest(list((await self.ctx.storage.list()).items()))

    async def whoami(self) -> int:
        return self.generation

    async def promote(self) -> None:
        self.ctx.storage.sql.exec("SELECT 1")

    async def put_one(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)

    async def put_many(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def get_one(self, key: str) -> Any:
        return await self.ctx.storage.get(key, MISSING)

    async def get_many(self, keys: list[str]) -> list[tuple[str, Any]]:
        return list((await self.ctx.storage.get(keys)).items())

    async def delete_one(self, key: str) -> bool:
        return bool(await self.ctx.storage.delete(key))

    async def delete_many(self, keys: list[str]) -> int:
        return int(await self.ctx.storage.delete(keys))

    async def scan(self, options: dict[str, Any]) -> list[tuple[str, Any]]:
        return list((await self.ctx.storage.list(**options)).items())

    async def wipe(self) -> None:
        await self.ctx.storage.delete_all()

    async def turn(
        self,
        ops: list[tuple[str, Any]],
        mode: str,
        before: tuple[str, Any] | None,
        final: dict[str, Any],
    ) -> tuple[list[Any], list[tuple[str, Any]], list[tuple[str, Any]]]:
        """Run ``ops`` in one turn: straight on storage (``direct``) or in a transaction that
        commits, rolls back or raises.

        Returns each op's result, then ``list(**final)`` of the target and the whole ``list()`` of
        ``ctx.storage`` after the last op.
        ``before`` is a put made outside the transaction first: a handler that raises keeps it.
        """
        storage = self.ctx.storage
        if before is not None:
            await storage.put(*before)

        async def body(target: Any) -> Any:
            results = [await apply(target, op, arg) for op, arg in ops]
            inside = list((await target.list(**final)).items())
            seen = list((await storage.list()).items())
            if mode == "rollback":
                target.rollback()
            elif mode == "raise":
                raise ValueError("transaction body failed")
            return results, inside, seen

        if mode == "direct":  # unflushed writes: reads overlay the buffer on SQLite
            return await body(storage)  # type: ignore[no-any-return]
        result: Any = await storage.transaction(body)
        return result  # type: ignore[no-any-return]


async def apply(target: Any, op: str, arg: Any) -> Any:
    """One storage operation on ``ctx.storage`` or a transaction, its result made comparable."""
    if op == "put":
        return await target.put(*arg)
    if op == "put_many":
        return await target.put(arg)
    if op == "delete":
        return bool(await target.delete(arg))
    if op == "delete_many":
        return int(await target.delete(arg))
    if op == "get":
        return await target.get(arg, MISSING)
    if op == "get_many":
        return list((await target.get(arg)).items())
    return list((await target.list(**arg)).items())


WORKER = durable.Worker(objects={"MODEL": ModelObject}, idle_timeout=IDLE)


# -- values and comparison -----------------------------------------------------------------------
# Drawing deeply nested values is most of hypothesis' cost per step, and the codec has its own
# property tests (test_values.py): here values come from a fixed pool of every kind the brief
# lists (nested containers included), mixed with cheap fresh ints and strs so puts differ.
POOL: list[Any] = [
    None,
    0,
    -1,
    2**64,
    -(2**100),
    "",
    "x",
    "é😀\x00",
    b"",
    b"\x00\xff",
    [],
    (),
    {},
    set(),
    frozenset(),
    [1, "a", b"b", None],
    (1, "a", b"b", None),
    [[], [[]], ()],
    ((1,), [2], {3: (4,)}),
    {"a": 1, "b": [1, 2], "c": {"d": None}},
    {1: "int key", "1": "str key", (1, 2): "tuple key"},
    {1, 2, 3},
    {"a", "b"},
    frozenset({1, "a"}),
    [{1, 2}, frozenset({3}), ({"k": (b"v",)},)],
    {"set": {1}, "tuple": (1, [2, (3,)]), "bytes": b"\x01"},
]
values = st.one_of(st.sampled_from(POOL), st.integers(), st.text(max_size=3))
keys = st.sampled_from(KEYS)
key_lists = st.lists(keys, min_size=0, max_size=5)
entries = st.dictionaries(keys, values, min_size=0, max_size=5)
bounds = st.one_of(st.none(), st.none(), st.sampled_from(BOUNDS))  # often unbounded


@st.composite
def list_options(draw: Any) -> dict[str, Any]:
    """list() options: prefix, start or start_after, end, reverse, limit (each maybe absent)."""
    options = {
        "prefix": draw(bounds),
        draw(st.sampled_from(["start", "start_after"])): draw(bounds),
        "end": draw(bounds),
        "reverse": draw(st.booleans()) or None,
        "limit": draw(st.none() | st.integers(1, 6)),
    }
    return {k: v for k, v in options.items() if v is not None}


operations = st.one_of(
    st.tuples(st.just("put"), st.tuples(keys, values)),
    st.tuples(st.just("put_many"), entries),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("delete_many"), key_lists),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("get_many"), key_lists),
    st.tuples(st.just("list"), list_options()),
)


def typed(value: Any) -> str:
    """A str equal for two values only if they are equal with the same types all the way down
    (``1 == True`` and ``{1} == frozenset({1})`` in Python, not here); dict and set order ignored.

    >>> typed((1, ["a", {b"k": None}]))
    "(int:1,[str:'a',{bytes:b'k'=NoneType:None}])"
    """
    kind = type(value)
    if kind is dict:
        return "{" + ",".join(sorted(f"{typed(k)}={typed(v)}" for k, v in value.items())) + "}"
    if kind is list:
        return "[" + ",".join(map(typed, value)) + "]"
    if kind is tuple:
        return "(" + ",".join(map(typed, value)) + ")"
    if kind is set or kind is frozenset:
        return f"{kind.__name__}{{" + ",".join(sorted(map(typed, value))) + "}"
    return f"{kind.__name__}:{value!r}"


def list_model(
    model: dict[str, Any],
    prefix: str | None = None,
    start: str | None = None,
    start_after: str | None = None,
    end: str | None = None,
    reverse: bool = False,
    limit: int | None = None,
) -> list[tuple[str, Any]]:
    """Cloudflare's list() over a dict: UTF-8 byte order (= code point order for these keys)."""
    out = sorted(
        (k, v)
        for k, v in model.items()
        if (prefix is None or k.startswith(prefix))
        and (start is None or k >= start)
        and (start_after is None or k > start_after)
        and (end is None or k < end)
    )
    if reverse:
        out.reverse()
    return out if limit is None else out[:limit]


def check_pairs(actual: list[tuple[str, Any]], expected: list[tuple[str, Any]]) -> None:
    assert [k for k, _ in actual] == [k for k, _ in expected]
    assert typed(actual) == typed(expected)


def digest(pairs: list[tuple[str, Any]]) -> str:
    """A str equal for two lists of pairs exactly when ``check_pairs`` would pass."""
    return typed(pairs)


def model_apply(model: dict[str, Any], op: str, arg: Any) -> Any:
    """``apply`` on the dict model: the same operation and the result the object must return."""
    if op == "put":
        model[arg[0]] = arg[1]
        return None
    if op == "put_many":
        model.update(arg)
        return None
    if op == "delete":
        return model.pop(arg, MISSING) is not MISSING
    if op == "delete_many":
        return sum(model.pop(key, MISSING) is not MISSING for key in set(arg))
    if op == "get":
        return model.get(arg, MISSING)
    if op == "get_many":
        return sorted((k, model[k]) for k in set(arg) if k in model)
    return list_model(model, **arg)


# -- the machine ------------------------------------------------------------------------------------
KINDS = ("rows", "file")  # object name = the storage kind it is kept in


class StorageMachine(RuleBasedStateMachine):
    """Applies every step to two objects in lockstep: one in partition rows, one promoted.

    Both kinds see the same operations against the same model in every example, and their writes
    of one step share a group commit (one partition, ``asyncio.gather``). That costs half of what
    one machine per kind would: hypothesis' own work per step is shared.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="durable-model-", dir=SCRATCH))
        read_meta(self.dir, partitions=1)
        self.clock = VirtualClock(start=1_700_000_000.0)
        self.model: dict[str, Any] = {}
        self.stack: contextlib.AsyncExitStack | None = None
        self.digests: dict[str, str] | None = None
        self._open()
        self.promote_file_object()

    # -- plumbing ------------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, *args: Any) -> dict[str, Any]:
        """Call ``method`` on both objects at once; each also returns its whole ``list()``.

        Returns each object's result or exception; ``matches_model`` checks the lists.
        """

        async def both() -> tuple[list[Any], list[Any]]:
            stubs = [self.stubs[kind] for kind in KINDS]
            calls = [stub.step(method, *args) for stub in stubs]
            outs = await asyncio.gather(*calls, return_exceptions=True)
            results, digests = [], []
            for stub, out in zip(stubs, outs, strict=True):
                if isinstance(out, BaseException):
                    results.append(out)
                    digests.append(digest(await stub.scan({})))
                else:
                    results.append(out[0])
                    digests.append(out[1])
            return results, digests

        results, digests = self.run(both())
        self.digests = dict(zip(KINDS, digests, strict=True))
        return dict(zip(KINDS, results, strict=True))

    def call_ok(self, method: str, *args: Any) -> dict[str, Any]:
        results = self.call(method, *args)
        for result in results.values():
            if isinstance(result, BaseException):
                raise result
        return results

    def promote_file_object(self) -> None:
        self.run(self.stubs["file"].promote())
        self.digests = None  # read both again after the copy
        self.check_kind()

    def _open(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        connection = durable.connect(WORKER, data_dir=self.dir, clock=self.clock)
        self.env = self.run(self.stack.enter_async_context(connection))
        self.stubs = {kind: self.env.MODEL.get_by_name(kind) for kind in KINDS}
        folder = self.dir / "partitions" / "0000" / "objects" / "MODEL"
        self.files = {k: str(folder / f"{s.id.raw.hex()}.sqlite") for k, s in self.stubs.items()}

    def _close(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            self.run(stack.aclose())

    def teardown(self) -> None:
        try:
            self._close()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def check_kind(self, file_object_promoted: bool = True) -> None:
        """A promoted object has its file on disk; a rows object has none (DESIGN §3 layout)."""
        for kind in KINDS:
            exists = os.path.exists(self.files[kind])
            assert exists == (kind == "file" and file_object_promoted), kind

    # -- writes --------------------------------------------------------------------------------
    @rule(key=keys, value=values)
    def put(self, key: str, value: Any) -> None:
        self.call_ok("put_one", key, value)
        self.model[key] = value

    @rule(batch=entries)
    def put_batch(self, batch: dict[str, Any]) -> None:
        self.call_ok("put_many", batch)
        self.model.update(batch)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        for result in self.call_ok("delete_one", key).values():
            assert result == (key in self.model)
        self.model.pop(key, None)

    @rule(batch=key_lists)
    def delete_batch(self, batch: list[str]) -> None:
        for result in self.call_ok("delete_many", batch).values():
            assert result == len(set(batch) & set(self.model))
        for key in batch:
            self.model.pop(key, None)

    @rule(refill=entries)
    def delete_all(self, refill: dict[str, Any]) -> None:
        """delete_all demotes the file object: refill both and promote it again, with data."""
        self.call_ok("wipe")
        self.model.clear()
        self.check_kind(file_object_promoted=False)
        self.call_ok("put_many", refill)
        self.model.update(refill)
        self.promote_file_object()

    # -- reads ---------------------------------------------------------------------------------
    @rule(key=keys)
    def get(self, key: str) -> None:
        for found in self.call_ok("get_one", key).values():
            assert typed(found) == typed(self.model.get(key, MISSING))

    @rule(batch=key_lists)
    def get_batch(self, batch: list[str]) -> None:
        expected = sorted((k, self.model[k]) for k in set(batch) if k in self.model)
        for found in self.call_ok("get_many", batch).values():
            check_pairs(found, expected)

    @rule(options=list_options())
    def list_range(self, options: dict[str, Any]) -> None:
        for found in self.call_ok("scan", options).values():
            check_pairs(found, list_model(self.model, **options))

    # -- several operations in one turn ------------------------------------------------------
    @rule(
        ops=st.lists(operations, max_size=5),
        mode=st.sampled_from(["direct", "commit", "rollback", "raise"]),
        before=st.none() | st.tuples(keys, values),
        final=list_options(),
    )
    def turn(
        self,
        ops: list[tuple[str, Any]],
        mode: str,
        before: tuple[str, Any] | None,
        final: dict[str, Any],
    ) -> None:
        """Operations in one handler, straight on storage or in a transaction."""
        if before is not None:
            self.model[before[0]] = before[1]
        layer = dict(self.model)
        expected = [model_apply(layer, op, arg) for op, arg in ops]
        for result in self.call("turn", ops, mode, before, final).values():
            if mode == "raise":
                assert isinstance(result, ValueError), result
                assert str(result) == "transaction body failed"
                continue
            if isinstance(result, BaseException):
                raise result
            results, inside, seen = result
            assert len(results) == len(expected)
            for (op, _), got, want in zip(ops, results, expected, strict=True):
                if op in ("get_many", "list"):
                    check_pairs(got, want)
                else:
                    assert typed(got) == typed(want), op
            check_pairs(inside, list_model(layer, **final))
            check_pairs(seen, list_model(layer))  # ctx.storage reads through the transaction
        if mode in ("direct", "commit"):
            self.model = layer

    # -- lifecycle -----------------------------------------------------------------------------
    @rule()
    def evict(self) -> None:
        """Drop both activations through the host, as its LRU and idle eviction do."""
        before = self.call_ok("whoami")
        self.run(wait_all_tasks_blocked())
        host = host_of(self.env)
        for stub in self.stubs.values():
            activation = host.activate(stub.id)
            assert activation.idle and not activation.cache.busy
            host.evict(activation)
        after = self.call_ok("whoami")
        assert all(after[kind] != before[kind] for kind in KINDS)

    @rule()
    def hibernate(self) -> None:
        """Let both objects idle past ``idle_timeout`` on the virtual clock."""
        before = self.call_ok("whoami")
        self.run(self.clock.advance(IDLE + 1))
        after = self.call_ok("whoami")
        assert all(after[kind] != before[kind] for kind in KINDS)

    @rule()
    def reopen(self) -> None:
        self._close()
        self._open()

    @invariant()
    def matches_model(self) -> None:
        if self.digests is None:  # the rule made no call (reopen): read now
            self.call_ok("whoami")
        digests, self.digests = self.digests, None
        assert digests is not None
        expected = list_model(self.model)
        wanted = digest(expected)
        for kind in KINDS:
            if digests[kind] != wanted:  # read it again for a readable diff
                check_pairs(self.run(self.stubs[kind].scan({})), expected)
                raise AssertionError(f"{kind}: list() differs from the model")
        self.check_kind()


# ~35 s of CPU for 500 examples; shrinking a failure reruns whole machines and can take minutes, so the
# timeout is raised past hypothesis' own shrinking limit (300 s) to let it print the example.
TestStorageMatchesModel = pytest.mark.slow(pytest.mark.timeout(600)(StorageMachine.TestCase))
TestStorageMatchesModel.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "500")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # a failure prints its steps; saving every example costs a quarter of the run
)
