"""``placement="dedicated"``: one Ray actor per object, one Ray call per request.

The naive baseline the packed hosts are measured against (a Ray actor per object costs ~94 MB
and ~320 ms to start here, and a Ray call ~1 ms), kept for objects that really want a process of
their own. Each object gets a named actor ``durable-obj-<ns>-<id>`` (created on first use, found
by name afterwards) running a private Host over ``<data_dir>/dedicated/<ns>/<id>/`` with one
partition, so it has its own file and lock, granted like a partition: the actor name is the lease.

Guarantees: the same object semantics as packed objects (it is the same Host); remote errors keep
their class and message; storage survives actor restarts (``max_restarts=-1``).

Does not guarantee: micro-batching: every call is its own Ray call (that is the point of the
baseline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.requests import Request

from durable import messages
from durable.channel import error_frame, fetch_head, rebuild_error, request_from, response_from
from durable.clock import SystemClock
from durable.cluster import DIRECTORY, RAY_NAMESPACE, ClusterConfig
from durable.env import start_host
from durable.host import Host
from durable.ids import ObjectId
from durable.namespace import FetchResponse
from durable.transport import ClusterTransport
from durable.worker import Worker, load_worker


class Dedicated:
    """Routes the dedicated bindings' calls to their per-object actors."""

    def __init__(self, config: ClusterConfig, bindings: set[str]) -> None:
        self._config = config
        self._bindings = bindings
        self._actors: dict[ObjectId, Any] = {}

    def handles(self, oid: ObjectId) -> bool:
        return oid.namespace in self._bindings

    def _actor(self, oid: ObjectId) -> Any:
        actor = self._actors.get(oid)
        if actor is None:
            name = f"durable-obj-{oid.namespace}-{oid}"
            actor = (
                object_actor_class()
                .options(name=name, namespace=RAY_NAMESPACE, get_if_exists=True)
                .remote(self._config, oid.namespace, oid.raw, oid.name)
            )
            self._actors[oid] = actor
        return actor

    async def invoke(
        self,
        oid: ObjectId,
        method: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        limit: int,
    ) -> Any:
        return await messages.call_encoded(self.call, oid, method, args, kwargs, limit)

    async def call(self, oid: ObjectId, method: str, payload: bytes) -> bytes:
        return bytes(_unwrap(await self._actor(oid).call.remote(method, payload))[2])

    async def fetch(self, oid: ObjectId, request: Request) -> FetchResponse:
        body = await request.body()
        frame = _unwrap(await self._actor(oid).fetch.remote(fetch_head(request), body))
        return response_from(frame)


def dedicated_for(worker: Worker, config: ClusterConfig) -> Dedicated | None:
    """The per-object actors of the worker's ``placement="dedicated"`` bindings, if any."""
    bindings = {b for b, where in worker.placement.items() if where == "dedicated"}
    return Dedicated(config, bindings) if bindings else None


def _unwrap(frame: list[Any]) -> list[Any]:
    if frame[0] == "error":
        raise rebuild_error(*frame[1:])
    return frame


def object_actor_class() -> Any:
    import ray

    remote: Any = ray.remote  # Ray's typed overloads do not cover every actor option

    @remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=1000)
    class ObjectActor:
        """One object in its own actor and file."""

        def __init__(self, config: ClusterConfig, ns: str, raw: bytes, name: str | None) -> None:
            self.oid = ObjectId(raw, ns, name)
            self.config = config
            self.started = asyncio.ensure_future(self._start())

        async def _start(self) -> Host:
            cfg = self.config
            worker = load_worker(cfg.target, cfg.sys_path)
            root = Path(cfg.data_dir) / "dedicated" / self.oid.namespace / str(self.oid)
            directory = ray.get_actor(DIRECTORY, namespace=RAY_NAMESPACE)

            def transport(host: Host) -> ClusterTransport:
                return ClusterTransport(
                    directory, cfg.token, cfg.partitions, channel=cfg.channel, tls_cert=cfg.tls_cert
                )

            host, _ = await start_host(
                worker, root, SystemClock(), partitions=1, owned=[0], transport=transport
            )
            return host

        async def call(self, method: str, payload: bytes) -> list[Any]:
            host = await asyncio.shield(self.started)
            try:
                return ["reply", 0, await host.call(self.oid, method, payload)]
            except Exception as error:
                return ["error", *error_frame(0, error)[2:]]

        async def fetch(self, head: list[Any], body: bytes) -> list[Any]:
            host = await asyncio.shield(self.started)
            try:
                response = await host.fetch(self.oid, request_from(head, body))
            except Exception as error:
                return ["error", *error_frame(0, error)[2:]]
            headers = [[k, v] for k, v in response.raw_headers]
            return ["response", 0, response.status_code, headers, bytes(response.body), False]

    return ObjectActor
