"""The sans-I/O entries walk: EntryChunk chains and go-ipld-adl-hamt HAMTs, fed from a dict.

The HAMTs are built by hand (``tests.builders.build_hamt``) the way go-ipld-adl-hamt's
``insertEntry`` builds them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import pickle
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from indexer.ingest.engine import IngestConfig, Ingester
from staging import StagingArea
from store import KV
from sync import DAG_CBOR, DAG_JSON, NO_ENTRIES, EntryChunk, Link, PrivateKey, encode_block
from sync.errors import (
    BlockTooLarge,
    ChainTooLong,
    DecodeError,
    EntriesOverBudget,
    FetchFailed,
    HashMismatch,
    ModelError,
    RepeatedLink,
    Retry,
    SchemaError,
    UnknownCodec,
)
from sync.ipnisync.fetch import fetcher_factory, open_fetcher
from sync.ipnisync.routes import ipnisync_handler
from sync.model.cid import RAW, SHA2_256
from sync.net.gzipbody import EncodedBody
from sync.net.httpserver import serve_tcp
from sync.walk.entries import (
    DEFAULT_BUDGET,
    EntriesBudget,
    EntriesProgress,
    EntriesWalk,
    ParsedBlock,
    parse_block,
    parse_encoded,
)
from tests.builders import HamtNode, MemorySource, build_hamt, counting, make_ad, multihash
from tests.strategies import multihashes

Blocks = dict[Link, bytes]
codecs = st.sampled_from([DAG_JSON, DAG_CBOR])


# -- builders ------------------------------------------------------------------------------------


def build_chain(chunks: list[list[bytes]], codec: int = DAG_JSON) -> tuple[Link, Blocks]:
    """An EntryChunk chain holding ``chunks`` in order; returns its first link and its blocks."""
    blocks: Blocks = {}
    nxt: Link | None = None
    for entries in reversed(chunks):
        cid, raw = encode_block(EntryChunk(entries=tuple(entries), next=nxt).to_node(), codec)
        blocks[cid] = raw
        nxt = cid
    assert nxt is not None
    return nxt, blocks


def numbered_chunks(sizes: Iterable[int]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    start = 0
    for size in sizes:
        out.append([multihash(start + i) for i in range(size)])
        start += size
    return out


def height(node: HamtNode) -> int:
    return 1 + max((height(e) for e in node.data if isinstance(e, HamtNode)), default=0)


def walk(
    root: Link,
    blocks: Blocks,
    *,
    resume_after: Iterable[int] = (),
    max_blocks: int = 1_000_000,
) -> tuple[list[bytes], EntriesProgress, int]:
    """Feed every block; restart from the persisted progress after the blocks in ``resume_after``.

    Returns the multihashes in the order fed, the final progress and the largest pending stack.
    """
    restarts = set(resume_after)
    w = EntriesWalk(root, max_blocks=max_blocks)
    out: list[bytes] = []
    fed = 0
    deepest = len(w.progress.pending)
    while (nxt := w.next_block()) is not None:
        out.extend(w.feed(nxt, blocks[nxt]))
        fed += 1
        assert w.progress.blocks_done == fed
        assert w.progress.multihashes_done == len(out)
        deepest = max(deepest, len(w.progress.pending))
        if fed in restarts:
            saved = EntriesProgress.decode(w.progress.encode())
            assert saved == w.progress
            w = EntriesWalk(root, progress=saved, max_blocks=max_blocks)
    return out, w.progress, deepest


# -- chains --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_chain_walk_returns_every_multihash_in_order(codec: int) -> None:
    chunks = numbered_chunks([3, 0, 5, 1])
    root, blocks = build_chain(chunks, codec)
    out, progress, deepest = walk(root, blocks)
    assert out == [mh for chunk in chunks for mh in chunk]
    assert progress == EntriesProgress((), blocks_done=4, multihashes_done=9, hamt=False)
    assert deepest == 1


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_a_block_parsed_ahead_is_fed_in_place_of_its_bytes_for_its_own_link(codec: int) -> None:
    chunks = numbered_chunks([3, 2])
    root, blocks = build_chain(chunks, codec)
    ahead = parse_block(root, blocks[root])
    assert ahead.raw is blocks[root] and isinstance(ahead.node, EntryChunk)
    assert EntriesWalk(root).feed(root, parsed=ahead) == chunks[0]
    second = next(link for link in blocks if link != root)
    walk_ = EntriesWalk(root)
    with pytest.raises(ValueError, match="parsed block of"):
        walk_.feed(root, parsed=parse_block(second, blocks[second]))  # another link's
    with pytest.raises(ValueError, match="not both"):
        walk_.feed(root, blocks[root], ahead)
    with pytest.raises(ValueError, match="not both"):
        walk_.feed(root)
    corrupt = bytearray(blocks[root])
    corrupt[-3] ^= 1
    with pytest.raises(HashMismatch):
        parse_block(root, bytes(corrupt))


def _gzipped(raw: bytes, cap: int = 1 << 20) -> EncodedBody:
    return EncodedBody(gzip.compress(raw, 1), True, cap, "http://127.0.0.1/x")


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_a_chunk_parsed_from_its_gzip_body_has_its_entries_sorted_and_no_bytes(codec: int) -> None:
    entries = [multihash(i) for i in range(50)]
    link, raw = encode_block(EntryChunk(tuple(entries)).to_node(), codec)
    body = _gzipped(raw)
    parsed = parse_encoded(link, body)
    assert parsed.raw is None and isinstance(parsed.node, EntryChunk)
    assert list(parsed.node.entries) == sorted(entries) != entries
    parsed = pickle.loads(pickle.dumps(parsed))  # what a decode process sends back
    assert EntriesWalk(link).feed(link, parsed=parsed) == sorted(entries)
    again = dataclasses.replace(parsed, body=body)
    assert again.data() == raw
    plain = EncodedBody(raw, False, len(raw), "http://127.0.0.1/x")
    assert parse_encoded(link, plain).node == parsed.node


def test_a_gzip_body_fails_as_its_bytes_would_and_the_errors_pickle() -> None:
    link, raw = encode_block(EntryChunk((multihash(1), multihash(2))).to_node())
    corrupt = bytearray(raw)
    corrupt[-3] ^= 1
    cases: list[tuple[EncodedBody, type[Exception], str]] = [
        (_gzipped(bytes(corrupt)), HashMismatch, "hash"),
        (_gzipped(raw, cap=len(raw) - 1), BlockTooLarge, "byte cap"),
        (_gzipped(b"\0" * (64 << 20), cap=4 << 20), BlockTooLarge, "byte cap"),  # a bomb
        (EncodedBody(_gzipped(raw).body[:-9], True, 1 << 20, "u"), FetchFailed, "truncated"),
        (EncodedBody(b"not gzip", True, 1 << 20, "u"), FetchFailed, "bad gzip body"),
    ]
    for body, kind, match in cases:
        with pytest.raises(kind, match=match) as caught:
            parse_encoded(link, body)
        copy = pickle.loads(pickle.dumps(caught.value))
        assert type(copy) is kind and str(copy) == str(caught.value)


def test_a_hamt_node_parsed_elsewhere_is_checked_from_its_body() -> None:
    # A HAMT root whose child link is fed a ParsedBlock without bytes: inside a HAMT the walk
    # checks and decodes the node's bytes itself, which the body gives back.
    leaf = [b"\x80", [[[multihash(7), True]]]]
    leaf_cid, leaf_raw = encode_block(leaf, DAG_CBOR)
    w, cid, raw = _single({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [leaf_cid]]})
    assert w.feed(cid, raw) == []
    stray = ParsedBlock(leaf_cid, None, {}, _gzipped(leaf_raw))  # its decoding is not used
    assert w.feed(leaf_cid, parsed=stray) == [multihash(7)]


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_chain_resumes_after_any_block(codec: int) -> None:
    chunks = numbered_chunks([2, 3, 1, 4, 2])
    root, blocks = build_chain(chunks, codec)
    expected = [mh for chunk in chunks for mh in chunk]
    assert walk(root, blocks, resume_after=range(1, 6))[0] == expected
    for k in range(6):  # crash after block k: persist, then a fresh walk from the record
        first = EntriesWalk(root)
        got: list[bytes] = []
        for _ in range(k):
            nxt = first.next_block()
            assert nxt is not None
            got += first.feed(nxt, blocks[nxt])
        second = EntriesWalk(root, progress=EntriesProgress.decode(first.progress.encode()))
        while (nxt := second.next_block()) is not None:
            got += second.feed(nxt, blocks[nxt])
        assert got == expected
        assert second.progress.multihashes_done == len(expected)


@given(
    st.lists(st.lists(multihashes(), max_size=6), min_size=1, max_size=8),
    codecs,
    st.sets(st.integers(1, 8)),
)
def test_chain_property(chunks: list[list[bytes]], codec: int, restarts: set[int]) -> None:
    root, blocks = build_chain(chunks, codec)
    out, progress, deepest = walk(root, blocks, resume_after=restarts)
    assert out == [mh for chunk in chunks for mh in chunk]
    assert progress.blocks_done == len(chunks) and not progress.pending
    assert deepest <= 1


def test_no_entries_is_an_empty_walk() -> None:
    w = EntriesWalk(NO_ENTRIES)
    assert w.next_block() is None and w.finished
    assert w.progress == EntriesProgress(())


# -- HAMTs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [DAG_CBOR, DAG_JSON])
@pytest.mark.parametrize(("bit_width", "bucket_size"), [(3, 1), (3, 3), (5, 3), (8, 2)])
def test_hamt_walk_returns_the_whole_set(codec: int, bit_width: int, bucket_size: int) -> None:
    keys = [multihash(i) for i in range(300)]
    root, blocks, tree = build_hamt(keys, bit_width=bit_width, bucket_size=bucket_size, codec=codec)
    out, progress, deepest = walk(root, blocks)
    assert sorted(out) == sorted(keys) and len(out) == len(set(out))
    assert progress == EntriesProgress((), len(blocks), len(keys), hamt=True)
    assert deepest <= height(tree) * (1 << bit_width)


def test_hamt_has_several_levels_with_buckets_and_links() -> None:
    _, blocks, tree = build_hamt([multihash(i) for i in range(200)], bit_width=3)
    assert height(tree) >= 4 and len(blocks) > 20
    mixed = [n for n in _nodes(tree) if {type(e) for e in n.data} == {list, HamtNode}]
    assert mixed, "some node should hold both buckets and links"
    assert all(len(n.bitmap) == 1 for n in _nodes(tree))


def _nodes(node: HamtNode) -> list[HamtNode]:
    return [node, *(n for e in node.data if isinstance(e, HamtNode) for n in _nodes(e))]


def test_hamt_pending_stack_is_bounded_by_depth_not_size() -> None:
    root, blocks, tree = build_hamt([multihash(i) for i in range(3000)], bit_width=3)
    _, _, deepest = walk(root, blocks)
    assert deepest <= height(tree) * 8 < len(blocks) // 10


def test_hamt_resumes_after_every_block() -> None:
    keys = [multihash(i) for i in range(150)]
    root, blocks, _ = build_hamt(keys, bit_width=4, bucket_size=2)
    every = range(1, len(blocks) + 1)
    out, progress, _ = walk(root, blocks, resume_after=every)
    assert sorted(out) == sorted(keys) and len(out) == len(keys)
    assert progress.hamt and progress.blocks_done == len(blocks)


@given(
    st.integers(0, 80),
    st.integers(0, 10_000),
    st.sampled_from([3, 4, 5]),
    st.integers(1, 3),
    codecs,
    st.sets(st.integers(1, 60)),
)
def test_hamt_property(
    count: int, offset: int, bit_width: int, bucket_size: int, codec: int, restarts: set[int]
) -> None:
    keys = [multihash(offset + i) for i in range(count)]
    root, blocks, _ = build_hamt(keys, bit_width=bit_width, bucket_size=bucket_size, codec=codec)
    out, progress, _ = walk(root, blocks, resume_after=restarts)
    assert sorted(out) == sorted(keys) and len(out) == len(set(out))
    assert progress.blocks_done == len(blocks) and progress.multihashes_done == count


def test_hand_assembled_go_dagcbor_root() -> None:
    """A one-entry root, byte by byte as go-ipld-prime writes it (RFC 7049 key order)."""
    mh = multihash(7)
    raw = (
        b"\xa3"  # map(3)
        + b"\x64hamt"
        + b"\x82\x41\x80"  # [map h'80' (bit 0 of bitWidth 3),
        + b"\x81\x81\x82\x58\x22"  # [[[bytes(34)
        + mh
        + b"\xf5"  # true]]]]
        + b"\x67hashAlg\x12"
        + b"\x6abucketSize\x03"
    )
    node = {"hashAlg": SHA2_256, "bucketSize": 3, "hamt": [b"\x80", [[[mh, True]]]]}
    cid, encoded = encode_block(node, DAG_CBOR)
    assert encoded == raw
    w = EntriesWalk(cid)
    assert w.feed(cid, raw) == [mh]
    assert w.next_block() is None and w.progress.hamt


# -- errors --------------------------------------------------------------------------------------


def _single(node: Any, codec: int = DAG_CBOR) -> tuple[EntriesWalk, Link, bytes]:
    cid, raw = encode_block(node, codec)
    return EntriesWalk(cid), cid, raw


def test_hash_mismatch() -> None:
    root, blocks = build_chain(numbered_chunks([2]))
    raw = blocks[root].replace(b"Entries", b"Entriez")
    with pytest.raises(HashMismatch):
        EntriesWalk(root).feed(root, raw)


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x12",
        b"\x12\x20short",
        multihash(1) + b"\x00",
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80",
    ],
)
def test_bad_multihash_in_a_chunk(codec: int, bad: bytes) -> None:
    w, cid, raw = _single({"Entries": [multihash(1), bad]}, codec)
    with pytest.raises(SchemaError, match=r"Entries\[1\]"):
        w.feed(cid, raw)
    assert w.progress.blocks_done == 0 and w.next_block() == cid  # nothing moved


def test_bad_multihash_in_a_hamt_bucket() -> None:
    w, cid, raw = _single(
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [[[b"\x12\x20x", True]]]]}
    )
    with pytest.raises(SchemaError, match="not a multihash"):
        w.feed(cid, raw)


HAMT_OK = [b"\x80", [[[multihash(1), True]]]]


@pytest.mark.parametrize(
    "node",
    [
        [1, 2],  # a bare list as the root
        {"Entries": "nope"},
        {"Entries": [], "Next": None},
        {"Entries": [], "Other": 1},
        {"hashAlg": 0x12, "hamt": HAMT_OK},  # bucketSize missing
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": HAMT_OK, "x": 1},
        {"hashAlg": "sha2", "bucketSize": 3, "hamt": HAMT_OK},
        {"hashAlg": 0x12, "bucketSize": True, "hamt": HAMT_OK},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": {"map": b"\x80"}},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [[]]]},  # empty bucket
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\xc0", HAMT_OK[1]]},  # 2 bits, 1 element
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"", []]},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80\x00\x00", HAMT_OK[1]]},  # 3 bytes
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": ["\x80", HAMT_OK[1]]},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [[[multihash(1)]]]]},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [[["key", True]]]]},
        {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [5]]},
    ],
)
@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_wrong_shapes_are_schema_errors(node: Any, codec: int) -> None:
    w, cid, raw = _single(node, codec)
    with pytest.raises(SchemaError):
        w.feed(cid, raw)


def test_kinds_do_not_mix() -> None:
    # A HAMT node linking to an entry chunk.
    chunk_cid, chunk_raw = encode_block(EntryChunk((multihash(2),)).to_node(), DAG_CBOR)
    root = {"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [chunk_cid]]}
    w, cid, raw = _single(root)
    assert w.feed(cid, raw) == []
    assert w.next_block() == chunk_cid
    with pytest.raises(SchemaError, match="must be a list"):
        w.feed(chunk_cid, chunk_raw)
    # A chunk's Next pointing to a HAMT root.
    hamt_cid, hamt_raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": HAMT_OK})
    w, cid, raw = _single(EntryChunk((multihash(3),), next=hamt_cid).to_node())
    assert w.feed(cid, raw) == [multihash(3)]
    with pytest.raises(SchemaError, match="HAMT root"):
        w.feed(hamt_cid, hamt_raw)


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_garbage_block_is_a_decode_error(codec: int) -> None:
    raw = b"\xff{not a block"
    cid = Link.make(codec, raw)
    with pytest.raises(DecodeError):
        EntriesWalk(cid).feed(cid, raw)


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_deeply_nested_block_is_a_decode_or_schema_error(codec: int) -> None:
    depth = 5_000
    inner = b"[" * depth + b"]" * depth if codec == DAG_JSON else b"\x81" * depth + b"\x80"
    hamt_root = {"hashAlg": 0x12, "bucketSize": 3, "hamt": "X"}
    _, template = encode_block(hamt_root, codec)
    marker = b'"X"' if codec == DAG_JSON else b"\x61X"
    raw = template.replace(marker, inner)
    cid = Link.make(codec, raw)
    with pytest.raises((DecodeError, SchemaError)):
        EntriesWalk(cid).feed(cid, raw)


def test_unknown_codec() -> None:
    raw = b"raw bytes"
    cid = Link.make(RAW, raw)
    with pytest.raises(UnknownCodec):
        EntriesWalk(cid).feed(cid, raw)


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_chain_over_max_blocks(codec: int) -> None:
    root, blocks = build_chain(numbered_chunks([1, 1, 1]), codec)
    assert len(walk(root, blocks, max_blocks=3)[0]) == 3
    with pytest.raises(ChainTooLong):
        walk(root, blocks, max_blocks=2)
    # Resuming a record under a smaller limit fails before anything is fetched.
    w = EntriesWalk(root)
    w.feed(root, blocks[root])
    with pytest.raises(ChainTooLong):
        EntriesWalk(root, progress=w.progress, max_blocks=1).next_block()


def test_hamt_over_max_blocks() -> None:
    root, blocks, _ = build_hamt([multihash(i) for i in range(100)])
    walk(root, blocks, max_blocks=len(blocks))
    with pytest.raises(ChainTooLong):
        walk(root, blocks, max_blocks=len(blocks) - 1)


def _full_node(child: Link, times: int = 256) -> list[Any]:
    """A bitWidth-8 node whose every one of ``times`` data elements links ``child``."""
    bits = (1 << 256) - (1 << (256 - times))
    return [bits.to_bytes(32, "big"), [child] * times]


def test_a_node_linking_one_child_256_times_is_a_repeated_link() -> None:
    """The tester's HAMT: each level links the one below 256 times (256**depth visits before)."""
    blocks: Blocks = {}
    cid, raw = encode_block([b"\x80", [[[multihash(0), True]]]], DAG_CBOR)
    blocks[cid] = raw
    for _ in range(3):
        cid, raw = encode_block(_full_node(cid), DAG_CBOR)
        blocks[cid] = raw
    root, raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": _full_node(cid)})
    blocks[root] = raw
    fed: list[Link] = []
    w = EntriesWalk(root)
    with pytest.raises(RepeatedLink, match="more than once"):
        while (nxt := w.next_block()) is not None:
            fed.append(nxt)
            w.feed(nxt, blocks[nxt])
    assert fed == [root]  # one block asked for, and the walk ends
    assert w.progress == EntriesProgress((root,))  # nothing moved: the error is for the root


def test_a_node_linked_from_two_places_is_a_repeated_link() -> None:
    """Distinct links per node, but two nodes per level sharing both children below: 2**depth
    visits of 2 x depth blocks without de-duplication across the walk."""
    blocks: Blocks = {}
    level = []
    for i in range(2):
        cid, raw = encode_block([b"\x80", [[[multihash(i), True]]]], DAG_CBOR)
        blocks[cid] = raw
        level.append(cid)
    for depth in range(10):
        nxt_level = []
        for i in range(2):  # [a, b, bucket]: two shared links and a bucket of its own
            node = [b"\xe0", [*level, [[multihash(1000 * depth + 10 + i), True]]]]
            cid, raw = encode_block(node, DAG_CBOR)
            blocks[cid] = raw
            nxt_level.append(cid)
        level = nxt_level
    root, raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\xc0", level]})
    blocks[root] = raw
    w = EntriesWalk(root)
    fed = 0
    with pytest.raises(RepeatedLink, match="already linked"):
        while (nxt := w.next_block()) is not None:
            w.feed(nxt, blocks[nxt])
            fed += 1
    assert fed <= len(blocks)  # at most each block once, never 2**10


def test_repeated_links_are_checked_within_one_run_only() -> None:
    """A resumed walk forgets the links of the run before it (documented); the idle budget,
    whose counters are persisted, still bounds it."""
    leaf, leaf_raw = encode_block([b"\x80", [[[multihash(0), True]]]], DAG_CBOR)
    a, a_raw = encode_block([b"\xc0", [leaf, [[multihash(1), True]]]], DAG_CBOR)
    b, b_raw = encode_block([b"\xc0", [leaf, [[multihash(2), True]]]], DAG_CBOR)
    root, root_raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\xc0", [a, b]]})
    blocks = {leaf: leaf_raw, a: a_raw, b: b_raw, root: root_raw}
    w = EntriesWalk(root)
    for _ in range(3):  # root, a, leaf
        nxt = w.next_block()
        assert nxt is not None
        w.feed(nxt, blocks[nxt])
    assert w.next_block() == b
    with pytest.raises(RepeatedLink):
        w.feed(b, b_raw)
    resumed = EntriesWalk(root, progress=EntriesProgress.decode(w.progress.encode()))
    assert resumed.feed(b, b_raw) == [multihash(2)]
    assert resumed.feed(leaf, leaf_raw) == [multihash(0)]
    assert resumed.next_block() is None


def _link_only_path(length: int) -> tuple[Link, Blocks]:
    """A HAMT root over ``length`` nodes that each link one new node and yield nothing."""
    blocks: Blocks = {}
    cid, raw = encode_block([b"\x80", [[[multihash(0), True]]]], DAG_CBOR)
    blocks[cid] = raw
    for i in range(length):
        cid, raw = encode_block([(1 << (7 - i % 8)).to_bytes(1, "big"), [cid]], DAG_CBOR)
        blocks[cid] = raw
    root, raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [cid]]})
    blocks[root] = raw
    return root, blocks


def test_a_run_of_blocks_yielding_nothing_ends_the_walk() -> None:
    root, blocks = _link_only_path(1_000)
    asked = 0
    w = EntriesWalk(root)
    with pytest.raises(EntriesOverBudget, match="256 blocks for 0 multihashes"):
        while (nxt := w.next_block()) is not None:
            asked += 1
            assert w.feed(nxt, blocks[nxt]) == []
    assert asked == DEFAULT_BUDGET.max_idle == 256
    # The counters are persisted: a resumed walk is over budget before it asks for anything.
    resumed = EntriesWalk(root, progress=EntriesProgress.decode(w.progress.encode()))
    with pytest.raises(EntriesOverBudget):
        resumed.next_block()
    # A path shorter than the budget is walked to its end.
    short, short_blocks = _link_only_path(200)
    assert walk(short, short_blocks)[0] == [multihash(0)]


@pytest.mark.parametrize("codec", [DAG_JSON, DAG_CBOR])
def test_empty_chunks_cost_at_most_the_idle_budget_beyond_what_was_yielded(codec: int) -> None:
    budget = EntriesBudget(max_idle=5)
    root, blocks = build_chain(numbered_chunks([0] * 20), codec)
    w = EntriesWalk(root, budget=budget)
    asked = 0
    with pytest.raises(EntriesOverBudget):
        while (nxt := w.next_block()) is not None:
            asked += 1
            w.feed(nxt, blocks[nxt])
    assert asked == 5
    # Multihashes yielded earlier pay for empty chunks later: 10 multihashes, then 12 empties.
    root, blocks = build_chain(numbered_chunks([10] + [0] * 12), codec)
    w = EntriesWalk(root, budget=budget)
    while (nxt := w.next_block()) is not None:
        w.feed(nxt, blocks[nxt])
    assert w.progress.blocks_done == 13 and w.progress.multihashes_done == 10


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_time_budget_grows_with_the_multihashes_yielded() -> None:
    budget = EntriesBudget(seconds=10.0, seconds_per_multihash=1.0)
    root, blocks = build_chain(numbered_chunks([1] * 30))
    clock = FakeClock()
    w = EntriesWalk(root, budget=budget, clock=clock)
    fed = 0
    with pytest.raises(EntriesOverBudget, match="took 22 s for 11 multihashes"):
        while (nxt := w.next_block()) is not None:
            w.feed(nxt, blocks[nxt])
            fed += 1
            clock.now += 2.0  # each block takes 2 s and earns 1 s: out of time after 11 blocks
    assert fed == 11
    # A run that is slow but yields enough is never cut; a new run gets a new deadline.
    clock = FakeClock()
    w = EntriesWalk(root, progress=w.progress, budget=budget, clock=clock)
    while (nxt := w.next_block()) is not None:
        w.feed(nxt, blocks[nxt])
        clock.now += 0.9
    assert w.progress.multihashes_done == 30


def test_legit_hamts_stay_far_inside_the_idle_budget() -> None:
    """bucketSize 1 and bitWidth 3 make the most interior nodes: blocks never run ahead of
    multihashes by more than the tree's height."""
    root, blocks, tree = build_hamt([multihash(i) for i in range(3000)], bit_width=3)
    w = EntriesWalk(root)
    worst = 0
    while (nxt := w.next_block()) is not None:
        w.feed(nxt, blocks[nxt])
        worst = max(worst, w.progress.blocks_done - w.progress.multihashes_done)
    assert w.progress.multihashes_done == 3000
    assert worst <= height(tree) < DEFAULT_BUDGET.max_idle


async def test_over_http_the_repeating_hamt_costs_one_request() -> None:
    """The walk driven by a real fetcher against a real server on 127.0.0.1, counting GETs."""
    leaf, leaf_raw = encode_block([b"\x80", [[[multihash(0), True]]]], DAG_CBOR)
    mid, mid_raw = encode_block(_full_node(leaf), DAG_CBOR)
    bad, bad_raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": _full_node(mid)})
    keys = [multihash(i) for i in range(500)]
    good, good_blocks, _ = build_hamt(keys, bit_width=5, bucket_size=3)
    source = MemorySource((leaf, leaf_raw), (mid, mid_raw), (bad, bad_raw), *good_blocks.items())
    seen: Counter[str] = Counter()
    publisher = PrivateKey.generate().peer_id()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served = await nursery.start(
                serve_tcp, counting(ipnisync_handler(source), seen), "127.0.0.1", 0
            )
            addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
            async with open_fetcher([addr], publisher, timeout=10) as fetcher:

                async def drive(root: Link) -> list[bytes]:
                    w = EntriesWalk(root)
                    out: list[bytes] = []
                    while (nxt := w.next_block()) is not None:
                        out += w.feed(nxt, await fetcher.block(nxt, "EntryChunk"))
                    return out

                with pytest.raises(RepeatedLink):
                    await drive(bad)
                assert sum(seen.values()) == 1 and seen[str(bad)] == 1
                got = await drive(good)
                assert sorted(got) == sorted(keys)
                assert sum(seen.values()) == 1 + len(good_blocks)
            nursery.cancel_scope.cancel()


def test_wrong_link_or_finished_walk_is_a_value_error() -> None:
    root, blocks = build_chain(numbered_chunks([1, 1]))
    w = EntriesWalk(root)
    other = next(k for k in blocks if k != root)
    with pytest.raises(ValueError, match="needs"):
        w.feed(other, blocks[other])
    w.feed(root, blocks[root])
    w.feed(other, blocks[other])
    with pytest.raises(ValueError, match="needs None"):
        w.feed(other, blocks[other])


def test_programmer_errors_in_construction() -> None:
    root, _ = build_chain(numbered_chunks([1]))
    with pytest.raises(ValueError, match="max_blocks"):
        EntriesWalk(root, max_blocks=0)
    with pytest.raises(ValueError, match="does not belong"):
        EntriesWalk(root, progress=EntriesProgress((NO_ENTRIES,)))
    with pytest.raises(ValueError):
        EntriesProgress((root, root))  # a chain never has two pending links
    with pytest.raises(ValueError):
        EntriesProgress((), blocks_done=-1)


def _encoded(*items: Any) -> bytes:
    return msgspec.msgpack.encode(list(items))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\x00garbage",
        b"\x93\x01\x90\x00",  # too short
        _encoded(2, [], 0, 0, False),  # unknown version
        _encoded(1, [b"\x01\x71"], 1, 0, False),  # a truncated CID
        _encoded(1, [], -1, 0, False),
        _encoded(1, [], 1, 0, "yes"),
        _encoded(1, [], 1, 0, False, "extra"),
        _encoded(1, [NO_ENTRIES.raw, NO_ENTRIES.raw], 3, 0, False),  # two links, not a HAMT
        _encoded(1, [], 0, 5, False),  # multihashes before any block
        _encoded(1, [], 0, 0, True),
        EntriesProgress((NO_ENTRIES,), 1, 2).encode()[:-1],
    ],
)
def test_garbage_progress_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        EntriesProgress.decode(raw)


@given(st.binary(max_size=64))
def test_progress_decode_raises_only_decode_errors(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        EntriesProgress.decode(raw)


def test_progress_round_trips() -> None:
    p = EntriesProgress((NO_ENTRIES, Link.make(DAG_CBOR, b"x")), 7, 1234, hamt=True)
    assert EntriesProgress.decode(p.encode()) == p
    assert len(p.encode()) < 80


def test_every_error_is_a_model_error() -> None:
    errors = (ChainTooLong, DecodeError, HashMismatch, SchemaError, UnknownCodec)
    for exc in (*errors, RepeatedLink, EntriesOverBudget):
        assert issubclass(exc, ModelError) and exc.retry is not Retry.ALWAYS
    # The walk's own refusals are permanent: the ad is processed-with-error at once.
    for exc in (RepeatedLink, EntriesOverBudget):
        assert exc.retry is Retry.NEVER and exc("x").permanent
    assert issubclass(EntriesOverBudget, ChainTooLong) and issubclass(RepeatedLink, SchemaError)


def test_budget_values_are_checked() -> None:
    for bad in ({"max_idle": 0}, {"seconds": -1.0}, {"seconds_per_multihash": -0.1}):
        with pytest.raises(ValueError, match="budget"):
            EntriesBudget(**bad)


async def test_the_ingester_marks_an_ad_with_a_repeating_hamt_processed_with_error(
    tmp_path: Path,
) -> None:
    """End to end over HTTP: the hostile ad costs one GET of its entries and is done with the
    typed error; the ads before and after it are indexed."""
    signer = PrivateKey.generate()
    leaf, leaf_raw = encode_block([b"\x80", [[[multihash(0), True]]]], DAG_CBOR)
    bad_root, bad_raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": _full_node(leaf)})
    good_root, good_blocks, _ = build_hamt([multihash(i) for i in range(1, 50)], bit_width=4)
    blocks = {leaf: leaf_raw, bad_root: bad_raw, **good_blocks}
    chunk, blocks[chunk] = encode_block(EntryChunk((multihash(99),)).to_node())
    ads: list[Link] = []
    for i, entries in enumerate((good_root, bad_root, chunk)):  # oldest first
        previous = ads[-1] if ads else None
        ad = make_ad(signer, previous=previous, entries=entries, context_id=b"c%d" % i)
        cid, blocks[cid] = encode_block(ad.to_node())
        ads.append(cid)
    source = MemorySource(*blocks.items())
    source.set_head(ads[-1], signer)
    seen: Counter[str] = Counter()
    kv = KV(tmp_path / "indexer")
    ingester = Ingester(kv, fetcher_factory(timeout=5), config=IngestConfig(segment=2))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            served = await nursery.start(
                serve_tcp, counting(ipnisync_handler(source), seen), "127.0.0.1", 0
            )
            addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
            await nursery.start(ingester.run)
            ingester.request_sync(signer.peer_id(), [addr], None)
            await ingester.wait_idle()
            nursery.cancel_scope.cancel()
    done = [StagingArea(ingester.kv).done(cid.raw) for cid in ads]
    assert [d is not None and d.ok for d in done] == [True, False, True]
    assert done[1] is not None and "RepeatedLink" in (done[1].error or "")
    assert seen[str(bad_root)] == 1 and seen[str(leaf)] == 0
    assert len(ingester.index.lookup(multihash(1))) == 1
    assert len(ingester.index.lookup(multihash(99))) == 1
    kv.close()
