"""TinyBase's WebSocket synchronizer at ``/ws/{room}``: a relay plus a server-held store per room.

Speaks the legacy (one socket per room) protocol of ``createWsSynchronizer`` in tinybase 10.0.1
(``../shared/reference/tinybase-protocol.md`` §2-3). A frame is ``<to>\\n[requestId, type, body]``;
``to`` is ``""`` (everyone else in the room), ``"S"`` (the server's store) or a peer's id. The
``Room`` object of the room relays ``<from>\\n[...]`` to the addressees, never back to the
sender and never to another room, and takes part itself as client ``S`` with a
``mergeable.MergeableStore``: it answers content hashes and table/row/cell/value diffs, merges
every ContentDiff, and on a ContentHashes that differs from its own it pulls from the sender
(GetTableDiff → GetRowDiff → GetCellDiff, GetValueDiff), so a client's offline edits reach it.
A client's id is its socket's id (unique, never ``S``, without a newline).

Guarantees:
- Every frame is validated as TinyBase's own server and clients do (``isProtocolMessageValid``,
  then ``validateMergeable`` for content) before anything is relayed or merged: an invalid one
  closes its sender with 1007 and changes nothing. Frames over ``Worker(max_message_bytes)``
  are closed with 1009 by the gateway before the room sees them.
- The room's content is stored after every change, before any later frame of the room leaves
  (the output gate): one KV entry per node, as TinyBase's Durable Object persister lays it out
  (``t"<table>","<row>","<cell>"`` → ``[cell, hlc, hash]``, containers ``[0, hlc, hash]``), so
  a room rebuilt after eviction or a restart serves the same content and hashes.
- A merge whose nodes do not fit the storage limits (a key over 2 KiB, a cell over 128 KiB, the
  object's storage limit) is written not at all (one transaction): the store is reloaded from
  storage and the sender closed with 1009.
- Only protocol frames leave, as text.

Does not guarantee: fragmented payloads (TinyBase's opt-in ``fragmentSize``) are refused (1007),
as are object/array cells not in their encoded string form and strings with lone surrogates
(they cannot be stored as UTF-8); a pull abandoned by the client (no answer within 1 s, as
TinyBase's ``requestTimeoutSeconds``) is dropped until its next ContentHashes; the multiplexed
mode (subprotocol ``tinybase``) is not spoken.

On failure: 1007 + a reason naming the problem for invalid input, 1009 for storage limits; a
client that answers a pull with content that cannot be merged is closed with 1007.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from durable import (
    DurableError,
    DurableObject,
    HibernatableWebSocket,
    ObjectState,
    Request,
    Response,
    WebSocket,
)
from durable.storage import Transaction
from examples.todos.mergeable import (
    B64,
    DELETED,
    InvalidMergeable,
    MergeableStore,
    Stamp,
    is_cell,
    is_hlc,
    js_json,
    merge_tables_stamps,
)

SERVER = "S"
REQUEST_TIMEOUT = 1.0  # seconds: TinyBase's requestTimeoutSeconds
INVALID_DATA = 1007
TOO_BIG = 1009
BATCH_KEYS = 128  # KV keys per put call
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class Message(IntEnum):
    """TinyBase's ``Message`` enum: the second item of every frame."""

    RESPONSE = 0
    GET_CONTENT_HASHES = 1
    CONTENT_HASHES = 2
    CONTENT_DIFF = 3
    GET_TABLE_DIFF = 4
    GET_ROW_DIFF = 5
    GET_CELL_DIFF = 6
    GET_VALUE_DIFF = 7


class InvalidFrame(ValueError):
    """A frame TinyBase's ``decodeProtocolMessage`` would refuse (the client closes on 1007)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame; ``rest`` is the text after the prefix, relayed unchanged."""

    to: str
    request_id: str | None
    message: Message
    body: Any
    rest: str


# -- decoding and validating (isProtocolMessageValid / isBodyValid) ---------------------------
def _json_constant(name: str) -> Any:
    raise InvalidFrame(f"{name} is not JSON")


def _json_int(text: str) -> int | float:
    """JS numbers are doubles: an integer past 2**53 is read as JS reads it."""
    number = int(text)
    return number if abs(number) <= 2**53 else float(text)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_integer(x: Any) -> bool:
    return _is_number(x) and float(x).is_integer()


def _is_hash(x: Any) -> bool:
    return _is_integer(x) and 0 <= x <= 0xFFFFFFFF


def _is_hash_tree(tree: Any, depth: int) -> bool:
    if not isinstance(tree, dict):
        return False
    if depth:
        return all(_is_hash_tree(child, depth - 1) for child in tree.values())
    return all(_is_hash(child) for child in tree.values())


def _is_stamp(stamp: Any, depth: int) -> bool:
    """A stamp as sent (no hash): ``[thing]`` or ``[thing, hlc]``, ``depth`` levels of objects."""
    if not isinstance(stamp, list) or len(stamp) not in (1, 2):
        return False
    if len(stamp) == 2 and not (isinstance(stamp[1], str) and is_hlc(stamp[1], math.inf)):
        return False
    if depth == 0:
        return is_cell(stamp[0])
    return isinstance(stamp[0], dict) and all(_is_stamp(c, depth - 1) for c in stamp[0].values())


def _is_content_hashes(body: Any) -> bool:
    return isinstance(body, list) and len(body) == 2 and all(_is_hash(h) for h in body)


def _is_changes(body: Any) -> bool:
    if not isinstance(body, list) or len(body) not in (2, 3):
        return False
    if len(body) == 3 and not (_is_number(body[2]) and body[2] == 1):
        return False
    return _is_stamp(body[0], 3) and _is_stamp(body[1], 1)


def _is_diff_answer(body: Any) -> bool:
    """``[tablesStamp, hashTree]``: the answer to GetTableDiff or GetRowDiff."""
    return (
        isinstance(body, list)
        and len(body) == 2
        and _is_stamp(body[0], 3)
        and (_is_hash_tree(body[1], 0) or _is_hash_tree(body[1], 1))
    )


def _is_response(body: Any) -> bool:
    return (
        _is_content_hashes(body)
        or _is_stamp(body, 3)
        or _is_stamp(body, 1)
        or _is_diff_answer(body)
    )


BODY_CHECKS: dict[Message, Callable[[Any], bool]] = {
    Message.RESPONSE: _is_response,
    Message.GET_CONTENT_HASHES: lambda body: body == "",
    Message.CONTENT_HASHES: _is_content_hashes,
    Message.CONTENT_DIFF: _is_changes,
    Message.GET_TABLE_DIFF: lambda body: _is_hash_tree(body, 0),
    Message.GET_ROW_DIFF: lambda body: _is_hash_tree(body, 1),
    Message.GET_CELL_DIFF: lambda body: _is_hash_tree(body, 2),
    Message.GET_VALUE_DIFF: lambda body: _is_hash_tree(body, 0),
}

ANSWER_CHECKS: dict[Message, Callable[[Any], bool]] = {  # what the room's own requests expect
    Message.GET_TABLE_DIFF: _is_diff_answer,
    Message.GET_ROW_DIFF: _is_diff_answer,
    Message.GET_CELL_DIFF: lambda body: _is_stamp(body, 3),
    Message.GET_VALUE_DIFF: lambda body: _is_stamp(body, 1),
}


def decode_frame(data: str | bytes) -> Frame:
    """``"<to>\\n[requestId, type, body]"`` → ``Frame``, or ``InvalidFrame`` saying why.

    >>> decode_frame('S\\n["abc",1,""]').message
    <Message.GET_CONTENT_HASHES: 1>
    """
    try:
        text = data if isinstance(data, str) else data.decode()
    except UnicodeDecodeError as error:
        raise InvalidFrame("a binary frame that is not UTF-8") from error
    to, newline, rest = text.partition("\n")
    if not newline:
        raise InvalidFrame("no recipient line (expected '<to>\\n[requestId, type, body]')")
    try:
        item = json.loads(rest, parse_constant=_json_constant, parse_int=_json_int)
    except ValueError as error:
        raise InvalidFrame(f"not a JSON message: {error}") from error
    if not (isinstance(item, list) and len(item) == 3):
        raise InvalidFrame("a message is [requestId, type, body]")
    request_id, message, body = item
    if not (request_id is None or (isinstance(request_id, str) and request_id != DELETED)):
        raise InvalidFrame("requestId must be a string or null")
    if not _is_integer(message) or int(message) not in BODY_CHECKS:
        raise InvalidFrame(f"unknown message type {message!r}")
    kind = Message(int(message))
    if not BODY_CHECKS[kind](body):
        raise InvalidFrame(f"invalid body for {kind.name}")
    if _ESCAPED_SURROGATE.search(rest) and not _is_utf8(item):
        raise InvalidFrame("a string with a lone surrogate")
    return Frame(to, request_id, kind, body, rest)


def _is_utf8(item: Any) -> bool:
    try:
        json.dumps(item, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_frame(sender: str, request_id: str | None, message: Message, body: Any) -> str:
    """A frame as receivers expect it: the prefix is the *sender's* id."""
    return sender + "\n" + json.dumps([request_id, int(message), body], separators=(",", ":"))


# -- storage layout (TinyBase's Durable Object persister) -------------------------------------
def storage_key(path: tuple[str, ...]) -> str:
    """``("t", "todos", "t1")`` → ``t"todos","t1"``: type char + JSON ids without brackets."""
    return path[0] + ",".join(js_json(part) for part in path[1:])


def storage_path(key: str) -> tuple[str, ...]:
    return (key[0], *json.loads("[" + key[1:] + "]"))


# -- the room ------------------------------------------------------------------------------
class PullFailed(Exception):
    """A client's answer during a pull had the wrong shape."""


class Room(DurableObject):
    """One synchronizer room: its clients' sockets and the server-held MergeableStore."""

    def __init__(self, ctx: ObjectState, env: Any) -> None:
        super().__init__(ctx, env)
        self.store = MergeableStore(str(ctx.id), lambda: int(ctx.now() * 1000))
        self.pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        ctx.block_concurrency_while(self._load)

    async def _load(self) -> None:
        entries = await self.ctx.storage.list()
        self.store.load_nodes({storage_path(key): stamp for key, stamp in entries.items()})
        self.store.touched.clear()

    async def fetch(self, request: Request) -> Response:
        return self.ctx.accept_websocket(request)

    # -- RPC for tests and tools ---------------------------------------------------------------
    async def tables(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The room's ``getTables()``: what a client that syncs now would see."""
        return self.store.visible_tables()

    async def content_hashes(self) -> list[int]:
        return self.store.content_hashes()

    # -- frames ------------------------------------------------------------------------------
    async def websocket_message(self, ws: HibernatableWebSocket, message: str | bytes) -> None:
        try:
            frame = decode_frame(message)
            if frame.message is Message.CONTENT_DIFF and frame.to in ("", SERVER):
                await self._merge(frame.body)  # refused input is relayed to nobody
        except (InvalidFrame, InvalidMergeable) as error:
            ws.close(INVALID_DATA, _reason(error))
            return
        except DurableError as error:
            ws.close(TOO_BIG, _reason(error))
            return
        self._relay(ws, frame)
        if frame.to in ("", SERVER):
            self._answer(ws, frame)

    def _relay(self, sender: HibernatableWebSocket, frame: Frame) -> None:
        if frame.to == SERVER:
            return
        out = sender.id + "\n" + frame.rest
        for ws in self.ctx.get_websockets():
            if ws != sender and (frame.to == "" or ws.id == frame.to):
                ws.send(out)

    def _answer(self, ws: HibernatableWebSocket, frame: Frame) -> None:
        """Act as client ``S``: reply to questions, pull when the sender's hashes differ."""
        store, body = self.store, frame.body
        if frame.message is Message.RESPONSE:
            self._resolve(ws.id, frame.request_id, body)
        elif frame.message is Message.CONTENT_HASHES and body != store.content_hashes():
            self.ctx.wait_until(self._pull(ws.id, body, frame.request_id))
        answers: dict[Message, Callable[[], Any]] = {
            Message.GET_CONTENT_HASHES: store.content_hashes,
            Message.GET_TABLE_DIFF: lambda: store.table_diff(body),
            Message.GET_ROW_DIFF: lambda: store.row_diff(body),
            Message.GET_CELL_DIFF: lambda: store.cell_diff(body),
            Message.GET_VALUE_DIFF: lambda: store.value_diff(body),
        }
        answer = answers.get(frame.message)
        if answer is not None:
            ws.send(encode_frame(SERVER, frame.request_id, Message.RESPONSE, answer()))

    def _resolve(self, sid: str, request_id: str | None, body: Any) -> None:
        pending = self.pending.get(request_id or "")
        if pending is not None and pending[0] == sid and not pending[1].done():
            pending[1].set_result(body)

    # -- pulling a client's content (getChangesFromOtherStore) ---------------------------------
    async def _pull(self, sid: str, hashes: list[int], transaction_id: str | None) -> None:
        tid = transaction_id or _unique_id(11)
        try:
            changes = await self._gather(sid, hashes, tid)
            await self._merge(changes)
        except (TimeoutError, PullFailed):
            return  # the client's next ContentHashes starts again
        except (InvalidMergeable, DurableError) as error:
            for ws in self.ctx.get_websockets():
                if ws.id == sid:
                    code = INVALID_DATA if isinstance(error, InvalidMergeable) else TOO_BIG
                    ws.close(code, _reason(error))

    async def _gather(self, sid: str, hashes: list[int], tid: str) -> list[Any]:
        """The changes the client ``sid`` has and this store lacks, asked table by table."""
        store = self.store
        tables_hash, values_hash = store.content_hashes()
        tables: Stamp = [{}]
        if tables_hash != hashes[0]:
            tables, differing = await self._ask(
                sid, tid, Message.GET_TABLE_DIFF, store.table_hashes()
            )
            if differing:
                new_rows, differing_rows = await self._ask(
                    sid, tid, Message.GET_ROW_DIFF, store.row_hashes(differing)
                )
                merge_tables_stamps(tables, new_rows)
                if differing_rows:
                    cells = await self._ask(
                        sid, tid, Message.GET_CELL_DIFF, store.cell_hashes(differing_rows)
                    )
                    merge_tables_stamps(tables, cells)
        values: Stamp = [{}]
        if values_hash != hashes[1]:
            values = await self._ask(sid, tid, Message.GET_VALUE_DIFF, store.value_hashes())
        return [tables, values, 1]

    async def _ask(self, sid: str, tid: str, message: Message, body: Any) -> Any:
        """One request to client ``sid``; its answer, checked for the shape ``message`` expects."""
        target = next((ws for ws in self.ctx.get_websockets() if ws.id == sid), None)
        if target is None:
            raise PullFailed(f"client {sid} left")
        request_id = f"{tid}.{_unique_id(4)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = (sid, future)
        try:
            target.send(encode_frame(SERVER, request_id, message, body))
            answer = await asyncio.wait_for(future, REQUEST_TIMEOUT)
        finally:
            del self.pending[request_id]
        if not ANSWER_CHECKS[message](answer):
            raise PullFailed(f"answer to {message.name} has the wrong shape")
        return answer

    # -- merging and storing ---------------------------------------------------------------------
    async def _merge(self, changes: Any) -> None:
        """Merge ``changes`` and store every node they touched, all or nothing."""
        self.store.apply_changes(changes)
        entries = {storage_key(path): self.store.node(path) for path in self.store.touched}
        self.store.touched.clear()

        async def write(txn: Transaction) -> None:
            keys = list(entries)
            for start in range(0, len(keys), BATCH_KEYS):
                await txn.put({key: entries[key] for key in keys[start : start + BATCH_KEYS]})

        try:
            await self.ctx.storage.transaction(write)
        except DurableError:
            await self._load()  # storage is as it was: so must the store be
            raise


def _unique_id(length: int) -> str:
    """TinyBase's ``getUniqueId``: random characters of the HLC alphabet."""
    return "".join(secrets.choice(B64) for _ in range(length))


def _reason(error: Exception) -> str:
    """A close reason: at most 123 UTF-8 bytes."""
    return str(error).encode()[:123].decode(errors="ignore")


async def room_socket(websocket: WebSocket, env: Any) -> Response:
    """``worker.websocket_route("/ws/{room}")``: hand the upgrade to the room's object."""
    response: Response = await env.ROOM.get_by_name(websocket.path_params["room"]).fetch(websocket)
    return response
