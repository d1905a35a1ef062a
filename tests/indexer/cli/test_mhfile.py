"""Reading multihash lists: every accepted form, and every bad line reported with its number."""

from __future__ import annotations

import base64

import base58
import pytest
from hypothesis import given
from multiformats import CID, multihash

from indexer.cli.mhfile import parse_multihash_line, read_multihashes
from sync import BadCid
from tests.builders import link
from tests.strategies import multihashes

MH = multihash.digest(b"hello", "sha2-256")
BLAKE = multihash.digest(b"hello", "blake2b-256")


@pytest.mark.parametrize(
    "text",
    [
        bytes(MH).hex(),
        base58.b58encode(bytes(MH)).decode(),
        "b" + base64.b32encode(bytes(MH)).decode().lower().rstrip("="),
        "z" + base58.b58encode(bytes(MH)).decode(),
        "f" + bytes(MH).hex(),
        str(CID("base32", 1, "raw", MH)),
        str(CID("base58btc", 0, "dag-pb", MH)),
        CID("base32", 1, "raw", MH).encode("base36"),
        f"  {bytes(MH).hex()}  ",
    ],
)
def test_every_form_names_the_same_multihash(text: str) -> None:
    assert parse_multihash_line(text.strip()) == bytes(MH)


def test_other_hash_functions_and_cids_of_any_codec() -> None:
    assert parse_multihash_line(bytes(BLAKE).hex()) == bytes(BLAKE)
    assert parse_multihash_line(str(link(1))) == link(1).multihash.raw


@given(multihashes())
def test_generated_multihashes_round_trip_as_hex_and_base58(mh: bytes) -> None:
    if mh[1:2] == b"\x00":  # zero-length digests are refused on purpose
        return
    assert parse_multihash_line(mh.hex()) == mh
    assert parse_multihash_line(base58.b58encode(mh).decode()) == mh


def test_bad_lines_are_all_reported_with_numbers() -> None:
    lines = ["# header", bytes(MH).hex(), "", "garbage", "1220ab", bytes(MH).hex() + "00", "\t"]
    good, bad = read_multihashes(lines)
    assert good == [bytes(MH)]
    assert [b.number for b in bad] == [4, 5, 6]
    with pytest.raises(BadCid):
        parse_multihash_line("1200")  # empty digest
