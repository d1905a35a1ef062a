"""DAG-JSON and DAG-CBOR: round trips, and agreement with the reference Python codecs."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import dag_cbor
import dag_json
import msgspec
import pytest
from dag_cbor.ipld import IPLDKind
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID

from sync import (
    DecodeError,
    EntryChunk,
    Link,
    SchemaError,
    SyncError,
    load_entry_chunk,
)
from sync.model import dagcbor, dagjson
from sync.model.fastchunk import decode_dagcbor_chunk
from tests.builders import multihash
from tests.strategies import links


def _to_ref(node: object) -> IPLDKind:
    """Our data model -> the reference libraries' (multiformats CIDs)."""
    if isinstance(node, Link):
        return CID.decode(str(node))
    if isinstance(node, dict):
        return {k: _to_ref(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_ref(v) for v in node]
    assert node is None or isinstance(node, bool | int | float | str | bytes), node
    return node


def _not_reserved(node: dict[str, object]) -> bool:
    return not (len(node) == 1 and "/" in node)


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(),
    st.binary(max_size=40),
    links(),
)
nodes = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4).filter(_not_reserved)
    ),
    max_leaves=12,
)


@given(nodes)
def test_dagjson_round_trip_and_matches_reference_encoder(node: object) -> None:
    raw = dagjson.encode(node)
    assert dagjson.decode(raw) == node
    assert dag_json.encode(_to_ref(node)) == raw


@given(nodes)
def test_dagcbor_round_trip_and_matches_reference_encoder(node: object) -> None:
    raw = dagcbor.encode(node)
    assert dagcbor.decode(raw) == node
    assert dag_cbor.encode(_to_ref(node)) == raw


def test_dagjson_accepts_padded_and_unpadded_base64() -> None:
    assert dagjson.decode(b'{"/":{"bytes":"YQ=="}}') == b"a"
    assert dagjson.decode(b'{"/":{"bytes":"YQ"}}') == b"a"
    assert dagjson.encode(b"a") == b'{"/":{"bytes":"YQ"}}'


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"/":"notacid"}',
        b'{"/":{"bytes":"!!"}}',
        b'{"/":{"bytes":1}}',
        b'{"/":5}',
        b"[1e999]",
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 900 + b"1" + b"}" * 900,
        b'"\x80"',  # bad UTF-8: msgspec raised UnicodeDecodeError (found by the fuzzer)
        b'{"\xff":1}',
    ],
)
def test_dagjson_rejects_malformed_input_with_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        dagjson.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xa1", b"\x01\x02", b"\xd8\x2a\x43\x00\x01\x02", b"\x9f\xff", b"\xa2aa\x01aa\x02"],
)
def test_dagcbor_rejects_malformed_input_with_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        dagcbor.decode(raw)


def test_encoders_refuse_values_outside_the_data_model() -> None:
    with pytest.raises(TypeError):
        dagjson.encode({1: 2})
    with pytest.raises(TypeError):
        dagjson.encode(object())
    with pytest.raises(ValueError):
        dagjson.encode(float("nan"))
    with pytest.raises(ValueError, match="reserves"):
        dagjson.encode({"/": None})


# -- bounds: depth and items, before anything is allocated ----------------------------------------


def _head(major: int, n: int) -> bytes:
    """A minimal CBOR header."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def _nested(depth: int, leaf: object = 1) -> object:
    node: object = leaf
    for i in range(depth):
        node = [node] if i % 2 else {"k": node}
    return node


@pytest.mark.parametrize("codec", ["cbor", "json"])
def test_depth_up_to_the_limit_decodes_and_one_more_is_a_decode_error(codec: str) -> None:
    assert dagcbor.MAX_DEPTH == dagjson.MAX_DEPTH == 256
    module = dagcbor if codec == "cbor" else dagjson
    kinds: tuple[object, ...] = (1, [], {}, b"x", Link.make(0x71, b"leaf"))
    for leaf in kinds:
        at_limit = _nested(dagjson.MAX_DEPTH - (leaf in ([], {})), leaf)
        assert module.decode(module.encode(at_limit)) == at_limit
        over = module.encode([at_limit])
        with pytest.raises(DecodeError, match="nested deeper than 256"):
            module.decode(over)


def test_dagcbor_items_up_to_the_limit_decode_and_one_more_is_a_decode_error() -> None:
    n = dagcbor.MAX_ITEMS - 1  # the root and n elements
    for item in (b"\x00", b"\x80", b"\x41a"):
        assert len(dagcbor.decode(_head(4, n) + item * n)) == n
        with pytest.raises(DecodeError, match="more than 262144 items"):
            dagcbor.decode(_head(4, n + 1) + item * (n + 1))
    # A map's entries count a key and a value each.
    keys = sorted((f"{i:05x}" for i in range(n // 2)), key=lambda k: (len(k), k))
    raw = _head(5, len(keys)) + b"".join(_head(3, 5) + k.encode() + b"\x00" for k in keys)
    assert len(dagcbor.decode(raw)) == n // 2
    raw = _head(4, 2) + raw + b"\x00"
    with pytest.raises(DecodeError, match="items"):
        dagcbor.decode(raw)


def test_dagjson_items_up_to_the_limit_decode_and_one_more_is_a_decode_error() -> None:
    n = dagjson.MAX_ITEMS - 1
    assert len(dagjson.decode(b"[" + b",".join([b"0"] * n) + b"]")) == n
    assert len(dagjson.decode(b"[" + b",".join([b"[]"] * n) + b"]")) == n
    with pytest.raises(DecodeError, match="more than 262144 items"):
        dagjson.decode(b"[" + b",".join([b"0"] * (n + 1)) + b"]")
    # Keys count: n // 2 entries of a map are n items.
    body = b",".join(b'"%d":0' % i for i in range(n // 2))
    assert len(dagjson.decode(b"{" + body + b"}")) == n // 2
    with pytest.raises(DecodeError, match="items"):
        dagjson.decode(b"[0,{" + body + b"}]")
    # Structural characters inside strings are not items.
    commas = b'["' + b",[{:" * 300_000 + b'"]'
    assert dagjson.decode(commas) == [",[{:" * 300_000]


def _declaring_remaining(size: int) -> bytes:
    """Nested arrays, each declaring as many items as bytes remain after its header."""
    parts: list[bytes] = []
    length = 0
    while length < size - 10:
        parts.append(_head(4, length))
        length += len(parts[-1])
    return b"".join(reversed(parts))


_SIZE = 4 << 20
_N = dagcbor.MAX_ITEMS // 3
HOSTILE: dict[str, tuple[Any, Callable[[], bytes]]] = {
    "cbor-nested-1-item-arrays": (dagcbor, lambda: b"\x81" * (_SIZE - 1) + b"\x80"),
    "cbor-nested-declared-remaining": (dagcbor, lambda: _declaring_remaining(_SIZE)),
    "cbor-4M-empty-arrays": (dagcbor, lambda: _head(4, _SIZE - 5) + b"\x80" * (_SIZE - 5)),
    "cbor-4M-nested-maps": (dagcbor, lambda: b"\xa1\x60" * (_SIZE // 2 - 1) + b"\xa0"),
    "cbor-max-items-of-1-entry-maps": (dagcbor, lambda: _head(4, _N) + b"\xa1\x60\x80" * _N),
    "json-nested": (dagjson, lambda: b"[" * (_SIZE // 2) + b"]" * (_SIZE // 2)),
    "json-4M-empty-arrays": (dagjson, lambda: b"[" + b"[]," * (_SIZE // 3 - 1) + b"[]]"),
    "json-max-items-of-1-entry-maps": (
        dagjson,
        lambda: b"[" + b",".join([b'{"":[]}'] * (_N - 1)) + b"]",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_block_costs_bounded_memory(name: str) -> None:
    """Peak Python memory while decoding stays < 64 MiB, accepted (at the item limit) or not.

    Before the bounds, ``cbor-nested-1-item-arrays`` peaked at ~500 MiB, ``cbor-4M-empty-arrays``
    at ~290 MiB, and ``cbor-nested-declared-remaining`` reserved terabytes (60 KB of it: 4.5 GB).
    """
    module, build = HOSTILE[name]
    raw = build()
    assert len(raw) <= _SIZE
    tracemalloc.start()
    try:
        with contextlib.suppress(DecodeError):
            module.decode(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{name}: {peak / 2**20:.0f} MiB"


def _depth(node: object) -> int:
    if isinstance(node, list):
        return 1 + max(map(_depth, node), default=0)
    if isinstance(node, dict):
        return 1 + max(map(_depth, node.values()), default=0)
    return 0


def _items(node: object) -> int:
    """Values and map keys."""
    if isinstance(node, list):
        return 1 + sum(map(_items, node))
    if isinstance(node, dict):
        return 1 + len(node) + sum(map(_items, node.values()))
    return 1


# Lists long enough for the scan's strided skip, with runs of same-length strings among others.
runs = st.lists(
    st.one_of(
        st.binary(min_size=3, max_size=3),
        st.text(min_size=2, max_size=2),
        st.binary(max_size=30),
        st.integers(0, 23),
        st.just([]),
        st.just({}),
        links(),
    ),
    min_size=16,
    max_size=40,
)
uniform = st.integers(0, 300).flatmap(
    lambda k: st.lists(st.binary(min_size=k, max_size=k), min_size=16, max_size=40)
)
bounded_nodes = st.recursive(
    leaves | runs | uniform,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4).filter(_not_reserved)
    ),
    max_leaves=12,
)


offsets = st.sampled_from([-1, 0, 1])


@given(bounded_nodes, offsets, offsets)
def test_dagcbor_bounds_are_exact(node: object, depth_off: int, items_off: int) -> None:
    """With limits just under, at or over a block's own, it is refused exactly when over."""
    raw = dagcbor.encode(node)
    max_depth, max_items = max(0, _depth(node) + depth_off), max(1, _items(node) + items_off)
    over = _depth(node) > max_depth or _items(node) > max_items
    with (
        patch.object(dagcbor, "MAX_DEPTH", max_depth),
        patch.object(dagcbor, "MAX_ITEMS", max_items),
    ):
        if over:
            with pytest.raises(DecodeError, match=r"deeper|items"):
                dagcbor.decode(raw)
        else:
            assert dagcbor.decode(raw) == node


def _json_items(value: object) -> int:
    """Values and keys as the JSON writes them (a link or bytes is a map of a string)."""
    if isinstance(value, list):
        return 1 + sum(map(_json_items, value))
    if isinstance(value, dict):
        return 1 + len(value) + sum(map(_json_items, value.values()))
    return 1


@given(bounded_nodes, offsets, offsets)
def test_dagjson_bounds_are_exact(node: object, depth_off: int, items_off: int) -> None:
    raw = dagjson.encode(node)
    items = _json_items(msgspec.json.decode(raw))
    max_depth, max_items = max(0, _depth(node) + depth_off), max(1, items + items_off)
    over = _depth(node) > max_depth or items > max_items
    with (
        patch.object(dagjson, "MAX_DEPTH", max_depth),
        patch.object(dagjson, "MAX_ITEMS", max_items),
    ):
        if over:
            with pytest.raises(DecodeError, match=r"deeper|items"):
                dagjson.decode(raw)
        else:
            assert dagjson.decode(raw) == node


def test_a_uniform_run_is_skipped_only_when_every_header_matches() -> None:
    """The strided skip must not take a run whose later items differ (a nested item hidden at
    a stride boundary would otherwise escape the depth count)."""
    nest = b"\x81" * 300 + b"\x80"
    run = _head(4, 20) + (b"\x43abc" * 19) + nest
    with pytest.raises(DecodeError, match="deeper"):
        dagcbor.check_bounds(run)
    # Same first header bytes, another length byte at the 20th item: not uniform.
    run = _head(4, 20) + (b"\x58\x22" + b"m" * 34) * 19 + b"\x58\x21" + b"m" * 33
    assert len(dagcbor.decode(run)) == 20


# -- the DAG-CBOR chunk fast path -----------------------------------------------------------------


def _generic_chunk(raw: bytes) -> EntryChunk | None:
    try:
        return EntryChunk.from_node(dagcbor.decode(raw))
    except SyncError:
        return None


same_length_entries = st.integers(0, 70).flatmap(
    lambda k: st.lists(st.binary(min_size=k, max_size=k), min_size=1, max_size=40)
)


@given(
    st.one_of(same_length_entries, st.lists(st.binary(max_size=40), max_size=20)),
    st.none() | links(),
    st.none() | st.tuples(st.integers(0, 2000), st.integers(0, 255)),
)
def test_dagcbor_chunk_fast_path_accepts_exactly_what_the_generic_path_does(
    entries: list[bytes], nxt: Link | None, flip: tuple[int, int] | None
) -> None:
    raw = dagcbor.encode(EntryChunk(tuple(entries), nxt).to_node())
    if flip is not None:  # one byte changed: the fast path takes it only if it is still a chunk
        at, value = flip[0] % len(raw), flip[1]
        raw = raw[:at] + bytes([value]) + raw[at + 1 :]
    fast = decode_dagcbor_chunk(raw)
    generic = _generic_chunk(raw)
    if fast is not None:
        assert generic == EntryChunk(fast[0], fast[1])
    elif flip is None and len(set(map(len, entries))) == 1:
        raise AssertionError("a chunk of same-length entries must take the fast path")


def test_a_full_chunk_takes_the_dagcbor_fast_path() -> None:
    entries = tuple(multihash(i) for i in range(16_384))
    raw = dagcbor.encode(EntryChunk(entries, Link.make(0x71, b"next")).to_node())
    fast = decode_dagcbor_chunk(raw)
    assert fast is not None and fast[0] == entries and fast[1] == Link.make(0x71, b"next")
    # Mixed lengths, a null Next, an extra key: the generic path, and its precise error.
    mixed = dagcbor.encode({"Entries": [multihash(1), b"\x00\x01a"] * 10})
    assert decode_dagcbor_chunk(mixed) is None and _generic_chunk(mixed) is not None
    for bad in ({"Entries": [b"x"] * 20, "Next": None}, {"Entries": [b"x"] * 20, "Other": 1}):
        raw = dagcbor.encode(bad)
        assert decode_dagcbor_chunk(raw) is None
        with pytest.raises(SchemaError):
            load_entry_chunk(Link.make(0x71, raw), raw)
