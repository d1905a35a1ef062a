"""``python -m bench.heap ADS [WRITE_BUFFER_MIB BLOCK_CACHE_MIB]``: ingest a chain of ADS
one-multihash ads in THIS process and print its peak RSS (which includes LevelDB's bounded
caches, opened with the ``[store]`` settings given, the defaults if none), its peak anonymous
RSS, and its peak Python heap (tracemalloc: the indexer's own state), as one JSON object.

LevelDB reads its tables through mmap, so the pages of the database files read count in the
RSS (``RssFile``) and grow with the database; they are the kernel's page cache, dropped under
memory pressure, not the process's own memory.  The anonymous RSS (``RssAnon`` of
``/proc/self/status``, sampled every 10 ms: the kernel keeps no peak of it) is what the process
itself holds: the Python heap, LevelDB's memtables, block cache and open tables, malloc's slack.

The chain is built by another process (``python -m bench.heap build ADS DIR``), so this
process's peak RSS is the ingest's alone, not the publisher's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path

import trio

from bench.ingest import _ingest, _mh, _served
from indexer.config import StoreConfig
from indexer.publisher.chain import Publisher
from store import KV
from sync import PeerId
from sync.model.metadata import bitswap


def build(ads: int, data_dir: Path) -> None:
    pub = Publisher.init(data_dir)
    for a in range(ads):
        pub.add(f"c{a}".encode(), [_mh(a)], bitswap())
    print(str(pub.peer_id))
    pub.close()


class _AnonPeak:
    """The peak of ``RssAnon`` while it runs (a thread: trio's loop may be busy for seconds)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        status = Path("/proc/self/status")
        while not self._stop.wait(0.01):
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def __enter__(self) -> _AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(ads: int, store: StoreConfig) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        built = subprocess.run(
            [sys.executable, "-m", "bench.heap", "build", str(ads), str(Path(tmp) / "pub")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        peer = PeerId.parse(built.stdout.strip().splitlines()[-1])
        with _served(Path(tmp) / "pub") as addr, KV(Path(tmp) / "idx", tuning=store.tuning()) as kv:
            tracemalloc.start()
            with _AnonPeak() as anon:
                trio.run(_ingest, peer, addr, kv)
            _, heap_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "ads": ads,
        "peak_rss_mib": rss / 2**20,
        "peak_anon_rss_mib": anon.peak / 2**20,
        "python_heap_peak_mib": heap_peak / 2**20,
    }


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        mib = [int(a) for a in sys.argv[2:4]]
        store = (
            StoreConfig(write_buffer_mib=mib[0], block_cache_mib=mib[1]) if mib else StoreConfig()
        )
        print(json.dumps(main(int(sys.argv[1]), store)))
