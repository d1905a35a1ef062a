"""Ingest end to end beside the raw LevelDB limit, and memory against chain length.

- ``throughput``: ``indexer publisher serve`` (its own process, as a publisher is another
  machine) serves ``ADS`` ads of ``PER_AD`` multihashes over HTTP on 127.0.0.1; an in-process
  ``Ingester`` syncs and indexes them, its big blocks decoded in a decode process
  (``open_offload`` at the default ``[ingest]`` settings, warmed before the clock starts, as a
  running daemon's is).  The limit is raw plyvel ``WriteBatch`` puts of the
  same index entries (``i<mh>`` -> value key), in batches of one chunk, in the same run; the
  best of ``ROUNDS`` runs of each, every run into a fresh database.
- ``small_ads``: the same set-up with ``SMALL_ADS`` ads of one multihash each: every ad is two
  block round trips (the ad, its one-chunk entries) and little else, so this is the fetcher's
  per-request cost end to end, in ads/s; beside it, sequential block GETs through one fetcher
  against the same server (the request cost alone, and the limit: the walk of a chain learns
  each next ad from the one before, one round trip per ad; the mean of a measure just before
  and one just after the ingest), and the ratio of the two; and the CPU per ad of the
  ingesting process and of the publisher's over the ingest, with the rate the machine's
  cores could not exceed at those costs (``cpu_bound_ads_per_s``: cores / their sum).
- ``memory``: ingest (``bench.heap``) of a chain of 1k ads and of 100k ads (one multihash each),
  both with LevelDB opened at the same small ``[store]`` settings (``MEMORY_STORE``, named in
  the output): peak RSS, anonymous and file-backed RSS, and the RSS split by mapping at its
  peak, in a fresh process without tracemalloc; peak Python heap (tracemalloc) in another; and
  their ratios (the target is within 1.5x: nothing but LevelDB's bounded caches may grow with
  the chain).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import plyvel
import trio

from bench.find import _cpu
from indexer.config import StoreConfig
from indexer.ingest.engine import Ingester
from indexer.ingest.offload import open_offload
from indexer.ingest.settings import IngestConfig
from indexer.publisher.chain import Publisher
from store import KV, value_key
from sync import Link, PeerId
from sync.ipnisync.fetch import fetcher_factory
from sync.model.metadata import bitswap

ADS = 20
PER_AD = 16_384
ROUNDS = 3
SMALL_ADS = 2_000


def _mh(i: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(i.to_bytes(8, "big")).digest()


_fetcher = fetcher_factory()


class Timed(NamedTuple):
    elapsed: float  # seconds from the sync's request to the ingester's idle
    cpu: float  # this process's CPU seconds (every thread) over the same span


async def _ingest(peer: PeerId, addr: str, kv: KV) -> Timed:
    config = IngestConfig()
    async with (
        open_offload(config.decode_processes, config.decode_min_bytes) as offload,
        trio.open_nursery() as nursery,
    ):
        await offload.warm()  # as in a daemon that has been up: its decode process is
        ingester = Ingester(kv, _fetcher, config=config, offload=offload)
        await nursery.start(ingester.run)
        start, cpu = time.perf_counter(), time.process_time()
        ingester.request_sync(peer, [addr])
        await ingester.wait_idle()
        timed = Timed(time.perf_counter() - start, time.process_time() - cpu)
        nursery.cancel_scope.cancel()
    return timed


@contextmanager
def _served(data_dir: Path) -> Iterator[str]:
    """``indexer publisher serve`` in its own process (a publisher is another machine)."""
    with _serving(data_dir) as (addr, _pid):
        yield addr


@contextmanager
def _serving(data_dir: Path) -> Iterator[tuple[str, int]]:
    """``_served``, and the serving process's pid (to read its CPU time)."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "indexer", "publisher", "serve", "--data-dir", str(data_dir),
         "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        addr = str(json.loads(serve.stdout.readline())["http_multiaddr"]).rsplit("/p2p/", 1)[0]
        yield addr, serve.pid
    finally:
        serve.terminate()
        serve.wait()


def _raw_puts(path: Path, pairs: list[tuple[bytes, bytes]]) -> float:
    db = plyvel.DB(
        str(path),
        create_if_missing=True,
        write_buffer_size=64 << 20,
        lru_cache_size=256 << 20,
        bloom_filter_bits=10,
        block_size=16 << 10,
    )
    start = time.perf_counter()
    for i in range(0, len(pairs), PER_AD):
        with db.write_batch() as batch:
            for key, value in pairs[i : i + PER_AD]:
                batch.put(key, value)
    elapsed = time.perf_counter() - start
    db.close()
    return len(pairs) / elapsed


def throughput() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pub = Publisher.init(Path(tmp) / "pub")
        for a in range(ADS):
            pub.add(f"ctx{a}".encode(), [_mh(a * PER_AD + i) for i in range(PER_AD)], bitswap())
        pub.close()
        total = ADS * PER_AD
        vks = [value_key(pub.peer_id.raw, f"ctx{a}".encode()) for a in range(ADS)]
        pairs = [(b"i" + _mh(a * PER_AD + i), vks[a]) for a in range(ADS) for i in range(PER_AD)]
        elapsed, raw = float("inf"), 0.0
        with _served(Path(tmp) / "pub") as addr:
            for run in range(ROUNDS):  # best of ROUNDS, each into a fresh database, both sides
                with KV(Path(tmp) / f"indexer{run}") as kv:
                    elapsed = min(elapsed, trio.run(_ingest, pub.peer_id, addr, kv).elapsed)
                raw = max(raw, _raw_puts(Path(tmp) / f"raw{run}", pairs))
    ours = total / elapsed
    return {
        "ads": ADS,
        "multihashes": total,
        "ingest_multihashes_per_s": round(ours),
        "raw_plyvel_writebatch_puts_per_s": round(raw),
        "ratio_to_raw": round(ours / raw, 3),
        "target_ratio": 0.6,
    }


async def _requests(peer: PeerId, addr: str, link: Link, count: int) -> float:
    """Sequential block GETs through one fetcher (the per-request cost alone), per second."""
    async with _fetcher(peer, [addr]) as fetcher:
        await fetcher.block(link)  # connected
        start = time.perf_counter()
        for _ in range(count):
            await fetcher.block(link, "Advertisement")
        return count / (time.perf_counter() - start)


def small_ads(ads: int = SMALL_ADS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pub = Publisher.init(Path(tmp) / "pub")
        for a in range(ads):
            head = pub.add(f"c{a}".encode(), [_mh(a)], bitswap()).link
        pub.close()
        with _serving(Path(tmp) / "pub") as (addr, pid), KV(Path(tmp) / "indexer") as kv:
            # The limit just before and just after the ingest, so a change of the machine's
            # load during the run moves both sides of the ratio alike.
            before = trio.run(_requests, pub.peer_id, addr, head, ads)
            served = _cpu(pid)
            elapsed, cpu = trio.run(_ingest, pub.peer_id, addr, kv)
            served = _cpu(pid) - served
            after = trio.run(_requests, pub.peer_id, addr, head, ads)
    per_s = (before + after) / 2
    return {
        "ads": ads,
        "multihashes_per_ad": 1,
        "ads_per_s": round(ads / elapsed),
        "sequential_block_requests_per_s": round(per_s),
        "sequential_block_requests_per_s_before_after": [round(before), round(after)],
        # A chain is a linked list: its walk waits one round trip per ad whatever else is in
        # flight, so one sequential GET per ad is the limit of the whole ingest.
        "ratio_to_sequential_requests": round(ads / elapsed / per_s, 3),
        # CPU per ad of the ingesting process (every thread: the event loop, the write thread,
        # LevelDB's compaction; small blocks are decoded in it, not in the decode process) and
        # of the publisher's, over the ingest: whatever runs in parallel, the machine's cores
        # cannot do more ads per second than cores / the two together.
        "indexer_cpu_us_per_ad": round(cpu / ads * 1e6),
        "publisher_cpu_us_per_ad": round(served / ads * 1e6),
        "cpu_bound_ads_per_s": round((os.cpu_count() or 1) * ads / (cpu + served)),
    }


# The [store] settings both chains of ``memory`` are ingested at: small enough that LevelDB's
# bounded RAM (up to two 4 MiB memtables, an 8 MiB block cache) does not hide what grows.
MEMORY_STORE = StoreConfig(write_buffer_mib=4, block_cache_mib=8)


def _measure(ads: int, store: StoreConfig) -> dict[str, Any]:
    """``bench.heap``: the chain built once, then ingested by a fresh process for the RSS and
    another for the Python heap, so peaks do not carry over and tracemalloc's own traces are
    not in the RSS."""
    mib = [str(store.write_buffer_mib), str(store.block_cache_mib)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.heap", str(ads), *mib],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _pair(a: dict[str, Any], b: dict[str, Any], name: str, digits: int = 1) -> list[float]:
    return [round(a[name], digits), round(b[name], digits)]


def memory(
    small: int = 1_000, large: int = 100_000, store: StoreConfig = MEMORY_STORE
) -> dict[str, Any]:
    a, b = _measure(small, store), _measure(large, store)
    return {
        "chain_ads": [small, large],
        "store": msgspec.to_builtins(store),  # the [store] settings of both runs
        "python_heap_peak_mib": _pair(a, b, "python_heap_peak_mib", 2),
        "python_heap_ratio": round(b["python_heap_peak_mib"] / a["python_heap_peak_mib"], 3),
        "peak_rss_mib": _pair(a, b, "peak_rss_mib"),
        "rss_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3),
        "peak_anon_rss_mib": _pair(a, b, "peak_anon_rss_mib"),
        "anon_rss_ratio": round(b["peak_anon_rss_mib"] / a["peak_anon_rss_mib"], 3),
        "peak_file_rss_mib": _pair(a, b, "peak_file_rss_mib"),
        # The RSS at each run's highest sample, by mapping: anonymous, LevelDB's table files
        # (mmapped: the pages its reads and compactions touched), every other file (code).
        "peak_parts_mib": [a["peak_parts_mib"], b["peak_parts_mib"]],
        "note": f"both chains at the same [store] settings: LevelDB's RAM is bounded by them "
        f"(up to 2 x {store.write_buffer_mib} MiB of memtable, {store.block_cache_mib} MiB of "
        "block cache, and the open tables' index blocks and filters); the RSS also counts the "
        "table files' pages LevelDB reads through mmap (page cache: leveldb_tables), the "
        "anonymous RSS does not; the Python heap is the indexer's own state, measured in a "
        "run of its own (tracemalloc's traces would count in the RSS)",
        "target_ratio_at_most": 1.5,
    }


FIGURES = {"throughput": throughput, "small_ads": small_ads, "memory": memory}

if __name__ == "__main__":  # ``python -m bench.ingest [throughput|small_ads|memory ...]``
    json.dump({n: FIGURES[n]() for n in sys.argv[1:] or ["small_ads"]}, sys.stdout, indent=2)
    sys.stdout.write("\n")
