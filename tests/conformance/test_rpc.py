"""semantics.md "RPC", the rows with a Python counterpart, and CONTRACTS §3.

Deliberate differences from workerd (CONTRACTS §8): ``_private`` methods are not callable, and
functions or RPC targets cannot be passed as arguments (``DataCloneError`` at the caller). A stub
reserves only ``fetch``, ``id``, ``name`` and dunders, so objects may define ``get``/``put``/
``delete``. ``__init__`` itself cannot be named through a stub (dunders are the stub's own), so
the "constructor" row is covered by names with leading underscores.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from durable import DurableObject, JSONResponse, Request, Response, Worker
from durable.errors import DataCloneError, RemoteError, RpcError
from tests.conformance.samples import SAMPLES, assert_same


class QuotaError(Exception):
    """An application error importable by the caller."""


class Plain:
    """A plain class, neither a dataclass nor registered: not serializable."""

    def __init__(self) -> None:
        self.x = 1


class Rpc(DurableObject):
    field = "a class attribute, not a method"

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.calls: list[int] = []

    async def add(self, a: int, b: int) -> int:
        return a + b

    def mul(self, a: int, b: int) -> int:
        return a * b

    async def echo(self, value: Any) -> Any:
        return value

    async def greet(self, name: str, *, greeting: str = "hello", punctuation: str = ".") -> str:
        return f"{greeting}, {name}{punctuation}"

    async def fail(self, kind: str) -> None:
        if kind == "ValueError":
            raise ValueError("bad value")
        if kind == "KeyError":
            raise KeyError("missing")
        if kind == "QuotaError":
            raise QuotaError("quota exceeded")

        class LocalError(Exception):
            pass

        raise LocalError("not importable")

    async def return_plain(self) -> Plain:
        return Plain()

    def get(self, key: str) -> str:
        return f"get {key}"

    def put(self, key: str, value: int) -> str:
        return f"put {key}={value}"

    def delete(self, key: str) -> str:
        return f"delete {key}"

    def record(self, i: int) -> None:
        self.calls.append(i)

    def recorded(self) -> list[int]:
        return self.calls

    def _private(self) -> str:
        return "secret"

    async def alarm(self, info: Any) -> None:
        pass

    async def websocket_message(self, ws: Any, message: Any) -> None:
        pass

    async def websocket_close(self, ws: Any, code: int, reason: str, was_clean: bool) -> None:
        pass

    async def websocket_error(self, ws: Any, error: Any) -> None:
        pass

    async def fetch(self, request: Request) -> Response:
        if request.url.path == "/text":
            return Response("plain text", media_type="text/plain")
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "header": request.headers.get("x-test"),
                "body": body.decode(),
            },
            status_code=201,
            headers={"x-from": "object"},
        )


class NoFetch(DurableObject):
    async def ping(self) -> str:
        return "pong"


worker = Worker(objects={"RPC": Rpc, "NOFETCH": NoFetch})


async def test_add_returns_the_sum(run: Any) -> None:
    async with run(worker) as env:
        assert await env.RPC.get_by_name("r").add(2, 3) == 5


@pytest.mark.parametrize("name", list(SAMPLES))
async def test_echo_returns_value_with_its_exact_type(run: Any, name: str) -> None:
    async with run(worker) as env:
        assert_same(SAMPLES[name], await env.RPC.get_by_name("r").echo(SAMPLES[name]))


async def test_sync_method_is_callable_and_awaited_at_the_caller(run: Any) -> None:
    async with run(worker) as env:
        assert await env.RPC.get_by_name("r").mul(6, 7) == 42


async def test_keyword_arguments_reach_the_method(run: Any) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        assert await stub.greet("ada") == "hello, ada."
        assert await stub.greet(name="ada", punctuation="!", greeting="hi") == "hi, ada!"


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "_private",
        "__mangled",
        "alarm",
        "websocket_message",
        "websocket_close",
        "websocket_error",
        "field",
        "ctx",
        "env",
    ],
)
async def test_unknown_private_handler_or_non_method_name_raises_rpc_error(
    run: Any, name: str
) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        with pytest.raises(
            RpcError, match=re.escape(f'The RPC receiver does not implement the method "{name}".')
        ):
            await getattr(stub, name)()
        assert await stub.add(1, 1) == 2


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        ("ValueError", ValueError, "bad value"),
        ("KeyError", KeyError, str(KeyError("missing"))),
        ("QuotaError", QuotaError, "quota exceeded"),
    ],
)
async def test_remote_exception_is_reraised_with_class_and_message(
    run: Any, kind: str, cls: type[Exception], message: str
) -> None:
    async with run(worker) as env:
        with pytest.raises(cls) as caught:
            await env.RPC.get_by_name("r").fail(kind)
        assert type(caught.value) is cls
        assert str(caught.value) == message
        assert caught.value.remote is True  # type: ignore[attr-defined]


async def test_remote_exception_of_unimportable_class_is_remote_error(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(RemoteError, match="not importable") as caught:
            await env.RPC.get_by_name("r").fail("LocalError")
        assert caught.value.remote is True
        assert "LocalError" in caught.value.type_name


async def test_methods_named_get_put_delete_are_callable(run: Any) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        assert await stub.get("a") == "get a"
        assert await stub.put("a", 1) == "put a=1"
        assert await stub.delete("a") == "delete a"


async def test_fetch_on_a_class_without_fetch_raises_rpc_error(run: Any) -> None:
    async with run(worker) as env:
        stub = env.NOFETCH.get_by_name("n")
        with pytest.raises(
            RpcError, match=re.escape("Handler does not export a fetch() function.")
        ):
            await stub.fetch("https://example.com/")
        assert await stub.ping() == "pong"


async def test_fetch_delivers_method_url_headers_and_json_and_returns_the_response(
    run: Any,
) -> None:
    async with run(worker) as env:
        response = await env.RPC.get_by_name("r").fetch(
            "https://example.com/items/7?q=1",
            method="POST",
            json={"a": [1, 2]},
            headers={"x-test": "yes"},
        )
        assert issubclass(type(response), Response)  # a Starlette Response a route can return
        assert response.status_code == 201
        assert response.headers["x-from"] == "object"
        assert response.headers["content-type"] == "application/json"
        reply = response.json()
        assert reply["method"] == "POST"
        assert reply["path"] == "/items/7"
        assert reply["query"] == "q=1"
        assert reply["header"] == "yes"
        assert json.loads(reply["body"]) == {"a": [1, 2]}
        assert json.loads(bytes(response.body)) == reply
        assert json.loads(response.text) == reply


async def test_fetch_defaults_to_get_and_sends_content(run: Any) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        reply = (await stub.fetch("https://example.com/raw")).json()
        assert (reply["method"], reply["body"]) == ("GET", "")
        reply = (await stub.fetch("https://example.com/raw", method="PUT", content=b"raw")).json()
        assert (reply["method"], reply["body"]) == ("PUT", "raw")


async def test_fetch_returns_text_body(run: Any) -> None:
    async with run(worker) as env:
        response = await env.RPC.get_by_name("r").fetch("https://example.com/text")
        assert response.status_code == 200
        assert response.text == "plain text"
        assert response.body == b"plain text"


async def test_calls_on_one_stub_arrive_in_order(run: Any) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        await asyncio.gather(*(stub.record(i) for i in range(50)))
        assert await stub.recorded() == list(range(50))


@pytest.mark.parametrize(
    "argument", [Plain(), lambda: 1, object()], ids=["plain instance", "lambda", "object()"]
)
async def test_unserializable_argument_raises_data_clone_error_at_the_caller(
    run: Any, argument: Any
) -> None:
    async with run(worker) as env:
        stub = env.RPC.get_by_name("r")
        with pytest.raises(DataCloneError) as caught:
            await stub.echo(argument)
        assert caught.value.remote is False


async def test_unserializable_return_value_raises_data_clone_error(run: Any) -> None:
    async with run(worker) as env:
        with pytest.raises(DataCloneError):
            await env.RPC.get_by_name("r").return_plain()


async def test_stub_id_and_name(run: Any) -> None:
    async with run(worker) as env:
        named = env.RPC.get_by_name("a")
        assert named.id == env.RPC.id_from_name("a")
        assert named.name == "a"
        by_id = env.RPC.get(env.RPC.id_from_name("b"))
        assert by_id.id == env.RPC.id_from_name("b")
        assert by_id.name == "b"
        unique_id = env.RPC.new_unique_id()
        unique = env.RPC.get(unique_id)
        assert unique.id == unique_id
        assert unique.name is None
