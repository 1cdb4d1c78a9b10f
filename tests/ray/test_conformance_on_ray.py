"""Issue 9, acceptance 1: a marked subset of the conformance suite against a real Ray cluster.

One cluster (2 host slots, 4 partitions) serves every test of this module; the tests reach it as
a client through ``connect(worker, address="auto")`` (the session's Ray is reused), so every call
travels over a host's channel, and through HTTP to the gateway inside the host slots for ``fetch``.
The object classes are the conformance suite's own (``tests/ray/apps.py``); the rows are the ones
whose assertions do not need the virtual clock or the object's process memory. Alarms run on the
real clock here, with a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import durable
from durable.errors import DataCloneError, RemoteError, RpcError, SqlError, TransactionError
from tests.conformance.samples import SAMPLES, assert_same
from tests.conformance.test_list import KEYS, LIST_ROWS, ORDER
from tests.conformance.test_rpc import Plain, QuotaError
from tests.conformance.test_sql import ROWS
from tests.ray.apps import worker
from tests.ray.harness import RunningCluster, launch, make_config, run_sync, shutdown, wait_until

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = launch(make_config(tmp_path_factory.mktemp("conformance"), slots=2, partitions=4))
    try:
        run_sync(running.settled())
        yield running
    finally:
        shutdown(running.cluster)


@pytest.fixture
async def env(cluster: RunningCluster) -> AsyncIterator[Any]:
    async with durable.connect(worker, address="auto") as env:
        yield env


async def test_both_slots_own_partitions_and_every_partition_has_an_owner(
    cluster: RunningCluster,
) -> None:
    owned = await cluster.settled()  # rendezvous gives each of the two slots some partitions
    assert sorted(p for slot in owned for p in slot) == [0, 1, 2, 3]


async def test_object_sees_the_id_and_name_its_caller_derived(env: Any) -> None:
    expected = "14d442eba96687052faf9c73c7b708c4d4612b7c7d32126f66ae6d7babfd2279"  # CONTRACTS §2
    assert str(env.IDS.id_from_name("a")) == expected
    assert await env.IDS.get_by_name("a").whoami() == (expected, "a")
    other = await env.OTHER.get_by_name("a").whoami()
    assert other[0] != expected  # one class bound twice: two namespaces


async def test_unique_id_reaches_the_same_object_through_its_string(env: Any) -> None:
    unique = env.IDS.new_unique_id()
    await env.IDS.get(unique).remember("kept")
    again = env.IDS.get(env.IDS.id_from_string(str(unique).upper()))
    assert await again.whoami() == (str(unique), None)
    assert await again.recall() == "kept"


async def test_rpc_returns_results_of_async_sync_and_keyword_methods(env: Any) -> None:
    stub = env.RPC.get_by_name("r")
    assert await stub.add(2, 3) == 5
    assert await stub.mul(6, 7) == 42
    assert await stub.greet(name="ada", punctuation="!", greeting="hi") == "hi, ada!"
    assert await stub.get("a") == "get a"


async def test_every_sample_value_round_trips_with_its_exact_type(env: Any) -> None:
    stub = env.RPC.get_by_name("r")
    echoed = await asyncio.gather(*(stub.echo(value) for value in SAMPLES.values()))
    for (name, value), got in zip(SAMPLES.items(), echoed, strict=True):
        assert_same(value, got, name)


@pytest.mark.parametrize("name", ["nope", "_private", "alarm", "field"])
async def test_unknown_private_or_handler_method_raises_rpc_error(env: Any, name: str) -> None:
    stub = env.RPC.get_by_name("r")
    message = f'The RPC receiver does not implement the method "{name}".'
    with pytest.raises(RpcError, match=re.escape(message)):
        await getattr(stub, name)()
    assert await stub.add(1, 1) == 2


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        ("ValueError", ValueError, "bad value"),
        ("KeyError", KeyError, str(KeyError("missing"))),  # str() quotes: args travel, not str
        ("QuotaError", QuotaError, "quota exceeded"),
    ],
)
async def test_remote_exception_is_reraised_with_class_and_message(
    env: Any, kind: str, cls: type[Exception], message: str
) -> None:
    with pytest.raises(cls) as caught:
        await env.RPC.get_by_name("r").fail(kind)
    assert type(caught.value) is cls
    assert str(caught.value) == message
    assert caught.value.remote is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["ConnectionError", "TimeoutError"])
async def test_remote_os_error_is_raised_once_and_the_call_is_not_resent(
    env: Any, kind: str
) -> None:
    stub = env.FAILING.get_by_name(kind)
    with pytest.raises(Exception) as caught:  # any class: the assertion below names it
        await stub.write_then_raise(kind)
    runs = await stub.runs()
    assert (type(caught.value).__name__, str(caught.value), runs) == (kind, "run 1", 1)


async def test_remote_exception_of_unimportable_class_is_remote_error(env: Any) -> None:
    with pytest.raises(RemoteError, match="not importable") as caught:
        await env.RPC.get_by_name("r").fail("LocalError")
    assert caught.value.remote is True
    assert "LocalError" in caught.value.type_name


async def test_unserializable_argument_and_result_raise_data_clone_error(env: Any) -> None:
    stub = env.RPC.get_by_name("r")
    with pytest.raises(DataCloneError) as caught:
        await stub.echo(Plain())
    assert caught.value.remote is False  # refused before anything left this process
    with pytest.raises(DataCloneError):
        await stub.return_plain()
    assert await stub.add(1, 2) == 3


async def test_calls_on_one_stub_arrive_in_order(env: Any) -> None:
    stub = env.RPC.get_by_name("ordered")
    await asyncio.gather(*(stub.record(i) for i in range(50)))
    assert await stub.recorded() == list(range(50))


async def test_concurrent_get_then_put_loses_no_update(env: Any) -> None:
    stub = env.GATE.get_by_name("fresh")
    await asyncio.gather(*(stub.storage_only(i) for i in range(10)))
    assert await stub.count() == 10


async def test_list_returns_every_key_in_utf8_byte_order_with_options(env: Any) -> None:
    lister = env.LIST.get_by_name("keys")
    await lister.fill()
    kind, items = await lister.list_result()
    assert kind == "dict"
    assert items == [(key, KEYS.index(key)) for key in ORDER]
    for options, expected in LIST_ROWS:
        assert await lister.list_keys(**options) == expected, options


async def test_transaction_rollback_and_exception_undo_writes(env: Any) -> None:
    obj = env.TXN.get_by_name("t")
    await obj.put({"k": "before", "keep": True})
    assert await obj.rollback_then_return("x") == "x"
    with pytest.raises(ValueError, match=re.escape("thrown inside txn")):
        await obj.raise_inside()
    with pytest.raises(TransactionError, match=re.escape("Cannot put() on rolled back")):
        await obj.use_after_rollback("put")
    assert await obj.nested() == "inner value"
    assert await obj.list_all() == {"k": "before", "keep": True, "inner": 2, "outer": 1}


async def test_sql_exec_reads_writes_and_reports_errors(env: Any) -> None:
    stub = env.SQL.get_by_name("s")
    await stub.kv_put("kept", 1)  # KV data written before promotion stays readable after
    await stub.rows("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    await stub.rows("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert await stub.rows("SELECT * FROM t ORDER BY id") == ROWS
    assert await stub.raw("SELECT id, v FROM t WHERE id = ?", 2) == [(2, "b")]
    assert await stub.kv_get("kept") == 1
    with pytest.raises(SqlError, match="no such table"):
        await stub.rows("SELECT * FROM missing")


async def test_alarm_fires_on_the_real_clock_once(env: Any) -> None:
    stub = env.ALARMED.get_by_name("soon")
    at = await stub.arm(300)
    assert await stub.get_alarm() == at
    fired = await wait_until(stub.fired, timeout=10, what="the alarm to fire")
    assert len(fired) == 1
    assert fired[0]["scheduled_time"] == at
    assert fired[0]["retry_count"] == 0
    assert fired[0]["get_alarm"] is None
    assert fired[0]["now_ms"] >= at
    assert await stub.get_alarm() is None


async def test_stub_fetch_forwards_method_url_headers_and_json_over_the_channel(env: Any) -> None:
    response = await env.RPC.get_by_name("r").fetch(
        "https://example.com/items/7?q=1", method="POST", json={"a": [1, 2]},
        headers={"x-test": "yes"},
    )  # fmt: skip
    assert response.status_code == 201
    assert response.headers["x-from"] == "object"
    reply = response.json()
    assert (reply["method"], reply["path"], reply["query"], reply["header"]) == (
        "POST", "/items/7", "q=1", "yes",
    )  # fmt: skip
    assert json.loads(reply["body"]) == {"a": [1, 2]}
    text = await env.RPC.get_by_name("r").fetch("https://example.com/text")
    assert (text.status_code, text.text) == (200, "plain text")
    with pytest.raises(RpcError, match=re.escape("Handler does not export a fetch() function.")):
        await env.NOFETCH.get_by_name("n").fetch("https://example.com/")


async def test_http_through_the_gateway_forwards_requests_to_objects(
    cluster: RunningCluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as http:
        health = await http.get("/healthz")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        response = await http.post(
            "/rpc/r/items/7?q=1", content=b"hello", headers={"x-test": "yes"}
        )
        assert response.status_code == 201
        assert response.headers["x-from"] == "object"
        reply = response.json()
        assert (reply["method"], reply["path"], reply["query"]) == ("POST", "/rpc/r/items/7", "q=1")
        assert (reply["header"], reply["body"]) == ("yes", "hello")
        # Names spread over all 4 partitions, so both slots' objects answer through each gateway.
        counts = [await http.get(f"/tally/name-{i}") for i in range(12)]
        assert {r.status_code for r in counts} == {200}
        assert {r.json()["pid"] for r in counts} == set(await cluster.pids())
        again = await http.get("/tally/name-0")
        assert again.json()["n"] == 2
        assert (await http.get("/no/such/route")).status_code == 404
