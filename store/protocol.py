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
  ``k`` exists when the batch applies.  ``(prefix, AddEach(m, suffixes))`` is ``(prefix + s,
  Add(m))`` for each suffix, in one write: what ingest writes for a chunk of multihashes, and
  what a backend may apply without building a write per key (``split_bulk``).  A backend
  resolves these under its write lock, so concurrent batches never lose each other's members
  (LevelDB has no merge operator).
- ``scan(prefix, reverse, start)`` yields ``(key, value)`` for keys starting with ``prefix``, in
  key order (descending when ``reverse``), from a snapshot taken when iteration starts; ``start``
  skips the keys before it in that order (forward: keys >= start; reverse: keys <= start).
- ``version`` changes after every applied batch: equal versions mean nothing was written between.
- After ``close()`` every operation raises ``StoreClosed``; ``close()`` twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, cast

from store.errors import StoreError

__all__ = [
    "Add",
    "AddEach",
    "Discard",
    "KVShortcuts",
    "KVStore",
    "Put",
    "Write",
    "apply_add_each",
    "members",
    "resolve",
    "split_bulk",
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


@dataclass(frozen=True, slots=True)
class AddEach:
    """Insert ``member`` into the member set at ``prefix + s`` for each ``s`` of ``suffixes``."""

    member: bytes
    suffixes: Sequence[bytes]


# One mutation of a batch: (key, value) puts, (key, None) deletes, (key, Add | Discard), and
# (prefix, AddEach).
Write = tuple[bytes, bytes | Add | Discard | AddEach | None]
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
    batch = _expand(writes)
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
            assert not isinstance(op, AddEach)  # _expand turned it into Adds
            if key in state:
                state[key] = op
                plain.add(key)
            out.append((key, op))
    out.extend((key, value) for key, value in state.items() if key in plain or value != stored[key])
    return out


def _expand(writes: Iterable[Write]) -> list[Write]:
    out: list[Write] = []
    for key, op in writes:
        if isinstance(op, AddEach):
            add = Add(op.member)
            out.extend((key + suffix, add) for suffix in op.suffixes)
        else:
            out.append((key, op))
    return out


def split_bulk(writes: Iterable[Write]) -> tuple[list[Write], tuple[bytes, AddEach] | None]:
    """The batch without its ``AddEach``, and that write, when the backend may apply it apart.

    It may when the batch has exactly one ``AddEach`` and no other write touches any of its
    keys: then its ``Add``s commute with every other write, and can be resolved and applied
    after them, key by key, with no write list built for them.  Otherwise the ``AddEach`` stays
    in the batch (``resolve`` expands it) and None is returned.
    """
    batch = list(writes)
    bulk = [i for i, (_, op) in enumerate(batch) if isinstance(op, AddEach)]
    if len(bulk) != 1:
        return batch, None
    prefix, op = batch[bulk[0]]
    assert isinstance(op, AddEach)
    rest = batch[: bulk[0]] + batch[bulk[0] + 1 :]
    touched = [key[len(prefix) :] for key, _ in rest if key.startswith(prefix)]
    if touched:
        suffixes = set(op.suffixes)
        if any(suffix in suffixes for suffix in touched):
            return batch, None
    return rest, (prefix, op)


def apply_add_each(
    prefix: bytes,
    op: AddEach,
    read: Callable[[bytes], bytes | None],
    put: Callable[[bytes, bytes], object],
) -> None:
    """Resolve and apply ``split_bulk``'s write: ``put`` each member set that changes.

    Keys are read in sorted order (LevelDB answers a sorted run of reads much faster); the
    caller holds its write lock, as for ``resolve``.
    """
    member = op.member
    for suffix in sorted(op.suffixes):
        key = prefix + suffix
        current = read(key)
        if current is None:
            put(key, member)
        elif current != member:
            merged = _add(current, member)
            if merged != current:
                put(key, merged)
