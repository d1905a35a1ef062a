"""Codec throughput: decoding 16,384-multihash entry chunks and verifying ads.

Each figure stands beside its limit measured in the same run:
- chunk decode through ``sync`` vs the raw parser underneath (msgspec JSON / cbrrr with plain
  CIDs), and vs the reference ``dag-json`` / ``dag-cbor`` packages;
- ad load+verify vs raw Ed25519 verifications (the signature check that bounds it);
- DAG-CBOR: the typed chunk fast path (``fastchunk``) beside the generic path with its bounds
  scan (taken by a chunk whose entries do not share one header) and the generic path without the
  scan, which is how every DAG-CBOR chunk was loaded before the bounds;
- DAG-JSON: the uniform chunk path (``fastchunk.uniform_dagjson_chunk``: one base64 decode for
  all entries) beside the typed msgspec path it was written to replace (typed structs, one
  base64 decode per entry), decode alone, no hash check.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cbrrr
import dag_cbor
import dag_json
import msgspec

from sync import (
    DAG_CBOR,
    DAG_JSON,
    Advertisement,
    EntryChunk,
    PrivateKey,
    encode_block,
    load_advertisement,
    load_entry_chunk,
    sign_advertisement,
    verify_advertisement,
)
from sync.model import dagcbor
from sync.model.cid import Link, check_block
from sync.model.fastchunk import typed_dagjson_chunk, uniform_dagjson_chunk
from sync.model.metadata import bitswap

CHUNK_SIZE = 16_384


def _rate(fn: Callable[[], Any], min_seconds: float = 1.0) -> float:
    """Calls per second of ``fn`` over at least ``min_seconds``."""
    fn()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def _chunk() -> EntryChunk:

    entries = tuple(
        b"\x12\x20" + hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(CHUNK_SIZE)
    )
    return EntryChunk(entries=entries, next=Link.make(DAG_JSON, b"next"))


def _dagcbor_paths(cid: Link, raw: bytes, ours: float) -> dict[str, Any]:
    def generic() -> EntryChunk:
        check_block(cid, raw)
        return EntryChunk.from_node(dagcbor.decode(raw))

    def unbounded() -> EntryChunk:  # the load before the bounds: no scan, no fast path
        check_block(cid, raw)
        return EntryChunk.from_node(cbrrr.decode_dag_cbor(raw, cid_ctor=dagcbor.to_link))

    assert generic() == unbounded() == load_entry_chunk(cid, raw)
    before = _rate(unbounded) * CHUNK_SIZE
    return {
        "generic_path_with_bounds_multihashes_per_s": round(_rate(generic) * CHUNK_SIZE),
        "before_bounds_multihashes_per_s": round(before),
        "ratio_to_before_bounds": round(ours / before, 3),
        "bounds_scan_alone_multihashes_per_s": round(
            _rate(lambda: dagcbor.check_bounds(raw)) * CHUNK_SIZE
        ),
    }


def _dagjson_paths(raw: bytes) -> dict[str, Any]:
    assert uniform_dagjson_chunk(raw) == typed_dagjson_chunk(raw) is not None
    uniform = _rate(partial(uniform_dagjson_chunk, raw)) * CHUNK_SIZE
    typed = _rate(partial(typed_dagjson_chunk, raw)) * CHUNK_SIZE
    return {
        "uniform_path_multihashes_per_s": round(uniform),
        "typed_path_multihashes_per_s": round(typed),
        "uniform_path_ratio_to_typed_path": round(uniform / typed, 3),
    }


def run() -> dict[str, Any]:
    chunk = _chunk()
    out: dict[str, Any] = {}
    decoders: list[tuple[str, int, Callable[[bytes], object], Callable[[bytes], object]]] = [
        ("dag-json", DAG_JSON, msgspec.json.decode, dag_json.decode),
        ("dag-cbor", DAG_CBOR, cbrrr.decode_dag_cbor, dag_cbor.decode),
    ]
    for name, codec, raw_decode, ref_decode in decoders:
        cid, raw = encode_block(chunk.to_node(), codec)
        ours = _rate(partial(load_entry_chunk, cid, raw)) * CHUNK_SIZE
        limit = _rate(partial(raw_decode, raw)) * CHUNK_SIZE
        ref = _rate(partial(ref_decode, raw), 0.5) * CHUNK_SIZE
        out[f"chunk_decode_{name}"] = {
            "multihashes_per_s": round(ours),
            "raw_parser_multihashes_per_s": round(limit),
            "ratio_to_raw_parser": round(ours / limit, 3),
            "reference_package_multihashes_per_s": round(ref),
            "speedup_over_reference": round(ours / ref, 1),
        }
        if codec == DAG_CBOR:
            out[f"chunk_decode_{name}"] |= _dagcbor_paths(cid, raw, ours)
        else:
            out[f"chunk_decode_{name}"] |= _dagjson_paths(raw)
    key = PrivateKey.generate()
    ad = sign_advertisement(
        Advertisement(
            provider=str(key.peer_id()),
            addresses=("/ip4/127.0.0.1/tcp/9999",),
            entries=Link.make(DAG_JSON, b"entries"),
            context_id=b"ctx",
            metadata=bitswap(),
        ),
        key,
    )
    cid, raw = encode_block(ad.to_node())

    ads = _rate(lambda: verify_advertisement(load_advertisement(cid, raw)))
    message = b"x" * 34
    signature = key.sign(message)
    public = key.public_key()
    verifies = _rate(lambda: public.verify(message, signature))
    out["ad_load_and_verify"] = {
        "ads_per_s": round(ads),
        "raw_ed25519_verifies_per_s": round(verifies),
        "ratio_to_raw_verify": round(ads / verifies, 3),
    }
    return out
