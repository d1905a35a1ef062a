"""The index store: bytes on disk per (multihash, context), and lookups beside raw LevelDB gets.

``run()`` writes ``PAIRS`` (multihash, context) pairs through ``IndexStore``'s write plans, with
value keys allocated as ingest allocates them (``IndexStore.allocate``), in LevelDB batches of
``BATCH`` pairs, in two shapes:

- ``big_ads``: one context per batch (16,384 multihashes per ad, as a large ad's chunk).
- ``small_ads``: one context per ``SMALL_AD`` pairs.  An index of millions of contexts looks like
  this inside a 16 KiB LevelDB block: value keys rarely repeat.  With hashed 8-byte value keys
  snappy then saved less than LevelDB's 12.5% threshold and the blocks were stored raw (51.1
  bytes per pair against 43.8 with 123 contexts); allocated keys are mostly zero bytes, which
  snappy compresses whatever the number of contexts.  The many value records cost about 0.4
  byte per pair.

Each shape then compacts LevelDB fully (``KV.compact``) and reports the database's files per pair
(and the part of it the multihash keys and the value records take), beside the raw bytes the
index writes per pair (key + value; LevelDB adds an 8-byte sequence number, 3 length bytes, the
bloom filter's 10 bits and its block index, and shares key prefixes).  Lookups: ``LOOKUPS`` random
multihashes through ``IndexStore.lookup`` beside raw plyvel ``get`` of the same index keys on the
same database (alternating rounds, best of ``ROUNDS`` each; the machine is noisy).  Finally a
tenth of the contexts is removed and the store's own compaction sweeps the dangling keys.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plyvel

from store import KV, Add, AddEach, Discard, IndexStore, Tuning, Write

__all__ = ["run"]

PAIRS = 2_000_000
BATCH = 16_384
SMALL_AD = 64
LOOKUPS = 100_000
ROUNDS = 3
PROVIDER = b"\x00\x24\x08\x01\x12\x20" + bytes(32)  # an Ed25519 peer ID's shape


def _mh(i: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(i.to_bytes(8, "big")).digest()


def _ctx(i: int, per_context: int) -> bytes:
    return b"ctx-%d" % (i // per_context)


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _raw_bytes(plan: list[Write]) -> int:
    """Key + value bytes of a write plan, an ``AddEach`` counted as the ``Add`` per key it is."""
    total = 0
    for key, op in plan:
        if isinstance(op, AddEach):
            total += sum(len(key) + len(suffix) + len(op.member) for suffix in op.suffixes)
        elif isinstance(op, Add | Discard):
            total += len(key) + len(op.member)
        else:
            total += len(key) + len(op or b"")
    return total


def _write(kv: KV, per_context: int) -> tuple[float, int]:
    """Write every pair; returns (pairs/s, key + value bytes the index writes per pair)."""
    written = 0
    index = IndexStore(kv)
    start = time.perf_counter()
    for first in range(0, PAIRS, BATCH):
        writes: list[Write] = []
        for c in range(first, min(PAIRS, first + BATCH), per_context):
            ctx = _ctx(c, per_context)
            vk = index.allocate(PROVIDER, ctx)
            writes += IndexStore.put_value_at(vk, PROVIDER, ctx, b"\x80\x12")
            mhs = [_mh(i) for i in range(c, min(PAIRS, c + per_context, first + BATCH))]
            plan = IndexStore.put_multihashes(vk, mhs)
            written += _raw_bytes(plan)
            writes += plan
        kv.write_batch(writes)
    return PAIRS / (time.perf_counter() - start), written // PAIRS


def _rate(fn: Callable[[bytes], object], args: list[bytes]) -> float:
    for arg in args:  # warm the block cache
        fn(arg)
    start = time.perf_counter()
    for arg in args:
        fn(arg)
    return len(args) / (time.perf_counter() - start)


def _lookups(path: Path) -> dict[str, Any]:
    rng = random.Random(5)
    picks = rng.sample(range(PAIRS), LOOKUPS)
    mhs = [_mh(i) for i in picks]
    keys = [IndexStore.multihash_key(mh) for mh in mhs]
    t = Tuning()
    raw_rates, our_rates = [], []
    for _ in range(ROUNDS):
        db = plyvel.DB(
            str(path),
            write_buffer_size=t.write_buffer_size,
            lru_cache_size=t.lru_cache_size,
            bloom_filter_bits=t.bloom_filter_bits,
            block_size=t.block_size,
            block_restart_interval=t.block_restart_interval,
            max_open_files=t.max_open_files,
            max_file_size=t.max_file_size,
            compression=t.compression,
        )
        raw_rates.append(_rate(db.get, keys))
        db.close()
        with KV(path, create=False) as kv:
            index = IndexStore(kv)
            our_rates.append(_rate(index.lookup, mhs))
            assert all(index.lookup(mh) for mh in mhs[:100])
    return {
        "lookups_per_s": round(max(our_rates)),
        "raw_plyvel_gets_per_s": round(max(raw_rates)),
        "ratio_to_raw": round(max(our_rates) / max(raw_rates), 3),
    }


def _sweep(path: Path, per_context: int) -> dict[str, Any]:
    contexts = sorted({_ctx(i, per_context) for i in range(0, PAIRS, per_context)})
    removed = contexts[::10]
    with KV(path, create=False) as kv:
        index = IndexStore(kv)
        removal = []
        for ctx in removed:
            vk = index.allocated(PROVIDER, ctx)
            assert vk is not None
            removal += IndexStore.remove_value(vk, PROVIDER, ctx)
        kv.write_batch(removal)
        start = time.perf_counter()
        examined = 0
        while True:
            progress = index.compact(50_000)
            examined += progress.examined
            if progress.sweep_done:
                break
        elapsed = time.perf_counter() - start
        kv.compact()
        live = PAIRS - len(removed) * per_context
        return {
            "sweep_keys_examined_per_s": round(examined / elapsed),
            "bytes_on_disk_per_live_pair_after_sweep": round(_disk(path) / live, 2),
        }


def _shape(per_context: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        with KV(path) as kv:
            rate, written = _write(kv, per_context)
            kv.compact()
            multihash_keys, value_records = kv.disk_size(b"i"), kv.disk_size(b"v")
        disk = _disk(path)
        return {
            "pairs": PAIRS,
            "contexts": -(-PAIRS // per_context),
            "write_pairs_per_s": round(rate),
            "bytes_on_disk_per_pair": round(disk / PAIRS, 2),
            "of_which_multihash_keys": round(multihash_keys / PAIRS, 2),
            "of_which_value_records": round(value_records / PAIRS, 2),
            "raw_bytes_per_pair": written,
            "target_bytes_per_pair": 50,
            **_lookups(path),
            "target_ratio": 0.8,
            **_sweep(path, per_context),
        }


def run() -> dict[str, Any]:
    return {"big_ads": _shape(BATCH), "small_ads": _shape(SMALL_AD)}
