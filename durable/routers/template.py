"""``TemplateRouter``: one object per user, org, team or feature, named from a template.

``TemplateRouter(env.USERS, "org-{org}-user-{user}")`` gives ``name_for(org="acme", user="bo")``
→ ``"org-acme-user-bo"``. Field values are percent-encoded except ``[A-Za-z0-9_.~]``, so a value
cannot contain the template's separators::

    >>> Template("org-{org}-user-{user}").render({"org": "a-user-b", "user": "c"})
    'org-a%2Duser%2Db-user-c'

Guarantees:
- Names are injective: two different sets of values never give the same name. Encoded values use
  only ``[A-Za-z0-9_.~%]``, and the template is refused unless every pair of neighbouring fields
  is separated by a literal with a character outside that set (``-`` ``/`` ``:`` …), so a tenant
  cannot forge another's name (``org="a-user-b"`` above).
- A missing, extra, non-``str`` or empty field raises ``InvalidRouteKey`` naming it, before any
  stub exists: no object is created for a bad key.
- A one-field template also takes its value positionally (``name_for("bo")``) and supports
  ``call(key, ...)``, migrations (``MigratingRouter``) and stored placements.

Does not guarantee: the set of objects is open, so there is nothing to ``scatter`` over.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from durable.clock import Clock, SystemClock
from durable.errors import InvalidArgument, InvalidRouteKey
from durable.namespace import Namespace, Stub
from durable.routers.base import str_key
from durable.routers.keyed import KeyRouterBase

SAFE = frozenset(string.ascii_letters + string.digits + "_.~")
_ENCODED = SAFE | {"%"}


def encode_value(value: str) -> str:
    """Percent-encode every UTF-8 byte outside ``[A-Za-z0-9_.~]``: ``"a-b%"`` → ``"a%2Db%25"``."""
    return "".join(c if c in SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


class Template:
    """A parsed, validated name template."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise InvalidArgument(f"A router template must be a str, not {type(text).__name__}.")
        self.text = text
        self.parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as error:
            raise InvalidArgument(f"Router template {text!r} is malformed: {error}.") from None
        for literal, field, spec, conversion in parsed:
            if field is not None and (spec or conversion or not field.isidentifier()):
                raise InvalidArgument(
                    f"Router template {text!r}: fields are plain names like {{user_id}}, "
                    f"not {{{field}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}."
                )
            self.parts.append((literal, field))
        self.fields = tuple(f for _, f in self.parts if f is not None)
        if len(set(self.fields)) != len(self.fields):
            raise InvalidArgument(f"Router template {text!r} names a field twice.")
        self._check_separators()

    def _check_separators(self) -> None:
        seen_field = False
        for literal, field in self.parts:
            separated = any(c not in _ENCODED for c in literal)
            if seen_field and field is not None and not separated:
                raise InvalidArgument(
                    f"Router template {self.text!r}: put a separator such as '-' between fields "
                    "(a character values are encoded away), or names would be ambiguous."
                )
            if field is not None:
                seen_field = True
            elif separated:
                seen_field = False

    def render(self, values: Mapping[str, Any]) -> str:
        """The name for ``values`` (every field, nothing else, each a non-empty str)."""
        missing = [f for f in self.fields if f not in values]
        extra = sorted(set(values) - set(self.fields))
        if missing or extra:
            what = []
            if missing:
                what.append(f"missing field(s) {', '.join(missing)}")
            if extra:
                what.append(f"unexpected field(s) {', '.join(extra)}")
            raise InvalidRouteKey(
                f"Router template {self.text!r}: {' and '.join(what)}; "
                f"its fields are: {', '.join(self.fields) or '(none)'}."
            )
        out = []
        for literal, field in self.parts:
            out.append(literal)
            if field is not None:
                out.append(encode_value(self._value(field, values[field])))
        return "".join(out)

    def render_key(self, key: object) -> str:
        """The name for a one-field template's value."""
        if len(self.fields) != 1:
            raise InvalidRouteKey(
                f"Router template {self.text!r} has {len(self.fields)} fields; pass them by name, "
                f"as name_for({', '.join(f + '=...' for f in self.fields)})."
            )
        return self.render({self.fields[0]: key})

    def _value(self, field: str, value: object) -> str:
        if not isinstance(value, str):
            raise InvalidRouteKey(
                f"Router template {self.text!r}: field {field} must be a str, "
                f"not {type(value).__name__} ({value!r})."
            )
        if not value:
            raise InvalidRouteKey(f"Router template {self.text!r}: field {field} is empty.")
        return value


@dataclass(frozen=True, slots=True)
class TemplateRouterStatistics:
    template: str
    lookups: int  # names built
    rejected: int  # keys refused with InvalidRouteKey


class TemplateRouter(KeyRouterBase):
    """``name_for(**fields)`` → the template filled with encoded values (see module docstring)."""

    def __init__(self, namespace: Namespace, template: str, *, clock: Clock | None = None) -> None:
        self.namespace = namespace
        self.template = Template(template)
        self.clock = clock or SystemClock()
        self._lookups = self._rejected = 0

    def __repr__(self) -> str:
        return f"TemplateRouter({self.namespace!r}, {self.template.text!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TemplateRouter)
            and self.namespace.binding == other.namespace.binding
            and self.template.text == other.template.text
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.template.fields

    def name_for(self, *key: Any, **fields: Any) -> str:
        try:
            if key and (len(key) > 1 or fields):
                raise InvalidRouteKey(
                    f"{self!r}: pass one positional key (one-field templates) or fields by name."
                )
            name = self.template.render_key(key[0]) if key else self.template.render(fields)
        except InvalidRouteKey:
            self._rejected += 1
            raise
        self._lookups += 1
        return name

    def get(self, *key: Any, **fields: Any) -> Stub:
        return self.namespace.get_by_name(self.name_for(*key, **fields))

    def routing_key(self, key: Any, /) -> str:
        self.template.render_key(key)  # one field, a valid value
        return str_key(key, "TemplateRouter")

    def placement(self) -> dict[str, Any] | None:
        if len(self.fields) != 1:
            return None
        return {"kind": "template", "binding": self.namespace.binding, "template": self.text}

    @property
    def text(self) -> str:
        return self.template.text

    def statistics(self) -> TemplateRouterStatistics:
        return TemplateRouterStatistics(self.template.text, self._lookups, self._rejected)
