"""Cost growth: ingest and lookups as the index grows to ``SIZES`` multihashes (1M, 10M, 50M).

A generator stands in for the network (50M multihashes over HTTP would measure the fetcher for
hours): it makes each entries chunk (``CHUNK`` random multihashes, from a seed per chunk, so any
of them can be made again for lookups) and writes it through ingest's own write path: one staged
ad per ``AD_CHUNKS`` chunks (``StagingArea`` walks and stacks), ``IndexStore.allocate`` for its
value key, ``put_value_at`` and ``put_provider`` in its first batch, one batch per chunk
(``IndexStore.put_multihashes``) with the walk's progress (``StagingArea.save_progress``), and
the last one popping the ad (``StagingArea.finish``), as ``indexer.ingest.apply`` does.  Each
batch is written in a thread while the next chunk is made, strictly one at a time, as ingest
writes a block while it fetches the next.

At each size (a checkpoint) writing pauses and the bench measures:

- the ingest rate over the last fifth of the multihashes before it (at least 1M, at most all),
  and the process's CPU time per multihash in that window (every thread: the generator, the
  writer, LevelDB's compaction; a machine shared with other work disturbs it far less);
- each write batch's latency in that window (p50, p99, max: LevelDB stalls a write when level 0
  has too many files or the memtable is full while the previous one is still being written);
- how long LevelDB's background compaction then takes to go idle (``compaction_settle_s``: the
  compaction debt the writes left; the process under 10% of a core for ``SETTLE_QUIET`` s);
- lookups: ``LOOKUPS`` multihashes known (from ``LOOKUP_CHUNKS`` random chunks written so far)
  and as many unknown, through ``IndexStore.lookup``, beside raw plyvel ``get`` of the same keys
  on the same database handle (alternating rounds, best of ``ROUNDS``, after a warming pass),
  per second of wall clock and per second of the thread's CPU;
- the LevelDB directory's bytes per pair after that pause, as LevelDB left it (no manual
  compaction: what a running node holds, the log and level-0 files included), and its files
  per level, and LevelDB's own compaction totals so far (seconds, megabytes written, and the
  write amplification: megabytes written over the bytes now on disk).

The headline figures are the ratios of the largest size's rates to the smallest's (targets:
ingest >= 0.7, lookups >= 0.7); ``ingest_cpu_ratio`` and ``lookup_cpu_ratio`` are the same
from CPU time.  Sizes: ``BENCH_GROWTH_SIZES`` (``"1M,10M,50M"``; ``k`` and ``M`` suffixes) or
the ``sizes`` argument; each checkpoint's figures also go to stderr as one JSON line when
measured (a 50M run takes most of an hour).  The database goes under ``BENCH_GROWTH_DIR``
(default the system's temporary directory), which must have room for ``BYTES_NEEDED_PER_PAIR``
bytes per multihash (the bench refuses before it writes anything otherwise).  ``build`` is the
generator alone, for ``bench.recovery``'s index on disk.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchRefused
from staging import Entry, StagedAd, StagingArea
from store import KV, IndexStore, ProviderRecord, Tuning, Write
from sync import Link
from sync.model.cid import DAG_JSON

__all__ = [
    "BYTES_NEEDED_PER_PAIR",
    "build",
    "check_disk",
    "parse_sizes",
    "run",
]

SIZES = (1_000_000, 10_000_000, 50_000_000)
CHUNK = 16_384  # multihashes per entries chunk (the publisher's chunk size)
AD_CHUNKS = 16  # chunks per ad: 262,144 multihashes
LOOKUPS = 20_000
LOOKUP_CHUNKS = 200
ROUNDS = 3
TARGET_RATIO = 0.7
# LevelDB holds about 45 bytes a pair once compacted; room for uncompacted levels and a
# compaction's output beside its inputs.
BYTES_NEEDED_PER_PAIR = 120
SETTLE_QUIET = 0.5  # seconds of (nearly) no CPU that say LevelDB's compaction is idle
SETTLE_MAX = 600.0
SPARE_BYTES = 1 << 30
PROVIDER = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))  # an Ed25519 peer ID's shape
PUBLISHER = PROVIDER
METADATA = b"\x80\x12"  # bitswap
UNKNOWN_SEED = 1 << 40  # chunk seeds from here on are never written
# The store's defaults but uncompressed tables (``[store] compress = false``): what an operator
# of a big index sets, a fifth more disk for less CPU per multihash (store/kv.py's docstring).
STORE = Tuning(compression=None)


def parse_sizes(text: str) -> list[int]:
    """``"200k,1M,2M"`` -> ``[200000, 1000000, 2000000]`` (ascending, each a positive count)."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:].lower(), 1)
        digits = part[:-1] if scale != 1 else part
        try:
            sizes.append(int(float(digits) * scale))
        except ValueError:
            raise BenchRefused(f"bad size {part!r} in {text!r} (e.g. 1M,10M,50M)") from None
    if not sizes or sizes != sorted(sizes) or sizes[0] <= 0:
        raise BenchRefused(f"sizes must be positive and ascending: {text!r}")
    return sizes


def check_disk(where: Path, pairs: int) -> int:
    """The free bytes under ``where``; ``BenchRefused`` when fewer than ``pairs`` need."""
    free = shutil.disk_usage(where).free
    need = pairs * BYTES_NEEDED_PER_PAIR + SPARE_BYTES
    if free < need:
        raise BenchRefused(
            f"{where} has {free / 2**30:.1f} GiB free; {pairs:,} multihashes need about "
            f"{need / 2**30:.1f} GiB (set BENCH_GROWTH_DIR to a roomier place, or smaller "
            "BENCH_GROWTH_SIZES)"
        )
    return free


def chunk(seed: int) -> list[bytes]:
    """Entries chunk ``seed``: ``CHUNK`` sha2-256-shaped multihashes, the same every time."""
    blob = random.Random(seed).randbytes(32 * CHUNK)
    return [b"\x12\x20" + blob[at : at + 32] for at in range(0, len(blob), 32)]


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


@dataclass
class _Writer:
    """Ingest's write path over one ``KV``: staged ads, each written chunk by chunk."""

    kv: KV
    ad_chunks: int = AD_CHUNKS
    staging: StagingArea = field(init=False)
    index: IndexStore = field(init=False)
    written: int = 0  # multihashes
    chunks: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per batch, since the mark
    partial: set[int] = field(default_factory=set)  # chunks cut short at a checkpoint
    _ads: int = 0
    _entry: Entry | None = None
    _vk: bytes = b""

    def __post_init__(self) -> None:
        self.staging = StagingArea(self.kv)
        self.index = IndexStore(self.kv)

    def stage(self, ads: int) -> None:
        """Stage ``ads`` more ads in one committed walk (what a sync would have left)."""
        cids = [Link.make(DAG_JSON, b"growth ad %d" % (self._ads + i)).raw for i in range(ads)]
        walk = self.staging.begin_walk(PUBLISHER, ["/ip4/127.0.0.1/tcp/9/http"], cids[-1])
        # Position 0 is the newest ad; the oldest (highest position) is applied first.
        items = [(PROVIDER, ads - 1 - i, StagedAd(cid, b"")) for i, cid in enumerate(cids)]
        self.staging.spill(walk, items)
        self.staging.commit_walk(walk, {PROVIDER: ads}, base_seq=self.staging.commit_seq())
        self._ads += ads

    def batch(self, mhs: list[bytes]) -> Callable[[], None]:
        """The write of the next chunk (built now, in the caller's thread; run it once)."""
        at = self.chunks % self.ad_chunks
        if at == 0:
            self._entry = self.staging.next_entry(PROVIDER)
        entry = self._entry
        assert entry is not None, "stage() more ads first"
        writes: list[Write] = []
        if at == 0:  # the ad's first batch: its value record and the provider's registry record
            ctx = b"growth %d" % (self.chunks // self.ad_chunks)
            self._vk = self.index.allocate(PROVIDER, ctx)
            record = ProviderRecord(publisher=PUBLISHER, last_ad=entry.ad.cid)
            writes += IndexStore.put_value_at(self._vk, PROVIDER, ctx, METADATA)
            writes += IndexStore.put_provider(PROVIDER, record)
        writes += IndexStore.put_multihashes(self._vk, mhs)
        last = at == self.ad_chunks - 1
        progress = b"chunk %d" % at  # stands in for the walk's encoded state

        def write() -> None:
            start = time.perf_counter()
            if last:
                self.staging.finish(entry, ok=True, writes=writes)
            else:
                self.staging.save_progress(entry, progress, writes)
            self.latencies.append(time.perf_counter() - start)

        if len(mhs) < CHUNK:
            self.partial.add(self.chunks)
        self.chunks += 1
        self.written += len(mhs)
        return write


def _grow(writer: _Writer, pairs: int, pool: ThreadPoolExecutor) -> None:
    """Write chunks until ``pairs`` multihashes are in: chunk N+1 is made while N is written."""
    chunks = writer.chunks + -(-(pairs - writer.written) // CHUNK)
    need_ads = -(-chunks // writer.ad_chunks) - writer._ads
    if need_ads > 0:
        writer.stage(need_ads)
    pending: Future[None] | None = None
    while writer.written < pairs:
        mhs = chunk(writer.chunks)[: pairs - writer.written]
        if pending is not None and writer.chunks % writer.ad_chunks == 0:
            pending.result()  # a worker takes its next ad once the last one is popped
            pending = None
        write = writer.batch(mhs)
        if pending is not None:
            pending.result()
        pending = pool.submit(write)
    if pending is not None:
        pending.result()


def build(path: Path, pairs: int, ad_chunks: int = AD_CHUNKS) -> None:
    """An index of ``pairs`` multihashes at ``path`` (a LevelDB directory), through ingest's
    write path; no ad left staged by it."""
    with KV(path, tuning=STORE) as kv, ThreadPoolExecutor(1) as pool:
        writer = _Writer(kv, ad_chunks)
        _grow(writer, pairs, pool)
        # The last ad, when cut short, stays staged mid-ad: pop it as a finished ad would be.
        if writer.chunks % ad_chunks and writer._entry is not None:
            writer.staging.finish(writer._entry, ok=True)


def _rate(fn: Callable[[bytes], object], args: Sequence[bytes]) -> tuple[float, float]:
    """Calls per second of wall clock, and per second of this thread's CPU (which a machine
    shared with other work disturbs far less)."""
    start, cpu = time.perf_counter(), time.thread_time()
    for arg in args:
        fn(arg)
    return len(args) / (time.perf_counter() - start), len(args) / (time.thread_time() - cpu)


def _settle(quiet: float) -> float:
    """Wait until LevelDB's background compaction is idle: the process uses under 10% of a core
    over ``quiet`` seconds (nothing else of it runs meanwhile); the seconds it took."""
    start = time.perf_counter()
    while time.perf_counter() - start < SETTLE_MAX:
        cpu = time.process_time()
        time.sleep(quiet)
        if time.process_time() - cpu < 0.1 * quiet:
            break
    return time.perf_counter() - start


def _probes(full: list[int], rng: random.Random, lookups: int) -> tuple[list[bytes], list[bytes]]:
    """(known, unknown) multihashes, ``lookups`` of each, known from random chunks of ``full``."""
    seeds = rng.sample(full, min(len(full), LOOKUP_CHUNKS, max(1, lookups // 10)))
    per = -(-lookups // len(seeds))
    known: list[bytes] = []
    for seed in seeds:
        known += rng.sample(chunk(seed), per)
    unknown: list[bytes] = []
    for seed in range(UNKNOWN_SEED, UNKNOWN_SEED + len(seeds)):
        unknown += rng.sample(chunk(seed), per)
    rng.shuffle(known)
    rng.shuffle(unknown)
    return known[:lookups], unknown[:lookups]


def _lookups(writer: _Writer, rng: random.Random, lookups: int) -> dict[str, Any]:
    kv = writer.kv
    full = [c for c in range(writer.chunks) if c not in writer.partial]
    known, unknown = _probes(full, rng, lookups)
    index = IndexStore(kv)
    raw_get = kv._db.get  # the very handle (and block cache) the store reads
    assert all(index.lookup(mh) for mh in known[:100]) and not index.lookup(unknown[0])
    keys = [IndexStore.multihash_key(mh) for mh in known]
    unknown_keys = [IndexStore.multihash_key(mh) for mh in unknown]
    best: dict[str, float] = {}
    for _ in range(ROUNDS + 1):  # the first round warms the block cache
        for name, fn, args in [
            ("lookups", index.lookup, known),
            ("raw_gets", raw_get, keys),
            ("unknown_lookups", index.lookup, unknown),
            ("raw_unknown_gets", raw_get, unknown_keys),
        ]:
            wall, cpu = _rate(fn, args)
            best[f"{name}_per_s"] = max(best.get(f"{name}_per_s", 0.0), wall)
            best[f"{name}_per_cpu_s"] = max(best.get(f"{name}_per_cpu_s", 0.0), cpu)
    out: dict[str, Any] = {name: round(rate) for name, rate in best.items()}
    out["ratio_to_raw"] = round(best["lookups_per_s"] / best["raw_gets_per_s"], 3)
    out["unknown_ratio_to_raw"] = round(
        best["unknown_lookups_per_s"] / best["raw_unknown_gets_per_s"], 3
    )
    return out


def _levels(kv: KV) -> list[int]:
    db = kv._db  # LevelDB's own properties
    counts = [int(db.get_property(b"leveldb.num-files-at-level%d" % n) or 0) for n in range(7)]
    while counts and counts[-1] == 0:
        counts.pop()
    return counts


def _compactions(kv: KV, disk: int) -> dict[str, Any]:
    """LevelDB's own compaction totals so far (``leveldb.stats``): seconds spent, megabytes
    written (memtable flushes included), and that over the bytes on disk now (each byte on
    disk was written about this many times: the write amplification)."""
    text = kv._db.get_property(b"leveldb.stats") or b""  # LevelDB's own properties
    seconds = written = 0.0
    for line in text.decode().splitlines():
        cells = line.split()
        if len(cells) == 6 and cells[0].isdigit():  # Level Files Size(MB) Time Read Write
            seconds += float(cells[3])
            written += float(cells[5])
    return {
        "seconds": round(seconds, 1),
        "written_mb": round(written),
        "write_amplification": round(written * 2**20 / disk, 1) if disk else None,
    }


def _checkpoint(
    writer: _Writer,
    path: Path,
    started: float,
    window: tuple[float, float],
    lookups: int,
    quiet: float,
) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in writer.latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    settle = _settle(quiet)
    return {
        "multihashes": writer.written,
        "ingest_multihashes_per_s": round(window[0]),
        "ingest_cpu_us_per_multihash": round(window[1], 3),
        "compaction_settle_s": round(settle, 1),
        "write_batch_ms": {
            "batches": len(ms),
            "p50": round(statistics.median(ms), 2),
            "p99": round(p99, 2),
            "max": round(ms[-1], 2),
        },
        **_lookups(writer, random.Random(writer.written), lookups),
        "disk_bytes_per_pair_as_is": round(_disk(path) / writer.written, 2),
        "files_per_level": _levels(writer.kv),
        "compactions": _compactions(writer.kv, _disk(path)),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def _sizes(sizes: Sequence[int] | None) -> list[int]:
    if sizes is not None:
        return list(sizes)
    env = os.environ.get("BENCH_GROWTH_SIZES")
    return parse_sizes(env) if env else list(SIZES)


def _windows(sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(start of the measured window, checkpoint) per size: its last fifth, >= 1M, <= all."""
    previous = 0
    for size in sizes:
        span = min(size, max(size // 5, 1_000_000))
        yield max(previous, size - span), size
        previous = size


def run(
    sizes: Sequence[int] | None = None, lookups: int = LOOKUPS, quiet: float = SETTLE_QUIET
) -> dict[str, Any]:
    sizes = _sizes(sizes)
    where = Path(os.environ.get("BENCH_GROWTH_DIR") or tempfile.gettempdir())
    free = check_disk(where, sizes[-1])
    started = time.perf_counter()
    points = []
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        path = Path(tmp) / "index"
        with KV(path, tuning=STORE) as kv, ThreadPoolExecutor(1) as pool:
            writer = _Writer(kv)
            for start, size in _windows(sizes):
                _grow(writer, start, pool)  # unmeasured up to the window
                writer.latencies = []
                t0, cpu0, n0 = time.perf_counter(), time.process_time(), writer.written
                _grow(writer, size, pool)
                n = writer.written - n0
                rate = n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n * 1e6
                points.append(_checkpoint(writer, path, started, rate, lookups, quiet))
                print(json.dumps(points[-1]), file=sys.stderr, flush=True)  # a long run's progress
    first, last = points[0], points[-1]
    ingest = last["ingest_multihashes_per_s"] / first["ingest_multihashes_per_s"]
    lookup = last["lookups_per_s"] / first["lookups_per_s"]
    cpu = first["ingest_cpu_us_per_multihash"] / last["ingest_cpu_us_per_multihash"]
    return {
        "sizes": sizes,
        "chunk": CHUNK,
        "store_compression": STORE.compression,  # the one setting not the daemon's default
        "multihashes_per_ad": CHUNK * AD_CHUNKS,
        "disk_free_gib_before": round(free / 2**30, 1),
        "checkpoints": points,
        "ingest_ratio": round(ingest, 3),
        "lookup_ratio": round(lookup, 3),
        "unknown_lookup_ratio": round(
            last["unknown_lookups_per_s"] / first["unknown_lookups_per_s"], 3
        ),
        "raw_gets_ratio": round(last["raw_gets_per_s"] / first["raw_gets_per_s"], 3),
        "ingest_cpu_ratio": round(cpu, 3),
        "lookup_cpu_ratio": round(last["lookups_per_cpu_s"] / first["lookups_per_cpu_s"], 3),
        "ratio_of": f"{sizes[-1]:,} / {sizes[0]:,} multihashes",
        "target_ratio": TARGET_RATIO,
        "seconds": round(time.perf_counter() - started, 1),
    }
