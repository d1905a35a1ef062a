"""DAG-JSON and DAG-CBOR: round trips, and agreement with the reference Python codecs."""

from __future__ import annotations

import dag_cbor
import dag_json
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID

from sync import DecodeError, Link, dagcbor, dagjson

from ..strategies import links


def _to_ref(node: object) -> object:
    """Our data model -> the reference libraries' (multiformats CIDs)."""
    if isinstance(node, Link):
        return CID.decode(str(node))
    if isinstance(node, dict):
        return {k: _to_ref(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_ref(v) for v in node]
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
