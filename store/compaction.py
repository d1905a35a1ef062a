"""Background compaction: a resumable sweep that drops members whose record is gone.

The index removes a context in O(1) by deleting its value record; the multihash keys that name
it keep a dangling member, which lookups skip.  ``compact`` removes those members a few keys at a
time.  It knows nothing of the index's layout: ``Sweep`` says where the member sets are and
which record keeps a member alive (``IndexStore.compact`` passes the index's).

Rules this module keeps:

- A call examines at most ``budget`` keys, in key order, then returns: the caller runs it in
  small steps between other work.  It never blocks reads (they take no lock); it holds the write
  lock only while its one batch applies, like any writer.
- A sweep starts only if a removal was recorded (the ``pending`` marker ``remove_context``
  writes) since the last sweep started.  Starting deletes the marker and writes the cursor in one
  batch, before any record is checked: a removal after that marks the next sweep.
- The cursor (the next key to examine) is written in the same batch as the step's removals, so
  after a crash or a restart the sweep resumes where its last step ended; it is deleted when the
  sweep reaches the end.
- A member is removed with ``Discard(member, unless=record key)``: if its context is re-added
  between the check and the batch, it stays.  Record existence is cached for one step only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from store.protocol import Discard, KVStore, Write, members

__all__ = ["CompactionProgress", "Sweep", "compact"]


@dataclass(frozen=True, slots=True)
class Sweep:
    """Where a member-set sweep finds its keys and keeps its state."""

    prefix: bytes  # the member-set keys
    width: int  # bytes per member
    cursor_key: bytes  # the next key to examine, while a sweep runs
    pending_key: bytes  # present when a removal happened since the current sweep started
    record_key: Callable[[bytes], bytes]  # a member is dangling when this key is absent


@dataclass(frozen=True, slots=True)
class CompactionProgress:
    """What one ``compact`` call did."""

    examined: int  # keys examined
    removed: int  # dangling members removed
    emptied: int  # keys deleted because no live member was left
    sweep_done: bool  # the sweep reached the end, or none was needed
    cursor: bytes | None  # where the next call resumes (None: no sweep is running)


def compact(kv: KVStore, sweep: Sweep, budget: int) -> CompactionProgress:
    """Examine up to ``budget`` keys of the current sweep (starting one if a removal is pending)."""
    if budget < 1:
        raise ValueError("budget must be at least 1")
    cursor = kv.get(sweep.cursor_key)
    if cursor is None:
        if kv.get(sweep.pending_key) is None:
            return CompactionProgress(0, 0, 0, sweep_done=True, cursor=None)
        cursor = sweep.prefix
        kv.write_batch([(sweep.pending_key, None), (sweep.cursor_key, cursor)])
    batch = list(islice(kv.scan(sweep.prefix, start=cursor), budget + 1))
    following = batch[budget][0] if len(batch) > budget else None
    alive: dict[bytes, bool] = {}
    writes: list[Write] = []
    removed = emptied = 0
    for key, value in batch[:budget]:
        items = members(value, sweep.width)
        dead = []
        for member in items:
            live = alive.get(member)
            if live is None:
                live = alive[member] = kv.get(sweep.record_key(member)) is not None
            if not live:
                dead.append(member)
        writes += [(key, Discard(m, unless=sweep.record_key(m))) for m in dead]
        removed += len(dead)
        emptied += len(dead) == len(items)
    writes.append((sweep.cursor_key, following))
    kv.write_batch(writes)
    return CompactionProgress(
        examined=min(len(batch), budget),
        removed=removed,
        emptied=emptied,
        sweep_done=following is None,
        cursor=following,
    )
