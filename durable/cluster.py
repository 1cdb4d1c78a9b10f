"""Placement on Ray: what a durable cluster is made of, its configuration and its actors' names.

Objects map to a fixed number of partitions (``ObjectId.partition``); partitions map to host
slots (named Ray actors ``durable-host-<n>``, ``max_restarts=-1``, ``num_cpus=0``) by the
directory's rendezvous hashing and leases (``directory.py``); requests travel over the channel
(``channel.py``), never as one Ray call each. A binding with ``placement="dedicated"`` gets one
Ray actor per object instead (``dedicated.py``): the naive baseline, one Ray call per request.

Who does what: ``ray_host.py`` runs a slot and launches the cluster (``Cluster``),
``transport.py`` carries stubs' calls to the partition's owner, ``connection.py`` connects a
client to a running cluster, ``cli.py`` serves one (``durable dev``/``serve``).

Guarantees:
- ``ClusterConfig`` is everything a slot or a dedicated object's actor needs to start itself: a
  frozen, picklable value (Ray passes it to each actor, and again when it restarts one).
- ``config.cluster`` and ``config.runtime_dir`` depend on the data dir only, so a restarted
  slot finds the same channel socket folder; that folder's path is short enough for AF_UNIX.
- ``ClusterConfig.from_info(config.info())`` gives back an equal config (the directory
  publishes ``info`` to clients); keys it does not know are ignored.

Does not guarantee: one durable cluster per Ray cluster (actors have fixed names in the Ray
namespace ``durable``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from durable.directory import LEASE_TTL

RAY_NAMESPACE = "durable"  # every actor of durable: the directory, slots, dedicated objects
DIRECTORY = "durable-directory"  # the directory actor's name


@dataclass(frozen=True)
class ClusterConfig:
    """Everything a host slot needs to start itself (passed to its Ray actor)."""

    target: str
    data_dir: str
    sys_path: tuple[str, ...]
    partitions: int
    slots: int
    http_host: str = "127.0.0.1"
    http_port: int = 8787
    token: str = ""
    lease_ttl: float = LEASE_TTL
    placement: tuple[tuple[str, str], ...] = ()
    # The channel (CONTRACTS §9): "auto" dials a host on the same node over its Unix socket,
    # "tcp" forces TCP everywhere. TLS for TCP when both paths are set; the files must be
    # readable at these paths on every node (the cert is also the CA clients verify against).
    channel: str = "auto"
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def cluster(self) -> str:
        return hashlib.sha256(self.data_dir.encode()).hexdigest()[:12]

    @property
    def runtime_dir(self) -> Path:
        """Short, per data dir: AF_UNIX paths are limited to 107 bytes."""
        return Path(f"/tmp/durable-{os.getuid()}") / self.cluster

    def info(self) -> dict[str, Any]:
        return {**asdict(self), "cluster": self.cluster}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ClusterConfig:
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in info.items() if k in names}
        values["sys_path"] = tuple(values.get("sys_path", ()))
        values["placement"] = tuple(tuple(p) for p in values.get("placement", ()))
        return cls(**values)


def default_slots() -> int:
    """One host per CPU left after the gateway and Ray's daemons (1 on a 2-core machine)."""
    return max(1, (os.cpu_count() or 2) - 1)


def new_token() -> str:
    return secrets.token_hex(16)
