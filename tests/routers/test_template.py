"""TemplateRouter: names from validated, percent-encoded fields; injective; no object on bad keys."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable
from durable.limits import Limits
from durable.namespace import Namespace
from durable.routers import TemplateRouter
from durable.routers.template import Template, encode_value
from tests.conftest import host_of
from tests.routers.apps import ledger_worker

NS = Namespace("USERS", transport=None, limits=Limits())  # type: ignore[arg-type]
ORG_USER = "org-{org}-user-{user}"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("acme", "acme"),
        ("A_z.0~9", "A_z.0~9"),
        ("a-b", "a%2Db"),
        ("100%", "100%25"),
        ("a/b c", "a%2Fb%20c"),
        ("é", "%C3%A9"),
        ("😀", "%F0%9F%98%80"),
        ("{x}", "%7Bx%7D"),
    ],
)
def test_values_are_percent_encoded_except_unreserved(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded
    assert TemplateRouter(NS, "user-{user}").name_for(user=value) == f"user-{encoded}"


def test_a_dash_in_a_value_cannot_forge_another_tenants_name() -> None:
    router = TemplateRouter(NS, ORG_USER)
    forged = router.name_for(org="a-user-b", user="c")
    assert forged == "org-a%2Duser%2Db-user-c"
    assert forged != router.name_for(org="a", user="b-user-c")
    assert router.name_for(org="acme", user="bo") == "org-acme-user-bo"


values = st.text(min_size=1, max_size=12)


@given(st.tuples(values, values), st.tuples(values, values))
def test_names_are_injective(a: tuple[str, str], b: tuple[str, str]) -> None:
    router = TemplateRouter(NS, ORG_USER)
    same = router.name_for(org=a[0], user=a[1]) == router.name_for(org=b[0], user=b[1])
    assert same == (a == b)


@given(values)
def test_encoded_values_use_only_the_safe_alphabet(value: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_.~%]+", encode_value(value))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"org": "acme"}, "Router template 'org-{org}-user-{user}': missing field(s) user; its fields are: org, user."),
        ({}, "missing field(s) org, user"),
        ({"org": "a", "user": "b", "team": "c"}, "unexpected field(s) team; its fields are: org, user."),
        ({"org": "a", "team": "c"}, "missing field(s) user and unexpected field(s) team"),
        ({"org": 7, "user": "b"}, "field org must be a str, not int (7)."),
        ({"org": None, "user": "b"}, "field org must be a str, not NoneType (None)."),
        ({"org": "", "user": "b"}, "field org is empty."),
    ],
)  # fmt: skip
def test_bad_fields_raise_invalid_route_key_with_the_reason(
    fields: dict[str, Any], message: str
) -> None:
    router = TemplateRouter(NS, ORG_USER)
    with pytest.raises(durable.InvalidRouteKey, match=re.escape(message)):
        router.name_for(**fields)
    with pytest.raises(durable.InvalidRouteKey):
        router.get(**fields)
    assert router.statistics().rejected == 2


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{a}{b}", "put a separator such as '-' between fields"),
        ("{a}x{b}", "put a separator such as '-' between fields"),
        ("{a}%{b}", "put a separator such as '-' between fields"),
        ("{a}-{a}", "names a field twice"),
        ("user-{}", "fields are plain names like {user_id}, not {}"),
        ("user-{0}", "not {0}"),
        ("user-{u.name}", "not {u.name}"),
        ("user-{u!r}", "not {u!r}"),
        ("user-{u:>4}", "not {u:>4}"),
        ("user-{u", "is malformed"),
    ],
)
def test_ambiguous_or_fancy_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(durable.InvalidArgument, match=re.escape(message)):
        Template(template)


def test_literal_braces_and_separators_are_allowed() -> None:
    assert Template("{{v1}}/{a}:{b}").render({"a": "x", "b": "y"}) == "{v1}/x:y"
    assert Template("a{x}-b{y}").fields == ("x", "y")


def test_a_one_field_template_takes_its_value_positionally() -> None:
    router = TemplateRouter(NS, "user-{user}")
    assert router.name_for("bo") == router.name_for(user="bo") == "user-bo"
    assert router.routing_key("bo") == "bo"
    assert router.placement() == {"kind": "template", "binding": "USERS", "template": "user-{user}"}
    with pytest.raises(durable.InvalidRouteKey, match="pass one positional key"):
        router.name_for("bo", user="bo")


def test_a_multi_field_template_needs_fields_by_name() -> None:
    router = TemplateRouter(NS, ORG_USER)
    with pytest.raises(
        durable.InvalidRouteKey,
        match=re.escape("pass them by name, as name_for(org=..., user=...)"),
    ):
        router.name_for("acme")
    assert router.placement() is None
    assert router.shard_refs() is None


def test_repr_and_eq() -> None:
    router = TemplateRouter(NS, ORG_USER)
    assert repr(router) == "TemplateRouter(Namespace('USERS'), 'org-{org}-user-{user}')"
    assert router == TemplateRouter(NS, ORG_USER)
    assert router != TemplateRouter(NS, "user-{user}")


async def test_a_bad_key_creates_no_object(run: Any) -> None:
    async with run(ledger_worker()) as env:
        router = TemplateRouter(env.LEDGER, "user-{user}")
        for bad in ({"user": 1}, {"usr": "a"}, {"user": "a", "x": "b"}):
            with pytest.raises(durable.InvalidRouteKey):
                await router.get(**bad).read("a")
        with pytest.raises(durable.InvalidRouteKey):
            await router.call(5, "read")
        assert host_of(env).statistics().activations == 0
        assert await router.call("a-b", "write", 1) == 1
        assert await env.LEDGER.get_by_name("user-a%2Db").read("a-b") == 1
