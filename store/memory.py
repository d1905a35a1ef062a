"""``MemoryKV``: the in-memory ``KVStore`` backend, for tests and tools that need no files.

Rules this module keeps (``protocol.py``'s, checked against LevelDB by the conformance suite):

- Keys are kept sorted (a dict plus a ``bisect``-maintained sorted key list), so scans are in
  bytewise key order, forward or reverse, exactly as LevelDB iterates.
- ``write_batch`` resolves the whole batch (``protocol.resolve``) under the write lock before
  changing anything, so a failing batch leaves no trace and set operations never interleave.
- A scan copies its range when iteration starts: later writes never show up in it, as a LevelDB
  iterator's implicit snapshot behaves.
- Everything raises ``StoreClosed`` after ``close()``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from store.errors import StoreClosed
from store.protocol import KVShortcuts, Write, resolve, successor

__all__ = ["MemoryKV"]


class MemoryKV(KVShortcuts):
    """A ``KVStore`` held in a dict; nothing survives the object."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted
        self._lock = threading.Lock()
        self._version = 0
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("in-memory database is closed")

    @property
    def version(self) -> int:
        return self._version

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._data.get(key)

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        self._check()
        with self._lock:
            batch = resolve(writes, self._data.get)
            for key, value in batch:
                if not isinstance(key, bytes) or not isinstance(value, bytes | None):
                    raise TypeError(f"keys and values must be bytes: {key!r}: {value!r}")
            for key, value in batch:
                if value is None:
                    if self._data.pop(key, None) is not None:
                        del self._keys[bisect_left(self._keys, key)]
                else:
                    if key not in self._data:
                        self._keys.insert(bisect_left(self._keys, key), key)
                    self._data[key] = value
            self._version += 1

    def scan(
        self, prefix: bytes, reverse: bool = False, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        high = successor(prefix)
        with self._lock:  # a consistent copy: no batch is half applied
            keys = self._keys
            lo = bisect_left(keys, prefix)
            hi = len(keys) if high is None else bisect_left(keys, high)
            if start is not None and reverse:
                hi = min(hi, bisect_right(keys, start))
            elif start is not None:
                lo = max(lo, bisect_left(keys, start))
            items = [(key, self._data[key]) for key in keys[lo:hi]]
        yield from reversed(items) if reverse else items

    def close(self) -> None:
        self._closed = True
