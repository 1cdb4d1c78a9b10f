from __future__ import annotations

import copy
import hashlib
import hmac
import pickle
import re

import pytest

from durable.errors import DurableError, InvalidArgument, InvalidObjectId
from durable.ids import ObjectId, id_from_name, id_from_string, new_unique_id

MALFORMED = "Invalid Durable Object ID: must be 64 hex digits"
FOREIGN = "Durable Object ID is not valid for this namespace."

# Computed once from CONTRACTS §2 and frozen here: if the algorithm changes, ids already in
# storage would point nowhere, so these must never be edited to make a test pass.
VECTORS = [
    ("COUNTER", "a", "620fd1e14288ce2753114a8e1da79de981eb196db1eae11ba58a20f69d8f488c"),
    ("COUNTER", "", "298f673b0147ae1e39b18c0f7f7c3e41f6c0a3f9e5efb333bb01071a62a3f15a"),
    ("ROOMS", "lobby", "5a03011b320435a5525db48a036b3ecb9aa3862ecec126ea83cfb71a06144c50"),
    ("COUNTER", "😀 name", "939be92fef12aceab007a5e0c79b8f15114fcbb9d3e64ba4c765bb8260084d8b"),
]


def reference_id(namespace: str, name: str) -> str:
    """CONTRACTS §2, written out independently of durable.ids."""
    k = hashlib.sha256(b"durable/ns/" + namespace.encode()).digest()
    body = hmac.new(k, b"name:" + name.encode(), hashlib.sha256).digest()[:24]
    return (body + hmac.new(k, body, hashlib.sha256).digest()[:8]).hex()


def flip_digit(text: str, index: int) -> str:
    digit = "0" if text[index] != "0" else "1"
    return text[:index] + digit + text[index + 1 :]


@pytest.mark.parametrize(("namespace", "name", "expected"), VECTORS)
def test_id_from_name_matches_frozen_vectors(namespace: str, name: str, expected: str) -> None:
    assert str(id_from_name(namespace, name)) == expected


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("COUNTER", "a"), ("X", ""), ("ns", "x" * 10_000), ("ROOMS", "naïve\x00名前")],
)
def test_id_from_name_follows_the_contract_algorithm(namespace: str, name: str) -> None:
    assert str(id_from_name(namespace, name)) == reference_id(namespace, name)


def test_id_from_name_is_deterministic_and_64_lowercase_hex() -> None:
    first, second = id_from_name("COUNTER", "a"), id_from_name("COUNTER", "a")
    assert first == second
    assert hash(first) == hash(second)
    assert re.fullmatch(r"[0-9a-f]{64}", str(first))
    assert first.raw == bytes.fromhex(str(first))


def test_same_name_differs_per_namespace() -> None:
    a, b = id_from_name("COUNTER", "a"), id_from_name("COUNTER2", "a")
    assert str(a) != str(b)
    assert a != b


def test_ids_with_equal_bytes_in_two_namespaces_are_not_equal() -> None:
    raw = id_from_name("A", "x").raw
    assert ObjectId(raw, "A") != ObjectId(raw, "B")
    assert ObjectId(raw, "A") == ObjectId(raw, "A", "x")


def test_name_is_set_only_for_name_derived_ids() -> None:
    named = id_from_name("COUNTER", "a")
    assert named.name == "a"
    assert named.namespace == "COUNTER"
    assert new_unique_id("COUNTER").name is None
    parsed = id_from_string("COUNTER", str(named))
    assert parsed.name is None  # as Cloudflare: a string cannot be turned back into a name
    assert parsed == named


def test_empty_and_long_names_are_allowed() -> None:
    assert id_from_name("COUNTER", "").name == ""
    assert id_from_name("COUNTER", "n" * 10_000).name == "n" * 10_000


@pytest.mark.parametrize("name", [1, None, b"a", ["a"]])
def test_non_str_name_raises_invalid_argument(name: object) -> None:
    with pytest.raises(InvalidArgument, match="must be a str, got"):
        id_from_name("COUNTER", name)  # type: ignore[arg-type]


def test_name_with_a_lone_surrogate_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="lone surrogate"):
        id_from_name("COUNTER", "\ud800")


def test_id_from_string_round_trips() -> None:
    original = id_from_name("COUNTER", "a")
    parsed = id_from_string("COUNTER", str(original))
    assert parsed == original
    assert str(parsed) == str(original)
    assert parsed.namespace == "COUNTER"


def test_id_from_string_accepts_upper_case_and_normalises_it() -> None:
    text = str(id_from_name("COUNTER", "a"))
    parsed = id_from_string("COUNTER", text.upper())
    assert str(parsed) == text
    assert parsed == id_from_name("COUNTER", "a")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "zz" + "0" * 62,
        "620fd1e14288ce2753114a8e1da79de981eb196db1eae11ba58a20f69d8f488 ",
        "62 0fd1e14288ce2753114a8e1da79de981eb196db1eae11ba58a20f69d8f488",
        "０" * 64,  # full-width digits are not hex
        "not an id",
    ],
)
def test_malformed_strings_are_rejected(text: str) -> None:
    with pytest.raises(InvalidObjectId, match=f"^{re.escape(MALFORMED)}$"):
        id_from_string("COUNTER", text)


@pytest.mark.parametrize("value", [None, 5, b"0" * 64])
def test_non_str_is_malformed(value: object) -> None:
    with pytest.raises(InvalidObjectId, match=f"^{re.escape(MALFORMED)}$"):
        id_from_string("COUNTER", value)  # type: ignore[arg-type]


def test_sixty_three_digits_of_a_real_id_are_malformed() -> None:
    with pytest.raises(InvalidObjectId, match=f"^{re.escape(MALFORMED)}$"):
        id_from_string("COUNTER", str(id_from_name("COUNTER", "a"))[:63])


@pytest.mark.parametrize("index", [0, 23, 47, 48, 63])
def test_one_changed_digit_is_foreign(index: int) -> None:
    text = flip_digit(str(id_from_name("COUNTER", "a")), index)
    with pytest.raises(InvalidObjectId, match=f"^{re.escape(FOREIGN)}$"):
        id_from_string("COUNTER", text)


def test_all_zeros_is_foreign() -> None:
    with pytest.raises(InvalidObjectId, match=f"^{re.escape(FOREIGN)}$"):
        id_from_string("COUNTER", "0" * 64)


def test_id_of_another_namespace_is_foreign() -> None:
    for other in (id_from_name("ROOMS", "a"), new_unique_id("ROOMS")):
        with pytest.raises(InvalidObjectId, match=f"^{re.escape(FOREIGN)}$"):
            id_from_string("COUNTER", str(other))


def test_invalid_object_id_is_a_type_and_value_error() -> None:
    for error_type in (TypeError, ValueError, DurableError, InvalidObjectId):
        with pytest.raises(error_type):
            id_from_string("COUNTER", "0" * 64)
        with pytest.raises(error_type):
            id_from_string("COUNTER", "x")


def test_unique_ids_differ_and_validate() -> None:
    ids = {new_unique_id("COUNTER") for _ in range(1000)}
    assert len(ids) == 1000
    for unique in list(ids)[:50]:
        assert re.fullmatch(r"[0-9a-f]{64}", str(unique))
        assert id_from_string("COUNTER", str(unique)) == unique


def test_partition_is_in_range_and_reads_the_first_eight_bytes() -> None:
    for name in map(str, range(200)):
        object_id = id_from_name("COUNTER", name)
        for partitions in (1, 7, 64, 4096):
            partition = object_id.partition(partitions)
            assert 0 <= partition < partitions
            assert partition == int(str(object_id)[:16], 16) % partitions


def test_partition_is_stable() -> None:
    # Frozen like VECTORS: a change would move every object to another partition.
    assert id_from_name("COUNTER", "a").partition(64) == 39
    assert id_from_name("COUNTER", "a").partition(1000) == 279


def test_partition_rejects_fewer_than_one_partition() -> None:
    with pytest.raises(InvalidArgument, match="at least 1"):
        id_from_name("COUNTER", "a").partition(0)


def test_partitions_spread_names_evenly() -> None:
    counts = [0] * 8
    for name in range(8000):
        counts[id_from_name("COUNTER", str(name)).partition(8)] += 1
    assert min(counts) > 850 and max(counts) < 1150


def test_object_id_is_immutable() -> None:
    object_id = id_from_name("COUNTER", "a")
    with pytest.raises(AttributeError):
        object_id.name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del object_id.raw
    assert not hasattr(object_id, "__dict__")


def test_object_id_survives_pickle_and_copy() -> None:
    object_id = id_from_name("COUNTER", "a")
    for clone in (pickle.loads(pickle.dumps(object_id)), copy.copy(object_id)):
        assert clone == object_id
        assert clone.name == "a"
        assert str(clone) == str(object_id)


def test_repr_shows_hex_namespace_and_name() -> None:
    named = id_from_name("COUNTER", "a")
    assert repr(named) == f"ObjectId('{named}', namespace='COUNTER', name='a')"
    unique = new_unique_id("COUNTER")
    assert repr(unique) == f"ObjectId('{unique}', namespace='COUNTER')"


def test_object_id_is_not_equal_to_its_string() -> None:
    object_id = id_from_name("COUNTER", "a")
    assert object_id != str(object_id)
    assert {object_id: 1}[id_from_string("COUNTER", str(object_id))] == 1


def test_non_str_namespace_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="namespace must be a str"):
        id_from_name(["COUNTER"], "a")  # type: ignore[arg-type]


def test_long_names_are_not_cached_so_memory_returns_after_eviction() -> None:
    from durable.ids import _named_id

    _named_id.cache_clear()
    before = _named_id.cache_info().currsize
    long_ids = [id_from_name("NS", f"{i}" + "x" * 60_000) for i in range(10)]
    assert _named_id.cache_info().currsize == before  # 10 x 60 kB names pinned by nothing
    assert long_ids[0] == id_from_name("NS", "0" + "x" * 60_000)  # still the same id
    id_from_name("NS", "short-name-cached")
    assert _named_id.cache_info().currsize == before + 1
