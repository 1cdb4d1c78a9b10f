"""What the gateway answers when a request fails: an exception mapped to its status and JSON body
(``error_response``), an auth hook's verdict (``check_auth``), a refused WebSocket upgrade
(``deny``). The status table is in ``durable/gateway.py``'s docstring.

Guarantees: every answer is JSON ``{"error": <name>, "message": <text>}`` (``RateLimited`` adds
``retry_after``), never a traceback; an unexpected exception is logged once with its traceback
and answered ``InternalError``; a client that left mid-body is logged at DEBUG only.

Does not guarantee: that the client reads the answer (it may be gone).
"""

from __future__ import annotations

import inspect
import json
import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from durable.errors import (
    DurableError,
    RateLimited,
    RequestTooLarge,
    RpcError,
    StorageFull,
    StorageLimitExceeded,
)
from durable.worker import AuthHook

log = logging.getLogger("durable.gateway")


_HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 413: "RequestTooLarge"}  # fmt: skip


def error_response(error: BaseException, path: str | None = None) -> Response:
    """The JSON error body and status for an exception raised while serving a request."""
    if isinstance(error, HTTPException):
        status = error.status_code
        message = str(error.detail)
        if status == 404 and path is not None:
            message = f"No route matches {path}."
        body = {"error": _HTTP_NAMES.get(status, "HTTPError"), "message": message}
        return JSONResponse(body, status, error.headers)
    if isinstance(error, json.JSONDecodeError):
        message = f"The request body is not valid JSON: {error}."
        return JSONResponse({"error": "MalformedJSON", "message": message}, 400)
    if isinstance(error, RateLimited):
        return _rate_limited(error)
    if isinstance(error, ClientDisconnect):  # expected, and an attacker's to repeat: no ERROR
        log.debug("the client left before its request body was read (%s)", path)
        message = "The client disconnected before the request body was read."
        return JSONResponse({"error": "ClientDisconnected", "message": message}, 499)
    if isinstance(error, DurableError):
        status = _status(error)
        headers = {"Retry-After": "1"} if status == 503 else None
        body = {"error": type(error).__name__, "message": str(error)}
        return JSONResponse(body, status_code=status, headers=headers)
    log.error("unhandled error in a route", exc_info=error)
    return JSONResponse({"error": "InternalError", "message": "see the server log"}, 500)


def _rate_limited(error: RateLimited) -> Response:
    # getattr: a RateLimited rebuilt from a foreign message may lack the attribute.
    wait = float(getattr(error, "retry_after", 1.0))
    body = {"error": "RateLimited", "message": str(error), "retry_after": wait}
    return JSONResponse(body, 429, {"Retry-After": str(max(1, math.ceil(wait)))})


def _status(error: DurableError) -> int:
    if error.overloaded or error.retryable:
        return 503
    if isinstance(error, RequestTooLarge):
        return 413
    if isinstance(error, RpcError):
        return 404
    if isinstance(error, StorageLimitExceeded | StorageFull):
        return 507
    return 400 if isinstance(error, TypeError | ValueError) else 500


async def exception_handler(conn: HTTPConnection, error: Exception) -> Response:
    return error_response(error, conn.url.path)


async def check_auth(hook: AuthHook | None, conn: HTTPConnection) -> Response | None:
    """None to let the request through, else the response that refuses it."""
    if hook is None:
        return None
    try:
        verdict = hook(conn)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except HTTPException as error:
        return error_response(error)
    except Exception as error:
        body = {"error": "Unauthorized", "message": str(error) or type(error).__name__}
        return JSONResponse(body, 401)
    if verdict is None or verdict is True:
        return None
    if isinstance(verdict, Response):
        return verdict
    if verdict is False:
        return JSONResponse({"error": "Unauthorized", "message": "refused by the auth hook"}, 401)
    log.error("auth hook %r returned %r; expected None, False or a Response", hook, verdict)
    return JSONResponse({"error": "InternalError", "message": "see the server log"}, 500)


async def deny(websocket: WebSocket, response: Response) -> None:
    """Refuse an upgrade with an HTTP response (or close 1008 if the server cannot send one)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)
