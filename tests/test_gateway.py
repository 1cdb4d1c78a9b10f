"""The gateway over HTTP, against a real uvicorn server and ``httpx``: routing, forwarding,
errors and bad input (each with its documented status, nothing written), auth, ``/healthz`` and
``/metrics``, static files and Starlette routers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import durable
from tests.live_server import live


class Echo(durable.DurableObject):
    """Returns what reached it; ``/json`` parses the body first and stores it."""

    async def fetch(self, request: Request) -> durable.Response:
        if request.headers.get("upgrade") == "websocket":
            return self.ctx.accept_websocket(request)
        if request.url.path.endswith("/json"):
            doc = await request.json()
            await self.ctx.storage.put("doc", doc)
            return durable.JSONResponse({"stored": doc})
        body = await request.body()
        return durable.JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": {k: v for k, v in request.headers.items() if k.startswith("x-")},
                "body": body.decode(),
            },
            headers={"x-from": "object"},
        )

    async def stored(self) -> Any:
        return await self.ctx.storage.get("doc")

    async def boom(self) -> None:
        raise RuntimeError("secret internals")


def reject_without_token(request: Request) -> durable.Response | None:
    if request.headers.get("authorization") != "Bearer good":
        return durable.JSONResponse({"error": "Unauthorized", "message": "no token"}, 401)
    return None


async def plain(request: Request) -> PlainTextResponse:
    names = sorted(k for k in vars(request.state.env) if not k.startswith("_"))
    return PlainTextResponse(f"plain {names}")


def make_worker(tmp_path: Path, **options: Any) -> durable.Worker:
    worker = durable.Worker(
        objects={"ECHO": Echo}, router=Router([Route("/plain", plain)]), **options
    )

    @worker.route("/echo/{name}/{rest:path}", methods=["GET", "POST", "PUT"])
    async def echo(request: Request, env: Any) -> Any:
        return await env.ECHO.get_by_name(request.path_params["name"]).fetch(request)

    @worker.route("/id/{hex}")
    async def by_id(request: Request, env: Any) -> Any:
        return await env.ECHO.get(request.path_params["hex"]).fetch(request)

    @worker.route("/fail/{kind}", methods=["GET", "POST"])
    async def fail(request: Request, env: Any) -> Any:
        kind = request.path_params["kind"]
        if kind == "overloaded":
            raise durable.Overloaded("Durable Object x", 1000)
        if kind == "rpc":
            return await env.ECHO.get_by_name("a").nope()
        if kind == "remote":
            return await env.ECHO.get_by_name("a").boom()
        if kind == "json":
            return durable.JSONResponse(await request.json())
        raise KeyError("secret internals")

    @worker.route("/guarded", auth=reject_without_token)
    async def guarded(request: Request, env: Any) -> Any:
        return durable.JSONResponse({"ok": True})

    @worker.websocket_route("/ws", auth=reject_without_token)
    async def ws(websocket: durable.WebSocket, env: Any) -> Any:
        return await env.ECHO.get_by_name("w").fetch(websocket)

    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    (static / "index.html").write_text("<h1>hi</h1>")
    (static / "app.js").write_text("console.log(1)")
    worker.static("/", static)
    return worker


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert "Traceback" not in body["message"]
    return str(body["error"])


async def test_routes_forward_method_path_query_headers_and_body(tmp_path: Path) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        response = await server.client.post(
            "/echo/a/deep/path?x=1&y=two", content=b"payload", headers={"x-custom": "yes"}
        )
        assert response.status_code == 200
        assert response.headers["x-from"] == "object"
        assert response.json() == {
            "method": "POST",
            "path": "/echo/a/deep/path",
            "query": "x=1&y=two",
            "headers": {"x-custom": "yes"},
            "body": "payload",
        }


async def test_a_starlette_router_and_static_files_are_served(tmp_path: Path) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        plain = await server.client.get("/plain")
        assert plain.text == "plain ['ECHO']"
        assert (await server.client.get("/")).text == "<h1>hi</h1>"
        assert (await server.client.get("/app.js")).text == "console.log(1)"


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nowhere/at/all.txt", 404, "NotFound"),
        ("DELETE", "/echo/a/x", 405, "MethodNotAllowed"),
        ("GET", "/id/not-hex", 400, "InvalidObjectId"),
        ("GET", "/id/" + "ab" * 32, 400, "InvalidObjectId"),
        ("GET", "/fail/overloaded", 503, "Overloaded"),
        ("GET", "/fail/rpc", 404, "RpcError"),
        ("GET", "/fail/remote", 500, "InternalError"),
        ("GET", "/fail/other", 500, "InternalError"),
        ("GET", "/ws", 426, "UpgradeRequired"),
    ],
)  # fmt: skip
async def test_errors_have_their_status_and_a_json_body(
    tmp_path: Path, method: str, path: str, status: int, error: str
) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        response = await server.client.request(method, path)
        assert response.status_code == status, response.text
        assert error_of(response) == error
        assert "secret internals" not in response.text
        if status == 503:
            assert response.headers["retry-after"] == "1"
        assert server.host.statistics().commits == 0  # nothing was written


@pytest.mark.parametrize("path", ["/echo/a/json", "/fail/json"])
async def test_malformed_json_is_400_and_writes_nothing(tmp_path: Path, path: str) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        response = await server.client.post(path, content=b'{"a": 1,,}')
        assert response.status_code == 400
        assert error_of(response) == "MalformedJSON"
        assert await server.env.ECHO.get_by_name("a").stored() is None
        good = await server.client.post("/echo/a/json", json={"a": 1})
        assert good.json() == {"stored": {"a": 1}}


async def test_oversized_bodies_are_413_before_anything_runs(tmp_path: Path) -> None:
    worker = make_worker(tmp_path, max_request_bytes=1000)
    async with live(worker, tmp_path / "data") as server:
        declared = await server.client.post("/echo/a/json", content=b"[" + b"1," * 600 + b"1]")
        assert declared.status_code == 413 and error_of(declared) == "RequestTooLarge"

        async def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 200

        streamed = await server.client.post("/echo/a/x", content=chunks())
        assert streamed.status_code == 413 and error_of(streamed) == "RequestTooLarge"
        assert server.host.statistics().activations == 0
        small = await server.client.post("/echo/a/x", content=b"ok")
        assert small.json()["body"] == "ok"


async def test_auth_hooks_refuse_http_and_websockets(tmp_path: Path) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        assert (await server.client.get("/guarded")).status_code == 401
        ok = await server.client.get("/guarded", headers={"authorization": "Bearer good"})
        assert ok.json() == {"ok": True}
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server.ws + "/ws"):
                pass
        assert refused.value.response.status_code == 401
        headers = {"authorization": "Bearer good"}
        async with ws_connect(server.ws + "/ws", additional_headers=headers):
            assert len(server.host.sockets.by_sid) == 1


async def test_worker_auth_covers_everything_but_health_and_metrics(tmp_path: Path) -> None:
    calls: list[str] = []

    async def deny_all(request: Any) -> None:
        calls.append(request.url.path)
        raise PermissionError("closed for maintenance")

    worker = make_worker(tmp_path, auth=deny_all)
    async with live(worker, tmp_path / "data") as server:
        for path in ("/echo/a/x", "/plain", "/", "/nowhere"):
            response = await server.client.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"error": "Unauthorized", "message": "closed for maintenance"}
        assert (await server.client.get("/healthz")).status_code == 200
        assert (await server.client.get("/metrics")).status_code == 200
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server.ws + "/ws"):
                pass
        assert refused.value.response.status_code == 401
        assert "/healthz" not in calls and "/metrics" not in calls
        assert server.host.statistics().activations == 0


async def test_healthz_and_metrics_never_wake_an_object(tmp_path: Path) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        await server.client.get("/echo/a/x")
        await server.client.get("/echo/b/x")
        activations = server.host.statistics().activations
        health = await server.client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        text = (await server.client.get("/metrics")).text
        assert server.host.statistics().activations == activations
        assert metric(text, "durable_objects_active") == 2
        route = '{method="GET",route="/echo/{name}/{rest:path}",status="200"}'
        assert metric(text, "durable_http_requests_total" + route) == 2
        assert metric(text, 'durable_namespace_requests_total{kind="fetch",namespace="ECHO"}') == 2
        assert metric(text, "durable_activations_total") == 2
        for name in ("durable_storage_bytes", "durable_websockets_open", "durable_evictions_total",
                     "durable_alarm_lateness_max_seconds", 'durable_overloads_total{namespace="ECHO"}',
                     "durable_objects_hibernated", "durable_gateway_websockets"):  # fmt: skip
            assert metric(text, name) >= 0, name
        assert 'durable_http_request_duration_seconds_bucket{le="+Inf"' in text.replace(
            'route="/echo/{name}/{rest:path}",', ""
        )


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and name.endswith("}")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def test_healthz_is_503_until_ready(tmp_path: Path) -> None:
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        server.gateway.health.ready = False
        response = await server.client.get("/healthz")
        assert response.status_code == 503 and response.json() == {"status": "starting"}


def test_reserved_paths_cannot_be_routes() -> None:
    worker = durable.Worker()

    @worker.route("/healthz")
    async def mine(request: Request, env: Any) -> None: ...

    with pytest.raises(durable.InvalidArgument, match="/healthz is reserved"):
        from durable.gateway import build_app

        build_app(worker, None)


def test_gateway_options_are_validated() -> None:
    with pytest.raises(durable.InvalidArgument, match="max_request_bytes must be a positive int"):
        durable.Worker(max_request_bytes=0)
    with pytest.raises(durable.InvalidArgument, match="auth must be a callable"):
        durable.Worker(auth="yes")  # type: ignore[arg-type]
    with pytest.raises(durable.InvalidArgument, match="is not a directory"):
        durable.Worker().static("/", "/no/such/dir")


async def test_error_bodies_are_json_for_every_status(tmp_path: Path) -> None:
    """A guard: every refusal above is a JSON object with exactly error and message."""
    async with live(make_worker(tmp_path), tmp_path / "data") as server:
        for path in ("/nowhere", "/ws", "/id/zz"):
            response = await server.client.get(path)
            assert json.loads(response.text).keys() == {"error", "message"}
