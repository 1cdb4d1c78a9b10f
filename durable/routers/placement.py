"""Placements: a router's key → object mapping as plain data, so a shard can store and apply it.

``router.placement()`` returns one of these dicts (msgpack-able, stored by
``ShardObject.route_configure``); ``owner_of(placement, key)`` evaluates it anywhere::

    {"kind": "hash", "binding": "BOARD", "prefix": "shard-", "shards": 16}
    {"kind": "template", "binding": "USERS", "template": "user-{user}"}      # one field
    {"kind": "feature", "binding": "APP", "names": {"todos": "todo-shard"}}

Guarantees: evaluation is deterministic across processes and versions (it uses only the
routers' own pure functions: jump hash over sha256, template encoding).

On failure: an unknown kind or a malformed placement raises ``InvalidArgument``; a key the
placement cannot route raises ``InvalidRouteKey``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from durable.errors import InvalidArgument, InvalidRouteKey
from durable.routers.base import ShardRef
from durable.routers.hash import shard_index
from durable.routers.template import Template


def owner_of(placement: Mapping[str, Any], key: str) -> ShardRef:
    """``owner_of({"kind": "hash", "binding": "B", "prefix": "s", "shards": 1}, "k")`` →
    ``ShardRef("B", "s0")``."""
    try:
        kind = placement["kind"]
        binding = str(placement["binding"])
        if kind == "hash":
            index = shard_index(key, int(placement["shards"]))
            return ShardRef(binding, f"{placement['prefix']}{index}")
        if kind == "template":
            return ShardRef(binding, Template(str(placement["template"])).render_key(key))
        if kind == "feature":
            names: Mapping[str, str] = placement["names"]
            if key not in names:
                raise InvalidRouteKey(f"Unknown feature {key!r}; allowed: {sorted(names)}.")
            return ShardRef(binding, names[key])
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, InvalidRouteKey):
            raise
        raise InvalidArgument(f"Malformed placement {dict(placement)!r}: {error!r}") from None
    raise InvalidArgument(f"Unknown placement kind {kind!r} (hash, template or feature).")
