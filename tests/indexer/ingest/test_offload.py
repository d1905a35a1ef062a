"""Big entries blocks decoded in a decode process: the same results and errors as in process.

Real trio-parallel worker processes (spawned: the worker imports what it runs by name), a real
publisher over HTTP and a real LevelDB.
"""

from __future__ import annotations

import gzip
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.offload import Offload, open_offload
from staging import StagingArea
from store import KV
from sync import DAG_CBOR, DAG_JSON, Advertisement, EntryChunk, Link, decode_node, encode_block
from sync.errors import (
    BlockTooLarge,
    DecoderDied,
    FetchFailed,
    HashMismatch,
    Retry,
    SchemaError,
    retry_of,
)
from sync.ipnisync.fetch import MAX_BLOCK, fetcher_factory
from sync.net.gzipbody import EncodedBody
from sync.walk.entries import ParsedBlock, parse_block, parse_encoded
from tests.builders import ChainBuilder, build_hamt, key, make_ad, multihash, serve_and_ingest

ENTRIES = 3_000  # ~150 KB of DAG-JSON, ~110 KB gzipped: over MIN_BYTES
MIN_BYTES = 16 << 10


def _chunk(codec: int, n: int = ENTRIES, start: int = 0) -> tuple[Link, bytes]:
    entries = tuple(multihash(start + i) for i in range(n))
    return encode_block(EntryChunk(entries, next=encode_block({"x": 1})[0]).to_node(), codec)


def _gz(raw: bytes, cap: int = MAX_BLOCK) -> EncodedBody:
    return EncodedBody(gzip.compress(raw, 1), True, cap, "http://127.0.0.1/chunk")


def _die(link: Link, body: EncodedBody) -> ParsedBlock:
    """A decode that kills its own worker process (what the OOM killer would do)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


async def test_a_block_decoded_in_a_process_is_the_block_decoded_here() -> None:
    async with open_offload(1, MIN_BYTES) as offload:
        for codec in (DAG_JSON, DAG_CBOR):
            link, raw = _chunk(codec)
            here = parse_block(link, raw)
            there = await offload.parse(link, _gz(raw))
            assert isinstance(here.node, EntryChunk) and isinstance(there.node, EntryChunk)
            assert there.node.entries == tuple(sorted(here.node.entries))
            assert there.node.next == here.node.next is not None
            assert there.raw is None and there.data() == raw
        assert offload.offloaded == 2
        link, raw = _chunk(DAG_JSON, n=10)  # small: decoded here, its bytes kept
        small = await offload.parse(link, _gz(raw))
        assert small.raw == raw and offload.offloaded == 2


async def test_hostile_bodies_fail_in_a_decode_process_as_they_fail_here() -> None:
    link, raw = _chunk(DAG_JSON)
    other_raw = _chunk(DAG_JSON, start=1)[1]
    truncated = _gz(raw).body[: -(MIN_BYTES // 2)]
    cases: list[tuple[EncodedBody, type[Exception], str]] = [
        (_gz(other_raw), HashMismatch, "hash"),  # another chunk's bytes
        (_gz(raw, cap=len(raw) - 1), BlockTooLarge, "byte cap"),
        (_gz(b"\0" * (64 << 20)), BlockTooLarge, "byte cap"),  # a bomb: 64 MiB of zeros
        (EncodedBody(truncated, True, MAX_BLOCK, "u"), FetchFailed, "truncated"),
        (EncodedBody(os.urandom(MIN_BYTES), True, MAX_BLOCK, "u"), FetchFailed, "bad gzip"),
    ]
    wrong, wrong_raw = encode_block([b"\x80" * 40_000, []])  # decodes, but not a chunk
    cases.append((_gz(wrong_raw), SchemaError, "EntryChunk"))
    async with open_offload(1, MIN_BYTES) as offload:
        for body, kind, match in cases:
            at = wrong if kind is SchemaError else link
            with pytest.raises(kind, match=match):
                await offload.parse(at, body)
            with pytest.raises(kind, match=match):
                await Offload.inline().parse(at, body)
        assert offload.offloaded == 0 and offload.died == 0
        # The worker is still good for the next block.
        assert (await offload.parse(link, _gz(raw))).data() == raw


MARK = multihash(424_242)  # a chunk holding it crashes the decoder (``_crash_on_mark``)


def _crash_on_mark(link: Link, body: EncodedBody) -> ParsedBlock:
    """``parse_encoded``, but a chunk with ``MARK`` in it kills the process decoding it, as a
    block that crashes a C decoder would."""
    parsed = parse_encoded(link, body)
    if isinstance(parsed.node, EntryChunk) and MARK in parsed.node.entries:
        os.kill(os.getpid(), signal.SIGKILL)
    return parsed


def _bug(link: Link, body: EncodedBody) -> ParsedBlock:
    raise RuntimeError("a decode process that cannot decode")


async def test_a_decode_process_that_fails_otherwise_leaves_the_block_to_this_process() -> None:
    link, raw = _chunk(DAG_JSON)
    async with open_offload(1, MIN_BYTES) as offload:
        offload.decode = _bug
        with capture_logs() as logs:
            parsed = await offload.parse(link, _gz(raw))
        assert parsed.raw == raw and offload.offloaded == 0 and offload.died == 0
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("decode process failed; decoding the block here", "error")
        ]


async def test_a_decode_process_that_dies_under_a_block_fails_the_block_not_this_process() -> None:
    link, raw = _chunk(DAG_CBOR)
    async with open_offload(1, MIN_BYTES) as offload:
        offload.decode = _die
        with capture_logs() as logs, pytest.raises(DecoderDied, match="decode process died"):
            await offload.parse(link, _gz(raw))
        assert offload.died == 1 and offload.offloaded == 0
        assert [e["event"] for e in logs] == ["decode process died under a block"]
        assert retry_of(DecoderDied("x")) is Retry.LIMITED
        offload.decode = Offload.inline().decode
        again = await offload.parse(link, _gz(raw))  # a new worker takes the next one
        assert again.raw is None and again.data() == raw and offload.offloaded == 1


async def _ingest(tmp_path: Path, chain: ChainBuilder, offload: Offload) -> Ingester:
    config = IngestConfig(retry_base=0.01, retry_max=0.01, max_attempts=2)
    ingester = Ingester(KV(tmp_path / "idx"), fetcher_factory(timeout=10), config=config)
    ingester.offload = offload
    await serve_and_ingest(ingester, [chain], within=60)
    return ingester


async def test_ads_whose_chunks_are_decoded_in_a_process_are_indexed_whole(
    tmp_path: Path,
) -> None:
    signer, chain = key(1), ChainBuilder(chunk_size=ENTRIES)
    for a in range(6):  # ads of one and of two chunks
        chain.add(signer, [multihash(10_000 * a + i) for i in range(ENTRIES * (1 + a % 2))])
    async with open_offload(1, MIN_BYTES) as offload:
        ingester = await _ingest(tmp_path, chain, offload)
    # Nine chunks: the first ones fetched ahead, the second ones when the applier needs them;
    # one may come from the walk's own fetch ahead (decoded in process).
    assert offload.offloaded >= 8
    for cid, mhs in chain.order:
        for mh in mhs:
            values = ingester.index.lookup(mh)
            assert len(values) == 1, (cid, mh)
    assert StagingArea(ingester.index.kv).providers() == []
    ingester.index.kv.close()


def _first_chunk(chain: ChainBuilder, ad: Link) -> Link:
    return Advertisement.from_node(decode_node(chain.blocks[ad], ad.codec)).entries


@pytest.mark.parametrize("which", ["first", "second"])
async def test_a_big_chunk_that_lies_fails_its_ad_alone(tmp_path: Path, which: str) -> None:
    signer, chain = key(2), ChainBuilder(chunk_size=ENTRIES)
    ads = [
        chain.add(signer, [multihash(10_000 * a + i) for i in range(2 * ENTRIES)]) for a in range(4)
    ]
    first = _first_chunk(chain, ads[1])
    if which == "first":  # fetched ahead: forgotten, then the applier's own fetch fails
        liar = first
    else:  # fetched by the applier through the decode process
        second = EntryChunk.from_node(decode_node(chain.blocks[first], first.codec)).next
        assert second is not None
        liar = second
    chain.blocks[liar] = _chunk(DAG_JSON, start=77_777)[1]  # another chunk's bytes
    async with open_offload(1, MIN_BYTES) as offload:
        ingester = await _ingest(tmp_path, chain, offload)
    indexed = [all(ingester.index.lookup(mh) for mh in mhs) for _, mhs in chain.order]
    assert indexed == [True, False, True, True]
    records = [record for _, record in ingester.index.providers()]
    assert len(records) == 1 and "HashMismatch" in (records[0].last_error or "")
    assert offload.offloaded >= 5 and offload.died == 0
    ingester.index.kv.close()


async def test_a_hamt_with_every_block_sent_to_a_decode_process_is_indexed_whole(
    tmp_path: Path,
) -> None:
    signer, chain = key(3), ChainBuilder()
    mhs = [multihash(50_000 + i) for i in range(300)]
    root, blocks, _ = build_hamt(mhs, bit_width=3, bucket_size=2)
    assert len(blocks) > 10  # a root, interior nodes and leaves
    chain.blocks.update(blocks)
    chain.add(signer, [multihash(1)])  # an ad of a chunk before it
    ad = make_ad(signer, previous=chain.head_link, entries=root, context_id=b"hamt")
    cid, raw = encode_block(ad.to_node())
    chain.blocks[cid], chain.head_link = raw, cid
    async with open_offload(1, 0) as offload:  # every block a decode process's, but HAMT nodes
        ingester = await _ingest(tmp_path, chain, offload)
    assert all(ingester.index.lookup(mh) for mh in [*mhs, multihash(1)])
    assert 1 <= offload.offloaded <= 3  # the chunk, the HAMT root (one maybe from the walk)
    assert StagingArea(ingester.index.kv).providers() == []
    ingester.index.kv.close()


async def test_a_chunk_that_crashes_the_decoder_every_time_fails_its_ad_alone(
    tmp_path: Path,
) -> None:
    signer, chain = key(4), ChainBuilder(chunk_size=ENTRIES)
    for a in range(3):
        mhs = [multihash(10_000 * a + i) for i in range(ENTRIES)]
        chain.add(signer, [MARK, *mhs[1:]] if a == 1 else mhs)
    async with open_offload(1, MIN_BYTES) as offload:
        offload.decode = _crash_on_mark
        ingester = await _ingest(tmp_path, chain, offload)
    indexed = [all(ingester.index.lookup(mh) for mh in mhs) for _, mhs in chain.order]
    assert indexed == [True, False, True]
    records = [record for _, record in ingester.index.providers()]
    assert len(records) == 1 and "DecoderDied" in (records[0].last_error or "")
    assert offload.died >= 2 and offload.offloaded >= 1  # its attempts; the other ads (one maybe
    # decoded here, from the walk's own fetch ahead)
    assert StagingArea(ingester.index.kv).providers() == []
    ingester.index.kv.close()
