"""The embedded LevelDB key-value store every package persists through (``KVStore``'s backend).

Rules this module keeps (and ``protocol.py``'s, which every backend keeps):

- One process owns a database: opening a locked one raises ``StoreLocked`` with a message that
  names the directory, so the CLI can say "the daemon holds the lock".
- LevelDB is opened tuned, never with the defaults (measured on this machine in
  ``../shared/DEPENDENCIES.md`` and ``docs/performance.md``'s growth section): 64 MiB write
  buffer, 256 MiB LRU block cache, 10-bit bloom filters (point reads of absent keys skip the data
  blocks), 16 KiB blocks.  The defaults stall single batches for seconds.
  ``block_restart_interval`` is 32, not 16: a restart point stores its key whole, and half as many
  of them save 0.3 bytes per index key (``bench/store.py``). Tables are snappy-compressed by
  default: it saves about a fifth of the disk (the keys are random, but allocated value keys and
  sequence numbers are mostly zero bytes: 41 bytes a pair instead of 51, and the store bench's
  target is 50) at the price of every compaction's and every block-cache miss's (de)compression,
  40% of ingest's CPU at 5M multihashes. ``compression=None`` (``[store] compress = false``)
  trades that disk for CPU: an uncompressed block of a memory-mapped table is read straight from
  the mapping, with no copy, no decompression and no block-cache entry, so lookups past the block
  cache stay near page-cache speed (with 8 MiB tables, 3x the lookups per CPU second at 50M:
  ``bench/growth.py`` runs so). Tables are 8 MiB (``max_file_size``, LevelDB's default 2): LevelDB
  maps at most 1,000 tables (more are read with ``pread`` into the block cache) and keeps
  ``max_open_files`` less 10 open, so a 2.6 GB index of 50M multihashes stays within both with 311
  tables instead of about 1,200.
- What LevelDB holds in RAM is bounded by ``Tuning`` (the daemon's ``[store]`` section): up to
  two memtables of ``write_buffer_size`` (the one written and the one being flushed), the block
  cache's ``lru_cache_size``, and per open table (``max_open_files`` of them) its index block and
  bloom filter when they are compressed or read with ``pread``, about 70 KiB per 2 MiB table of
  index keys (measured; uncompressed tables in the mapping keep them in the mapped pages
  instead).  Nothing else of LevelDB's own memory grows with the data.  Tables are read through
  mmap, so the file pages read count in the process's RSS too (``RssFile``): page cache, which
  the kernel drops under pressure, growing with the database, not memory the process holds.
- Writes that must be atomic go through ``write_batch`` (one LevelDB WriteBatch, synced when
  ``sync=True``); there is no other multi-key write.  Batches are resolved and applied under one
  lock, so member-set operations are read-modify-writes no other batch interleaves with.  Reads
  take no lock.
- plyvel releases the GIL around every read, so a batch of n set operations (n reads) releases
  it n times.  Beside a CPU-bound thread each release can wait a whole switch interval (5 ms by
  default): 4,096 ``Add`` writes took 2.2 s there against 0.15 s for 4,096 plain puts (84 ms
  against 14 ms with ``sys.setswitchinterval(0.0001)``).  Write big set-operation batches where
  no other thread is CPU-bound, or lower the switch interval.
- plyvel exceptions are translated to ``StoreError`` subclasses here and nowhere else
  (``point_reader`` hands out plyvel's raw read for callers that fall back to ``get`` on any
  error it raises, so they still only ever see the translated ones).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from store.errors import StoreClosed, StoreCorrupted, StoreError, StoreLocked, StoreNotFound
from store.protocol import KVShortcuts, Write, apply_add_each, resolve, split_bulk, successor

__all__ = ["KV", "Tuning"]


_TOP = b"\xff" * 64  # above every key that does not start with 64 0xff bytes


@dataclass(frozen=True, slots=True)
class Tuning:
    write_buffer_size: int = 64 << 20
    lru_cache_size: int = 256 << 20
    bloom_filter_bits: int = 10
    block_size: int = 16 << 10
    block_restart_interval: int = 32
    max_open_files: int = 1000  # LevelDB's default; the daemon reserves descriptors for them
    max_file_size: int = 8 << 20  # bytes per table (LevelDB's default: 2 MiB)
    compression: str | None = "snappy"  # LevelDB's default; None: blocks as they are


def _translate(exc: Exception, path: Path) -> StoreError:
    text = (
        exc.args[0].decode(errors="replace")
        if exc.args and isinstance(exc.args[0], bytes)
        else str(exc)
    )
    if "lock" in text.lower() and ("held" in text or "Resource temporarily" in text):
        return StoreLocked(f"database {path} is in use by another process (is the daemon running?)")
    if "NotFound" in text or "does not exist" in text:
        return StoreNotFound(f"no database at {path}")
    if "Corruption" in text:
        return StoreCorrupted(f"database {path} is corrupted: {text}")
    return StoreError(f"database {path}: {text}")


class KV(KVShortcuts):
    """A LevelDB database at ``path``."""

    def __init__(self, path: str | Path, create: bool = True, tuning: Tuning = Tuning()) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # A plain attribute, not a property: ``IndexStore.lookup`` reads it on every lookup.
        self.version = 0  # KVStore.version: bumped after every applied batch
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db: Any = plyvel.DB(
                str(self.path),
                create_if_missing=create,
                write_buffer_size=tuning.write_buffer_size,
                lru_cache_size=tuning.lru_cache_size,
                bloom_filter_bits=tuning.bloom_filter_bits,
                block_size=tuning.block_size,
                block_restart_interval=tuning.block_restart_interval,
                max_open_files=tuning.max_open_files,
                max_file_size=tuning.max_file_size,
                compression=tuning.compression,
            )
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None

    def _closed(self) -> StoreClosed:
        return StoreClosed(f"database {self.path} is closed")

    def _live(self) -> Any:
        if self._db.closed:
            raise self._closed()
        return self._db

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None
        except RuntimeError:  # plyvel: "Database is closed"
            raise self._closed() from None
        return value

    def point_reader(self) -> Callable[[bytes], bytes | None]:
        """LevelDB's own point read, for hot read paths (``IndexStore.lookup``): a wrapper call
        less per read.  It raises plyvel's errors untranslated: a caller that catches one asks
        ``get`` again, which raises the translated error (``StoreClosed`` after ``close``)."""
        read: Callable[[bytes], bytes | None] = self._live().get
        return read

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        """Apply every write in ``writes`` atomically (see ``protocol.py``)."""
        db = self._live()
        with self._lock:
            rest, bulk = split_bulk(writes)
            batch = resolve(rest, self.get)
            try:
                # transaction=True: an exception inside the block discards the batch.
                with db.write_batch(sync=sync, transaction=True) as wb:
                    for key, value in batch:
                        if value is None:
                            wb.delete(key)
                        else:
                            wb.put(key, value)
                    if bulk is not None:  # no write list built: ~2x faster for a chunk
                        apply_add_each(*bulk, db.get, wb.put)
            except plyvel.Error as exc:
                raise _translate(exc, self.path) from None
            except RuntimeError:
                raise self._closed() from None
            self.version += 1

    def scan(
        self, prefix: bytes, reverse: bool = False, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order, from ``start``."""
        db = self._live()
        low, high = prefix, successor(prefix)
        if start is not None and reverse:
            stop = start + b"\x00"  # the smallest key after start
            high = stop if high is None else min(high, stop)
        elif start is not None:
            low = max(low, start)
        try:
            if reverse:
                yield from self._reverse(db, low, high)
            elif start is None:
                yield from db.iterator(prefix=prefix)
            elif high is None or low < high:
                yield from db.iterator(start=low, stop=high)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None
        except RuntimeError:
            raise self._closed() from None

    @staticmethod
    def _reverse(db: Any, low: bytes, high: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        # Not plyvel's reverse ranged iterator: in plyvel 1.5.1 it yields nothing for some
        # one-key ranges (iterator(prefix=b"p1", reverse=True) over keys p, p1, p2).
        it = db.raw_iterator()
        try:
            if high is None:
                it.seek_to_last()
            else:
                it.seek(high)
                if it.valid():
                    it.prev()
                else:
                    it.seek_to_last()
            while it.valid():
                key, value = it.item()
                if key < low:
                    return
                yield key, value
                it.prev()
        finally:
            it.close()

    def disk_size(self, prefix: bytes = b"") -> int:
        """Approximate bytes the keys under ``prefix`` take in table files (not the memtable)."""
        stop = successor(prefix) or _TOP
        try:
            size: int = self._live().approximate_size(prefix, stop)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None
        return size

    def compact(self) -> None:
        """Compact every level of the whole key range now: reclaims the space of deleted keys.

        plyvel passes an absent ``stop`` as the empty key (which compacts only level 0), so the
        range ends at ``_TOP``.
        """
        try:
            self._live().compact_range(stop=_TOP)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None

    def close(self) -> None:
        with self._lock:
            if not self._db.closed:
                self._db.close()
