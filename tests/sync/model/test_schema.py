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
from sync.model.fastchunk import decode_dagjson_chunk
from tests.builders import key, link, make_ad, make_chunk
from tests.strategies import advertisements, entry_chunks

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
