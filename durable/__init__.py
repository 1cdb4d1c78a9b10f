"""durable: Durable Objects for Python, embedded or on Ray.

See ``../shared/DESIGN.md`` for the concepts; every name here is part of the public API.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from durable.connection import connect
from durable.errors import (
    BackupCorrupt,
    BatchTooLarge,
    ConnectionLost,
    CpuTimeExceeded,
    DataCloneError,
    DataDirInUse,
    DurableError,
    InvalidArgument,
    InvalidObjectId,
    InvalidRouteKey,
    KeyTooLarge,
    MessageTooLarge,
    ObjectReset,
    Overloaded,
    PortInUse,
    RateLimited,
    RemoteError,
    RequestTooLarge,
    RpcError,
    SqlError,
    StorageFull,
    StorageLimitExceeded,
    TransactionError,
    Unavailable,
    ValueTooLarge,
    WebSocketError,
)
from durable.frontdoor import GatewayLimits
from durable.ids import ObjectId
from durable.limits import Limits
from durable.object import AlarmInfo, DurableObject, ObjectState
from durable.sockets import HibernatableWebSocket
from durable.values import register_type
from durable.worker import Worker

__all__ = [
    "AlarmInfo",
    "BackupCorrupt",
    "BatchTooLarge",
    "ConnectionLost",
    "CpuTimeExceeded",
    "DataCloneError",
    "DataDirInUse",
    "DurableError",
    "DurableObject",
    "GatewayLimits",
    "HibernatableWebSocket",
    "InvalidArgument",
    "InvalidObjectId",
    "InvalidRouteKey",
    "JSONResponse",
    "KeyTooLarge",
    "Limits",
    "MessageTooLarge",
    "ObjectId",
    "ObjectReset",
    "ObjectState",
    "Overloaded",
    "PortInUse",
    "RateLimited",
    "RemoteError",
    "Request",
    "RequestTooLarge",
    "Response",
    "RpcError",
    "SqlError",
    "StorageFull",
    "StorageLimitExceeded",
    "TransactionError",
    "Unavailable",
    "ValueTooLarge",
    "WebSocket",
    "WebSocketError",
    "Worker",
    "connect",
    "register_type",
]
