"""``python -m bench.heap ADS [WRITE_BUFFER_MIB BLOCK_CACHE_MIB]``: the peak memory of ingesting a
chain of ADS one-multihash ads, with LevelDB opened at the ``[store]`` settings given (the
defaults if none), as one JSON object.

The chain is built once by a process of its own (``python -m bench.heap build ADS DIR``), then
ingested twice, each time by a fresh process (``python -m bench.heap ingest DIR PEER WB BC
MODE``) that holds nothing but the ingest (the publisher serves from a process of its own):

- ``rss``: the peak RSS (``ru_maxrss``), and, sampled every 10 ms from ``/proc/self/status``
  (the kernel keeps no peak of them), the peak anonymous RSS (``RssAnon``: what the process
  itself holds, the Python heap, LevelDB's memtables, block cache and open tables, malloc's
  slack) and the peak file-backed RSS (``RssFile``).  LevelDB reads its tables through mmap, so
  the pages of the table files it reads (compactions included) count in the RSS; they are the
  kernel's page cache, dropped under memory pressure, not the process's own memory.  At each
  new peak it also reads ``/proc/self/smaps`` and splits the RSS into anonymous memory, the
  LevelDB table mappings (``*.ldb``) and every other file mapping (the interpreter's and the
  libraries' code): ``peak_parts_mib``, the parts at the highest sample.
- ``heap``: the peak Python heap (tracemalloc: the indexer's own state).  Its own run, as
  tracemalloc keeps a trace per live allocation, memory the product never has, which would
  count in the RSS of the other run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import trio

from bench.ingest import _ingest, _mh, _served
from indexer.config import StoreConfig
from indexer.publisher.chain import Publisher
from store import KV
from sync import PeerId
from sync.model.metadata import bitswap

MIB = 2**20


def build(ads: int, data_dir: Path) -> None:
    pub = Publisher.init(data_dir)
    for a in range(ads):
        pub.add(f"c{a}".encode(), [_mh(a)], bitswap())
    print(str(pub.peer_id))
    pub.close()


def _status() -> dict[str, int]:
    """``RssAnon`` and ``RssFile`` of ``/proc/self/status``, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) * 1024
    return out


def _parts() -> dict[str, int]:
    """The RSS by kind of mapping (``/proc/self/smaps``), in bytes."""
    parts = {"anonymous": 0, "leveldb_tables": 0, "other_files": 0}
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
            path = fields[5] if len(fields) > 5 else ""
            if path.endswith(".ldb"):
                kind = "leveldb_tables"
            elif path.startswith("/"):
                kind = "other_files"
            else:
                kind = "anonymous"  # [heap], [stack], malloc arenas, mmapped Python arenas
        elif fields[0] == "Rss:":
            parts[kind] += int(fields[1]) * 1024
    return parts


class _Peaks:
    """Peak ``RssAnon`` and ``RssFile`` while it runs (a thread: trio's loop may be busy for
    seconds), and the RSS split by mapping at the highest sample."""

    def __init__(self) -> None:
        self.anon = self.file = self._total = 0
        self.parts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            now = _status()
            self.anon = max(self.anon, now["RssAnon"])
            self.file = max(self.file, now["RssFile"])
            total = now["RssAnon"] + now["RssFile"]
            if total > self._total + (256 << 10):  # a new peak: what it is made of
                self._total, self.parts = total, _parts()

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ingest(pub: Path, peer: PeerId, store: StoreConfig, mode: str) -> dict[str, object]:
    """Ingest the chain served from ``pub`` in this process; ``mode`` is ``rss`` or ``heap``."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        _served(pub) as addr,
        KV(Path(tmp) / "idx", tuning=store.tuning()) as kv,
    ):
        if mode == "heap":
            tracemalloc.start()
            trio.run(_ingest, peer, addr, kv)
            _, heap_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return {"python_heap_peak_mib": heap_peak / MIB}
        with _Peaks() as peaks:
            trio.run(_ingest, peer, addr, kv)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_rss_mib": rss / MIB,
        "peak_anon_rss_mib": peaks.anon / MIB,
        "peak_file_rss_mib": peaks.file / MIB,
        "peak_parts_mib": {k: round(v / MIB, 1) for k, v in peaks.parts.items()},
    }


def _run(args: Sequence[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bench.heap", *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def main(ads: int, store: StoreConfig) -> dict[str, object]:
    mib = [str(store.write_buffer_mib), str(store.block_cache_mib)]
    with tempfile.TemporaryDirectory() as tmp:
        pub = str(Path(tmp) / "pub")
        peer = _run(["build", str(ads), pub])
        out: dict[str, object] = {"ads": ads}
        for mode in ("rss", "heap"):  # a fresh process each
            out.update(json.loads(_run(["ingest", pub, peer, *mib, mode])))
    return out


def _store(mib: Sequence[str]) -> StoreConfig:
    sizes = [int(a) for a in mib]
    return (
        StoreConfig(write_buffer_mib=sizes[0], block_cache_mib=sizes[1]) if sizes else StoreConfig()
    )


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "ingest":
        pub, peer, mode = Path(sys.argv[2]), PeerId.parse(sys.argv[3]), sys.argv[6]
        print(json.dumps(ingest(pub, peer, _store(sys.argv[4:6]), mode)))
    else:
        print(json.dumps(main(int(sys.argv[1]), _store(sys.argv[2:4]))))
