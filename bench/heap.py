"""``python -m bench.heap ADS [WRITE_BUFFER_MIB BLOCK_CACHE_MIB]``: ingest a chain of ADS
one-multihash ads in THIS process and print its peak RSS (which includes LevelDB's bounded
caches, opened with the ``[store]`` settings given, the defaults if none) and its peak Python
heap (tracemalloc: the indexer's own state), as one JSON object.

The chain is built by another process (``python -m bench.heap build ADS DIR``), so this
process's peak RSS is the ingest's alone, not the publisher's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
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


def main(ads: int, store: StoreConfig) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        built = subprocess.run(
            [sys.executable, "-m", "bench.heap", "build", str(ads), str(Path(tmp) / "pub")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        peer = PeerId.parse(built.stdout.strip().splitlines()[-1])
        with _served(Path(tmp) / "pub") as addr, KV(Path(tmp) / "idx", tuning=store.tuning()) as kv:
            tracemalloc.start()
            trio.run(_ingest, peer, addr, kv)
            _, heap_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"ads": ads, "peak_rss_mib": rss / 2**20, "python_heap_peak_mib": heap_peak / 2**20}


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        mib = [int(a) for a in sys.argv[2:4]]
        store = (
            StoreConfig(write_buffer_mib=mib[0], block_cache_mib=mib[1]) if mib else StoreConfig()
        )
        print(json.dumps(main(int(sys.argv[1]), store)))
