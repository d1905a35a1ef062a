"""The schema types: shape checks, limits, and round trips through both codecs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import (
    DAG_CBOR,
    DAG_JSON,
    NO_ENTRIES,
    Advertisement,
    EntryChunk,
    FieldTooLarge,
    HashMismatch,
    Link,
    ModelError,
    SchemaError,
    UnknownCodec,
    encode_block,
    load_advertisement,
    load_entry_chunk,
    verify_advertisement,
)
from sync.model import dagjson
from sync.model.cid import RAW
from sync.model.fastchunk import decode_dagjson_chunk, typed_dagjson_chunk, uniform_dagjson_chunk
from tests.builders import key, link, make_ad, make_chunk, multihash
from tests.strategies import advertisements, entry_chunks, links

codecs = st.sampled_from([DAG_JSON, DAG_CBOR])


def test_no_entries_cid_is_go_libipnis() -> None:
    assert NO_ENTRIES.codec == RAW
    assert NO_ENTRIES.multihash.digest == hashlib.sha256(b"").digest()[:16]
    assert str(NO_ENTRIES) == "bafkreehdwdcefgh4dqkjv67uzcmw7oje"


@given(advertisements(), codecs)
def test_ads_round_trip_and_verify_in_both_codecs(ad: Advertisement, codec: int) -> None:
    cid, raw = encode_block(ad.to_node(), codec)
    assert cid.codec == codec
    again = load_advertisement(cid, raw)
    assert again == ad
    assert verify_advertisement(again).signer == ad.provider_id()


@given(entry_chunks(), codecs)
def test_entry_chunks_round_trip_in_both_codecs(chunk: EntryChunk, codec: int) -> None:
    cid, raw = encode_block(chunk.to_node(), codec)
    again = load_entry_chunk(cid, raw)
    assert again == chunk
    again.validate()


def test_optional_fields_are_omitted_not_null() -> None:
    ad = make_ad(key(0))
    node = ad.to_node()
    assert "PreviousID" not in node and "ExtendedProvider" not in node
    node["PreviousID"] = None
    with pytest.raises(SchemaError, match="PreviousID must be a link, got null"):
        Advertisement.from_node(node)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.pop("Provider"), "lacks required field"),
        (lambda n: n.update(Extra=1), "unknown field"),
        (lambda n: n.update(IsRm=1), "IsRm must be a bool"),
        (lambda n: n.update(Addresses=["/ok", 5]), r"Addresses\[1\] must be a string"),
        (lambda n: n.update(Entries="bafy"), "Entries must be a link"),
        (lambda n: n.update(ExtendedProvider={"Providers": [], "Override": "no"}), "Override"),
    ],
)
def test_schema_violations_name_the_field(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    node = make_ad(key(0)).to_node()
    change(node)
    with pytest.raises(SchemaError, match=message):
        Advertisement.from_node(node)
    with pytest.raises(SchemaError):
        Advertisement.from_node([node])


def test_limits() -> None:
    ad = make_ad(key(0))
    replace(ad, context_id=b"x" * 64, metadata=b"m" * 1024).validate()
    with pytest.raises(FieldTooLarge, match="ContextID"):
        replace(ad, context_id=b"x" * 65).validate()
    with pytest.raises(FieldTooLarge, match="Metadata"):
        replace(ad, metadata=b"m" * 1025).validate()


def test_entries_without_metadata_is_malformed() -> None:
    ad = make_ad(key(0), entries=link(5), metadata=b"")
    with pytest.raises(SchemaError, match="no metadata"):
        ad.validate()
    make_ad(key(0), entries=link(5), metadata=b"", is_rm=True).validate()
    make_ad(key(0), entries=NO_ENTRIES, metadata=b"").validate()


def test_load_checks_hash_before_decoding_and_refuses_other_codecs() -> None:
    cid, raw = encode_block(make_ad(key(0)).to_node())
    with pytest.raises(HashMismatch):
        load_advertisement(cid, raw.replace(b"IsRm", b"IsRM"))
    other = Link.make(0x70, raw)
    with pytest.raises(UnknownCodec):
        load_advertisement(other, raw)


def test_entry_chunk_validation() -> None:
    chunk = make_chunk(3, next_link=link(1))
    chunk.validate()
    with pytest.raises(SchemaError, match=r"Entries\[1\]"):
        replace(chunk, entries=(chunk.entries[0], b"\x12\x20short")).validate()
    with pytest.raises(SchemaError):
        EntryChunk.from_node({"Entries": ["notbytes"]})


@given(entry_chunks())
def test_dagjson_chunk_fast_path_agrees_with_the_generic_decoder(chunk: EntryChunk) -> None:
    _, raw = encode_block(chunk.to_node(), DAG_JSON)
    fast = decode_dagjson_chunk(raw)
    assert fast is not None
    assert EntryChunk(entries=fast[0], next=fast[1]) == EntryChunk.from_node(dagjson.decode(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"Entries":[{"/":{"bytes":"!!"}}]}',
        b'{"Entries":[{"/":{"bytes":"EiA"}}],"Other":1}',
        b'{"Entries":[{"/":"bafy"}]}',
        b'{"Entries":[],"Next":{"/":"notacid"}}',
        b'{"Next":null}',
    ],
)
def test_dagjson_chunk_fast_path_leaves_errors_to_the_generic_path(raw: bytes) -> None:
    assert decode_dagjson_chunk(raw) is None
    with pytest.raises(ModelError):
        load_entry_chunk(Link.make(DAG_JSON, raw), raw)


# -- the DAG-JSON uniform chunk path ---------------------------------------------------------------


def _generic_json(raw: bytes) -> EntryChunk | None:
    try:
        return EntryChunk.from_node(dagjson.decode(raw))
    except ModelError:
        return None


_edits = st.lists(
    st.tuples(
        st.integers(0, 4000),
        st.sampled_from(["flip", "drop", "insert"]),
        st.binary(min_size=1, max_size=1),
    ),
    max_size=2,
)


@given(
    st.integers(1, 40).flatmap(
        lambda k: st.lists(st.binary(min_size=k, max_size=k), min_size=1, max_size=30)
    ),
    st.none() | links(),
    _edits,
)
def test_dagjson_uniform_path_accepts_only_what_the_generic_path_does(
    entries: list[bytes], nxt: Link | None, edits: list[tuple[int, str, bytes]]
) -> None:
    _, raw = encode_block(EntryChunk(tuple(entries), nxt).to_node(), DAG_JSON)
    for where, how, byte in edits:  # changed bytes, or one fewer or more: lengths move too
        at = where % len(raw)
        keep = raw[at + 1 :] if how != "insert" else raw[at:]
        raw = raw[:at] + (b"" if how == "drop" else byte) + keep
    fast = uniform_dagjson_chunk(raw)
    if fast is not None:
        assert _generic_json(raw) == EntryChunk(fast[0], fast[1])
    elif not edits:
        raise AssertionError("a chunk of same-length entries must take the uniform path")


def _json_chunk(texts: list[bytes], tail: bytes = b"}") -> bytes:
    return b'{"Entries":[' + b",".join(b'{"/":{"bytes":"%s"}}' % t for t in texts) + b"]" + tail


@pytest.mark.parametrize(
    "raw",
    [
        # Lengths 46, 42, 50: the right total, but the second separator is off its stride.
        _json_chunk([b"A" * 46, b"B" * 42, b"C" * 50]),
        # 46, 41, 51: a quote of the separator lands on the stride (its sixth byte).
        _json_chunk([b"A" * 46, b"B" * 41, b"C" * 51]),
        _json_chunk([b"A" * 46, b"B" * 45 + b"=", b"C" * 46]),  # padding inside
        _json_chunk([b"A" * 46, b"B" * 45 + b"-", b"C" * 46]),  # not base64
        _json_chunk([b"A" * 46, b"B" * 45 + b"\\", b"C" * 45]),  # an escape
        _json_chunk([b"A" * 46, b"B" * 46], b', "Next":{"/":"bafy"}}'),  # whitespace
        _json_chunk([b"A" * 46, b"B" * 46], b',"Next":{"/":"bafy"}}'),  # not a CID
        _json_chunk([b"A" * 46, b"B" * 46], b',"Other":1}'),
        _json_chunk([b"A" * 45, b"B" * 45]),  # 1 more than a multiple of 4
        _json_chunk([b""]),
        _json_chunk([b"A" * 46]) + b" ",
        b'{"Entries":[{"/":{"bytes":"}},{"/":{"bytes":"AAAA"}}]}',  # a separator at the head
        b'{"Entries":[{"/":{"bytes":"AAAA"}},{"/":{"bytes":"}}]}',  # one at the end
    ],
)
def test_dagjson_uniform_path_leaves_other_layouts_to_the_typed_path(raw: bytes) -> None:
    assert uniform_dagjson_chunk(raw) is None
    generic = _generic_json(raw)
    typed = typed_dagjson_chunk(raw)
    assert (typed is None) == (generic is None)
    if typed is not None:
        assert generic == EntryChunk(typed[0], typed[1])


def test_a_full_chunk_takes_the_dagjson_uniform_path() -> None:
    entries = tuple(multihash(i) for i in range(16_384))
    nxt = Link.make(DAG_JSON, b"next")
    _, raw = encode_block(EntryChunk(entries, nxt).to_node(), DAG_JSON)
    assert uniform_dagjson_chunk(raw) == typed_dagjson_chunk(raw) == (entries, nxt)
    for size in (1, 2, 3, 33, 35):  # every remainder of the base64 length (modulo 4)
        some = tuple(bytes([i]) * size for i in range(5))
        _, raw = encode_block(EntryChunk(some, None).to_node(), DAG_JSON)
        assert uniform_dagjson_chunk(raw) == typed_dagjson_chunk(raw) == (some, None)
