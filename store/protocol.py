"""The key-value contract (``KVStore``) and the batch semantics every backend shares.

Rules every backend keeps (``tests/store/test_kv_conformance.py`` checks both backends):

- Keys and values are bytes (anything else raises ``TypeError``); key order is bytewise.
- ``write_batch`` is atomic: all of its writes apply or none does.  It materializes and resolves
  the writes (``resolve``) before applying anything, so an iterator that raises midway, or a bad
  write, applies nothing.  Writes to one key apply in batch order.
- A write is ``(key, value)`` (put), ``(key, None)`` (delete), or a member-set operation:
  ``(key, Add(m))`` / ``(key, Discard(m))``.  A member set is a value holding distinct members of
  one width, concatenated in byte order; ``Add`` inserts ``m`` if absent, ``Discard`` removes it
  and deletes the key when the set becomes empty.  ``Discard(m, unless=k)`` keeps ``m`` if key
  ``k`` exists when the batch applies.  A backend resolves these under its write lock, so
  concurrent batches never lose each other's members (LevelDB has no merge operator).
- ``scan(prefix, reverse, start)`` yields ``(key, value)`` for keys starting with ``prefix``, in
  key order (descending when ``reverse``), from a snapshot taken when iteration starts; ``start``
  skips the keys before it in that order (forward: keys >= start; reverse: keys <= start).
- ``version`` changes after every applied batch: equal versions mean nothing was written between.
- After ``close()`` every operation raises ``StoreClosed``; ``close()`` twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, cast

from .errors import StoreError

__all__ = [
    "Add",
    "Discard",
    "KVShortcuts",
    "KVStore",
    "Put",
    "Write",
    "members",
    "resolve",
    "successor",
]


@dataclass(frozen=True, slots=True)
class Add:
    """Insert ``member`` into the member set stored at the write's key."""

    member: bytes


@dataclass(frozen=True, slots=True)
class Discard:
    """Remove ``member`` from the member set at the key, unless key ``unless`` exists."""

    member: bytes
    unless: bytes | None = None


# One mutation of a batch: (key, value) puts, (key, None) deletes, (key, Add | Discard).
Write = tuple[bytes, bytes | Add | Discard | None]
# What a batch resolves to: plain puts and deletes only.
Put = tuple[bytes, bytes | None]


class KVShortcuts:
    """``put``, ``delete`` and the context manager, written once over ``write_batch``/``close``."""

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        self.write_batch([(key, value)], sync=sync)

    def delete(self, key: bytes, sync: bool = False) -> None:
        self.write_batch([(key, None)], sync=sync)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class KVStore(Protocol):
    """An ordered byte-key store with atomic batches: LevelDB (``KV``) or memory (``MemoryKV``)."""

    @property
    def version(self) -> int: ...

    def get(self, key: bytes) -> bytes | None: ...

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None: ...

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None: ...

    def delete(self, key: bytes, sync: bool = False) -> None: ...

    def scan(
        self, prefix: bytes, reverse: bool = False, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def members(value: bytes, width: int) -> list[bytes]:
    """The members of a member set of ``width``-byte members."""
    if width <= 0 or len(value) % width:
        raise StoreError(f"a {len(value)}-byte value is not a set of {width}-byte members")
    return [value[i : i + width] for i in range(0, len(value), width)]


def _add(current: bytes | None, member: bytes) -> bytes:
    if not current:
        return member
    if current == member:
        return current
    items = members(current, len(member))
    if member in items:
        return current
    return b"".join(sorted([*items, member]))


def _discard(current: bytes | None, member: bytes) -> bytes | None:
    if not current:
        return None
    items = members(current, len(member))
    if member not in items:
        return current
    items.remove(member)
    return b"".join(items) or None


def resolve(writes: Iterable[Write], read: Callable[[bytes], bytes | None]) -> list[Put]:
    """The puts and deletes that applying ``writes`` in order amounts to.

    ``read`` returns a key's stored value; the caller holds its write lock until the result is
    applied.  The keys set operations need are read once each, in key order: LevelDB's memtable
    answers a sorted run of reads about ten times faster than a random one.  Set operations that
    change nothing produce no write (an idempotent replay rewrites nothing).
    """
    batch = list(writes)
    ops = [(key, op) for key, op in batch if isinstance(op, Add | Discard)]
    if not ops:
        return cast(list[Put], batch)  # the common case: plain writes only
    needed = {key for key, _ in ops}
    needed.update(op.unless for _, op in ops if isinstance(op, Discard) and op.unless is not None)
    stored = {key: read(key) for key in sorted(needed)}
    state = dict(stored)  # the value each key read has after the writes so far
    plain: set[bytes] = set()  # keys read that a plain write also sets
    out: list[Put] = []
    for key, op in batch:
        if isinstance(op, Add):
            current = state[key]
            state[key] = op.member if current is None else _add(current, op.member)
        elif isinstance(op, Discard):
            if op.unless is None or state[op.unless] is None:
                state[key] = _discard(state[key], op.member)
        else:
            if key in state:
                state[key] = op
                plain.add(key)
            out.append((key, op))
    out.extend((key, value) for key, value in state.items() if key in plain or value != stored[key])
    return out
