"""The embedded LevelDB key-value store every package persists through.

Rules this module keeps:

- One process owns a database: opening a locked one raises ``StoreLocked`` with a message that
  names the directory, so the CLI can say "the daemon holds the lock".
- LevelDB is opened tuned, never with the defaults (measured on this machine in
  ``../shared/DEPENDENCIES.md``): 64 MiB write buffer, 256 MiB LRU block cache, 10-bit bloom
  filters, 16 KiB blocks.  The defaults stall single batches for seconds.
- Writes that must be atomic go through ``write_batch`` (one LevelDB WriteBatch, synced when
  ``sync=True``); there is no other multi-key write.
- plyvel exceptions are translated to ``StoreError`` subclasses here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import plyvel

from .errors import StoreClosed, StoreCorrupted, StoreError, StoreLocked, StoreNotFound

__all__ = ["KV", "Tuning", "Write"]

# One mutation of a batch: (key, value) puts, (key, None) deletes.
Write = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class Tuning:
    write_buffer_size: int = 64 << 20
    lru_cache_size: int = 256 << 20
    bloom_filter_bits: int = 10
    block_size: int = 16 << 10


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


class KV:
    """A LevelDB database at ``path``."""

    def __init__(self, path: str | Path, create: bool = True, tuning: Tuning = Tuning()) -> None:
        self.path = Path(path)
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
            )
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None

    def _live(self) -> Any:
        if self._db is None or self._db.closed:
            raise StoreClosed(f"database {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._live().get(key)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None
        return value

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        """Apply every put and delete in ``writes`` atomically."""
        db = self._live()
        try:
            with db.write_batch(sync=sync) as batch:
                for key, value in writes:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        self.write_batch([(key, value)], sync=sync)

    def delete(self, key: bytes, sync: bool = False) -> None:
        self.write_batch([(key, None)], sync=sync)

    def scan(self, prefix: bytes, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        try:
            yield from self._live().iterator(prefix=prefix, reverse=reverse)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from None

    def close(self) -> None:
        if self._db is not None and not self._db.closed:
            self._db.close()

    def __enter__(self) -> KV:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
