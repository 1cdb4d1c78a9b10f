"""Worker: bindings are validated when the Worker is built."""

from __future__ import annotations

import re

import pytest

import durable


class Thing(durable.DurableObject):
    pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objects": {"bad name": Thing}}, "Binding name 'bad name' must be a public Python identifier."),
        ({"objects": {"T": object}}, "objects['T'] must be a DurableObject subclass."),
        ({"objects": {"T": Thing}, "vars": {"T": 1}}, "A binding name is used twice"),
        ({"objects": {"T": Thing}, "limits": {"U": durable.Limits()}}, "limits names unknown bindings: ['U']."),
        ({"objects": {"T": Thing}, "limits": {"T": {}}}, "limits['T'] must be a durable.Limits."),
        ({"objects": {"T": Thing}, "placement": {"T": "far"}}, "placement['T'] must be 'packed' or 'dedicated'."),
        ({"objects": {"T": Thing}, "idle_timeout": 0}, "idle_timeout must be a positive number"),
    ],
)  # fmt: skip
def test_bad_configuration_is_refused_with_its_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
        durable.Worker(**kwargs)


def test_routes_and_crons_register_in_order() -> None:
    worker = durable.Worker(objects={"T": Thing})

    @worker.route("/a", methods=["get", "post"])
    async def a(request: object, env: object) -> None: ...

    @worker.websocket_route("/ws")
    async def ws(socket: object, env: object) -> None: ...

    @worker.cron("*/5 * * * *")
    async def tick(event: object, env: object) -> None: ...

    assert [(r.path, r.methods, r.websocket) for r in worker.routes] == [
        ("/a", ("GET", "POST"), False),
        ("/ws", None, True),
    ]
    assert worker.crons[0].schedule == "*/5 * * * *" and worker.crons[0].handler is tick


def test_cron_schedule_needs_five_fields() -> None:
    with pytest.raises(durable.InvalidArgument, match="must have 5 fields"):
        durable.Worker().cron("* * *")


def test_limits_reject_unknown_and_nonpositive_fields() -> None:
    with pytest.raises(ValueError):
        durable.Limits(max_key_bytes=0)
    with pytest.raises(ValueError):
        durable.Limits(max_keys=3)  # type: ignore[call-arg]
