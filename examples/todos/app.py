"""The TinyBase todo backend: ``durable serve examples.todos.app:worker --port PORT``.

Routes (``[tables, values]`` JSON as TinyBase's Remote Persister speaks it, see
``../shared/reference/tinybase-protocol.md`` §1):

    GET|HEAD /api/{user}/load            200 + ETag, 304 on If-None-Match, 404 if nothing saved
    POST     /api/{user}/save            200 {"etag": ...}; 400 InvalidContent, 429, 507
    POST     /api/{user}/warm            pre-warm the user's object on login (seed: cold start)
    GET|HEAD /api/{org}/users/{user}/load, POST .../save    SHARDING=org (403 NotAMember)
    PUT|DELETE /api/{org}/members/{user} SHARDING=org: membership (admin)
    GET      /api/{user}/activity        SHARDING=feature: the activity object's log
    GET      /api/search?q=, /api/analytics   SHARDING=hybrid: SQL over env.DB
    POST     /admin/migrate, GET /admin/migration, POST /admin/rollout {"percent": p}
    POST     /admin/backup, POST /admin/restore[/{key}]
    /ws/{room}                           the WebSocket synchronizer (``sync.py``)
    /                                    the todo page (``web/``)

Configuration is ``sharding.Settings`` from environment variables (``SHARDING``,
``MIGRATION``, ``ROLLOUT``, …); ``build_worker(settings)`` builds a worker for other settings.
Admin routes need ``Authorization: Bearer $ADMIN_TOKEN`` when ``ADMIN_TOKEN`` is set.

Every error is JSON ``{"error": Name, "message": ...}`` with the gateway's statuses (400 bad
input, 403 not a member, 404 nothing saved, 429 + Retry-After, 507 storage limit).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from json import JSONDecodeError
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from durable import DurableError, Limits, Worker
from durable.responses import error_response
from examples.todos import backups
from examples.todos.metrics import TodoMetrics
from examples.todos.persister import NotAMember, Persister, Who, persister_for
from examples.todos.sharding import Migration, Settings, Sharding
from examples.todos.store import Directory, Org, TodoStore
from examples.todos.sync import Room, room_socket

WEB = Path(__file__).parent / "web"
NO_CACHE = {"Cache-Control": "no-cache", "Access-Control-Expose-Headers": "ETag"}
Endpoint = Callable[[Request, Any], Awaitable[Response]]


def _who(request: Request) -> Who:
    params = request.path_params
    return Who(params["user"], params.get("org"))


def build_worker(settings: Settings) -> Worker:
    """The worker for ``settings``: bindings, and the routes of its sharding."""
    metrics = TodoMetrics()
    worker = Worker(
        objects={"STORE": TodoStore, "ORGS": Org, "USERS": Directory, "ROOM": Room},
        limits={"STORE": Limits(max_storage_bytes=settings.storage_limit_bytes)},
        databases={"DB": settings.database_url},
        vars=settings.vars(),
    )
    worker.metrics(metrics.registry)
    routes = Routes(worker, settings, metrics)
    routes.persister_routes()
    routes.admin_routes()
    routes.mode_routes()
    worker.websocket_route("/ws/{room}")(room_socket)
    if WEB.is_dir():
        worker.static("/", WEB)

    @worker.cron(settings.backup_cron)
    async def back_up_every_list(event: Any, env: Any) -> None:
        run = await backups.back_up(persister_for(env, settings), event.scheduled_time / 1000)
        metrics.user_count(run.lists)  # also right after a restart, before any new user

    return worker


class Routes:
    """Registers the routes of one worker; each endpoint is metered (``TodoMetrics``)."""

    def __init__(self, worker: Worker, settings: Settings, metrics: TodoMetrics) -> None:
        self.worker = worker
        self.settings = settings
        self.metrics = metrics

    def add(
        self,
        path: str,
        methods: list[str],
        op: str,
        *,
        admin: bool = False,
    ) -> Callable[[Endpoint], Endpoint]:
        """Register ``fn(request, persister)`` at ``path``, timed and counted as ``op``."""
        settings, metrics = self.settings, self.metrics

        def register(fn: Endpoint) -> Endpoint:
            async def endpoint(request: Request, env: Any) -> Response:
                start = time.perf_counter()
                try:
                    response = await fn(request, persister_for(env, settings))
                except Exception as error:
                    response = _error(error)
                metrics.observe(op, response.status_code, time.perf_counter() - start)
                return response

            auth = self._admin_only if admin else None
            self.worker.route(path, methods, auth=auth)(endpoint)
            return fn

        return register

    def _admin_only(self, request: Request) -> Response | None:
        token = self.settings.admin_token
        if token and request.headers.get("authorization") != f"Bearer {token}":
            body = {"error": "Unauthorized", "message": "admin routes need the ADMIN_TOKEN."}
            return JSONResponse(body, 401)
        return None

    def persister_routes(self) -> None:
        prefix = (
            "/api/{org}/users/{user}" if self.settings.sharding is Sharding.ORG else "/api/{user}"
        )
        self.add(prefix + "/load", ["GET"], "load")(self.load)
        self.add(prefix + "/save", ["POST"], "save")(self.save)
        self.add(prefix + "/warm", ["POST"], "warm")(self.warm)

    async def load(self, request: Request, persister: Persister) -> Response:
        head = request.method == "HEAD"
        tag = request.headers.get("if-none-match")
        found = await persister.load(_who(request), tag, body=not head)
        if found is None:
            body = {"error": "NoContent", "message": f"{_who(request).key} has saved nothing."}
            return JSONResponse(body, 404)
        etag, raw = found
        headers = {**NO_CACHE, "ETag": etag}
        if etag == tag:
            return Response(status_code=304, headers=headers)
        return Response(raw or b"", media_type="application/json", headers=headers)

    async def save(self, request: Request, persister: Persister) -> Response:
        saved = await persister.save(_who(request), await request.body())
        self.metrics.stored(saved.objects)
        if saved.users is not None:
            self.metrics.user_count(saved.users)
        return JSONResponse({"etag": saved.etag}, headers={**NO_CACHE, "ETag": saved.etag})

    async def warm(self, request: Request, persister: Persister) -> Response:
        return JSONResponse({"saved": await persister.warm(_who(request))})

    def admin_routes(self) -> None:
        add = self.add
        add("/admin/migrate", ["POST"], "migrate", admin=True)(self.migrate)
        add("/admin/migration", ["GET"], "migration", admin=True)(self.migration)
        add("/admin/rollout", ["POST"], "rollout", admin=True)(self.rollout)
        add("/admin/backup", ["POST"], "backup", admin=True)(self.backup)
        add("/admin/restore", ["POST"], "restore", admin=True)(self.restore)
        add("/admin/restore/{key:path}", ["POST"], "restore", admin=True)(self.restore)

    async def migrate(self, request: Request, persister: Persister) -> Response:
        """Start ``migrate()`` in the background (big_bang, lazy: every user; flag: the rollout)."""
        router = _migrating(persister)
        if persister.migration is None or persister.migration.done():
            persister.migration = asyncio.ensure_future(router.migrate())
        return JSONResponse({"phase": router.phase.value}, 202)

    async def migration(self, request: Request, persister: Persister) -> Response:
        stats = _migrating(persister).statistics()
        sweep, task = stats.sweep, persister.migration
        ended = task is not None and task.done() and not task.cancelled()
        error = task.exception() if task is not None and ended else None
        return JSONResponse(
            {
                "strategy": stats.strategy.value,
                "phase": stats.phase.value,
                "percent": stats.percent,
                "first_touch_moves": stats.first_touch_moves,
                "moved": sweep.moved if sweep else 0,
                "remaining": sweep.remaining if sweep else None,
                "error": None if error is None else repr(error),
            }
        )

    async def rollout(self, request: Request, persister: Persister) -> Response:
        router = _migrating(persister)
        body = await request.json()
        await router.set_percent(body.get("percent") if isinstance(body, dict) else body)
        return JSONResponse({"percent": router.percent})

    async def backup(self, request: Request, persister: Persister) -> Response:
        run = await backups.back_up(persister, time.time())
        return JSONResponse({"lists": run.lists, "written": run.written})

    async def restore(self, request: Request, persister: Persister) -> Response:
        restored = await backups.restore(persister, request.path_params.get("key"))
        return JSONResponse({"restored": restored})

    def mode_routes(self) -> None:
        sharding = self.settings.sharding
        if sharding is Sharding.ORG:
            self.add("/api/{org}/members/{user}", ["PUT", "DELETE"], "members", admin=True)(
                self.members
            )
        elif sharding is Sharding.FEATURE:
            self.add("/api/{user}/activity", ["GET"], "activity")(self.activity)
        elif sharding is Sharding.HYBRID:
            self.add("/api/search", ["GET"], "search")(self.search)
            self.add("/api/analytics", ["GET"], "analytics")(self.analytics)

    async def members(self, request: Request, persister: Persister) -> Response:
        org, user = request.path_params["org"], request.path_params["user"]
        stub = persister.env.ORGS.get_by_name(f"org-{org}")
        if request.method == "PUT":
            return JSONResponse({"members": await stub.add_member(user)})
        return JSONResponse({"removed": await stub.remove_member(user)})

    async def activity(self, request: Request, persister: Persister) -> Response:
        limit = _int_param(request, "limit", 20, 1, 100)
        return JSONResponse({"events": await persister.activity(_who(request), limit)})

    async def search(self, request: Request, persister: Persister) -> Response:
        """Users whose todos contain ``q`` (case-insensitive), with the matching texts."""
        query = request.query_params.get("q", "").strip()
        if not query:
            body = {"error": "BadRequest", "message": "search needs a non-empty ?q=."}
            return JSONResponse(body, 400)
        pattern = (
            "%" + query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        rows = await persister.index(
            "SELECT key, search FROM todo_index WHERE lower(search) LIKE ? ESCAPE '\\' "
            "ORDER BY key LIMIT 100",
            pattern,
        )
        hits = [
            {
                "user": row["key"],
                "todos": [t for t in row["search"].split("\n") if query.lower() in t.lower()],
            }
            for row in rows
        ]
        return JSONResponse({"results": hits})

    async def analytics(self, request: Request, persister: Persister) -> Response:
        rows = await persister.index(
            "SELECT count(*) AS users, coalesce(sum(todos), 0) AS todos, "
            "coalesce(sum(done), 0) AS done, coalesce(sum(bytes), 0) AS bytes FROM todo_index"
        )
        return JSONResponse(rows[0])


def _migrating(persister: Persister) -> Any:
    from durable.routers import MigratingRouter

    if not isinstance(persister.router, MigratingRouter):
        raise NoMigration(persister.settings.migration)
    return persister.router


class NoMigration(Exception):
    """An admin migration route while ``MIGRATION=none`` (HTTP 409)."""

    def __init__(self, migration: Migration) -> None:
        super().__init__(f"MIGRATION={migration.value}: set big_bang, lazy or flag to migrate.")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    try:
        value = default if text is None else int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"?{name}= must be an integer from {low} to {high}, not {text!r}.")
    return value


def _error(error: Exception) -> Response:
    """The JSON error for a route's exception, with the app's own statuses."""
    if isinstance(error, NotAMember):
        return JSONResponse({"error": "NotAMember", "message": str(error)}, 403)
    if isinstance(error, NoMigration):
        return JSONResponse({"error": "NoMigration", "message": str(error)}, 409)
    if isinstance(error, ValueError) and not isinstance(error, DurableError | JSONDecodeError):
        return JSONResponse({"error": "BadRequest", "message": str(error)}, 400)
    return error_response(error)


worker = build_worker(Settings.from_environ(os.environ))
