"""The persistent staging area: per provider, a FIFO of stacks of advertisements to index.

Rules this module keeps (the design card's invariants hang on them):

- A walk spills its ads under its walk id as it goes (``spill``); they are invisible to workers
  and to ``is_known`` until ``commit_walk`` writes, in ONE synced batch, the walk's stack headers,
  the publisher's ``latest_scanned`` cursor and the walk's committed flag (invariant 4).  A crash
  before that leaves only an open walk, deleted by ``cleanup_open_walks`` at start-up.
- Stacks of a provider are served in commit order; within a stack the oldest ad (highest
  position) pops first, so a provider's ads are applied oldest to newest (invariant 1).
- No key rewritten per ad is ever found by a prefix scan (LevelDB iterators step over every
  superseded version still in the memtable): a stack's count lives under its own ``T`` key.
  Nor is a prefix scan made per ad: a scan of ``S<provider>`` steps, past its last stack, over
  the tombstones and superseded versions that follow it (the ``T`` keys of the stacks already
  done: one version per ad they held, until a compaction drops them), so the worker reads its
  next ad by key while its stack lasts (``next_after``) and scans once per stack.
- No key a prefix scan seeks past is deleted per ad: ``finish`` empties the ad's ``k`` marker
  instead of deleting it.  ``is_known`` seeks to ``k<cid>`` for every new ad a walk meets, and a
  seek steps over every consecutive tombstone before it finds a live key (the done ads' markers,
  random CIDs): 40 us an ask after 2,000 ads done, 317 us after 8,000, against 3-4 us whatever
  the count now.  LevelDB drops a tombstone of random keys only in the bottom level, so they
  would pile up through every level above it.  An empty marker means "see the done marker"; it
  costs ~56 bytes on disk per ad done (snappy tables, compacted), beside the done marker's ~46.
- ``finish`` removes an ad from its stack and marks it done in the same batch as the caller's
  last index writes; ``save_progress`` records mid-ad progress with the writes it covers.  Either
  batch is all-or-nothing, so a replay after a crash redoes exactly what was not recorded
  (invariants 2 and 3).
- A walk's addresses become the publisher's (its ``P`` record's, the addresses a later sync
  tries first) only when ``commit_walk`` is told they are ``verified``: they served the
  publisher's signed head or a valid head ad.  An unverified walk keeps the prior addresses, and
  writes no publisher record at all for a publisher without one unless it staged ads.
- ``drop_provider`` removes a provider's stacks without applying them, in bounded batches;
  ``abandon_walk`` and ``commit_walk``'s truncation delete a walk's ads in bounded batches too
  (``BATCH_ADS``): no operation holds a whole walk in memory, whatever its length.
- ``commit_walk`` re-checks, when another walk committed meanwhile, that none of its ads was
  staged or done by that walk, and keeps per provider only the ads newer than the first such ad:
  two publishers announcing one chain at once apply every ad exactly once.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from staging import keys, publishers
from staging.records import (
    AnnounceRecord,
    DoneRecord,
    KnownRecord,
    PublisherRecord,
    StackHeader,
    StackRecord,
    StackState,
    StagedAd,
    WalkRecord,
    decode,
    encode,
)
from store import KV, Write

__all__ = ["BATCH_ADS", "Entry", "StagingArea"]

# Ads one batch deletes at most when a walk is abandoned or truncated: whatever a walk's length,
# what is held in memory to write it stays bounded (a 10M-ad walk is 10M ads on disk, not in RAM).
BATCH_ADS = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """The next ad a provider's worker must apply."""

    provider: bytes
    seq: int
    pos: int
    stack: StackRecord
    ad: StagedAd


class StagingArea:
    """Walks, stacks and done markers over one ``KV``, and publisher records
    (``staging.publishers``).  It holds nothing but the ``KV`` and the clock: any number of
    them over one ``KV`` read and write the same state."""

    def __init__(self, kv: KV, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock

    def _get(self, key: bytes, kind: type[object]) -> object | None:
        raw = self.kv.get(key)
        return None if raw is None else decode(raw, kind, key)

    def _counter(self, key: bytes) -> int:
        raw = self.kv.get(key)
        return int.from_bytes(raw, "big") if raw else 0

    # --- the sync side ---------------------------------------------------------------------

    def begin_walk(self, publisher: bytes, addrs: Sequence[str], head: bytes) -> int:
        walk_id = self._counter(keys.WALK_ID) + 1
        record = WalkRecord(publisher, list(addrs), head, self.clock())
        self.kv.write_batch(
            [(keys.WALK_ID, keys.u64(walk_id)), (keys.walk(walk_id), encode(record))]
        )
        return walk_id

    def commit_seq(self) -> int:
        return self._counter(keys.COMMIT_SEQ)

    def spill(self, walk_id: int, items: Iterable[tuple[bytes, int, StagedAd]]) -> None:
        """Write a segment of a walk's ads (not yet visible)."""
        writes: list[Write] = []
        for provider, pos, ad in items:
            writes.append((keys.staged(walk_id, provider, pos), encode(ad)))
            writes.append(
                (keys.known(ad.cid, walk_id), encode(KnownRecord(walk_id, provider, pos)))
            )
        self.kv.write_batch(writes)

    def is_known(self, cid: bytes) -> bool:
        """True when the ad is done, or staged by a committed walk."""
        if self.kv.get(keys.done(cid)) is not None:
            return True
        for key, raw in self.kv.scan(keys.known_prefix(cid)):
            if not raw:
                continue  # a done ad's marker, emptied by ``finish``
            walk = self._get(keys.walk(decode(raw, KnownRecord, key).walk_id), WalkRecord)
            if isinstance(walk, WalkRecord) and walk.committed:
                return True
        return False

    def commit_walk(
        self, walk_id: int, counts: Mapping[bytes, int], *, base_seq: int, verified: bool = True
    ) -> dict[bytes, int]:
        """Make the walk's stacks visible and move the publisher's cursor, atomically.

        ``counts`` is how many ads each provider got; ``base_seq`` is ``commit_seq()`` as seen
        when the walk began.  Returns how many ads each provider's new stack holds.
        ``verified``: the walk's addresses proved they serve the publisher (see the rules).
        """
        walk = self._get(keys.walk(walk_id), WalkRecord)
        assert isinstance(walk, WalkRecord) and not walk.committed
        writes: list[Write] = []
        kept = dict(counts)
        if self.commit_seq() != base_seq:  # someone else committed since we began: re-check
            for provider, n in counts.items():
                kept[provider] = self._truncate(walk_id, provider, n, writes)
        seq = self.commit_seq()
        now = self.clock()
        stacks = 0
        for provider, n in sorted(kept.items()):
            if n:
                seq += 1
                stacks += 1
                header = StackHeader(walk_id, walk.publisher, walk.addrs, now, total=n)
                writes.append((keys.stack(provider, seq), encode(header)))
                writes.append((keys.stack_state(provider, seq), encode(StackState(n))))
        committed = msgspec.structs.replace(walk, committed=True, stacks=stacks)
        writes.append((keys.walk(walk_id), encode(committed) if stacks else None))
        known = self._get(keys.publisher(walk.publisher), PublisherRecord)
        if verified or stacks or known is not None:
            prior = known if isinstance(known, PublisherRecord) else PublisherRecord()
            addrs = walk.addrs if verified else prior.addrs
            cursor = PublisherRecord(walk.head, prior.latest_processed, addrs, now, None)
            writes.append((keys.publisher(walk.publisher), encode(cursor)))
        writes.append((keys.COMMIT_SEQ, keys.u64(seq)))
        self.kv.write_batch(writes, sync=True)
        return kept

    def _truncate(self, walk_id: int, provider: bytes, n: int, writes: list[Write]) -> int:
        """Keep the ads newer than the first one known; the older ones' deletes go in
        ``writes``, past ``BATCH_ADS`` of them in batches of their own (the walk is still
        uncommitted: a crash between leaves an open walk, cleaned up at start-up)."""
        keep = n
        for pos in range(n):
            raw = self.kv.get(keys.staged(walk_id, provider, pos))
            ad = decode(raw or b"", StagedAd, keys.staged(walk_id, provider, pos))
            if keep == n and self.is_known(ad.cid):
                keep = pos
            if keep < n:  # this ad and every older one were staged by the other walk
                writes.append((keys.staged(walk_id, provider, pos), None))
                writes.append((keys.known(ad.cid, walk_id), None))
            if len(writes) >= 2 * BATCH_ADS:
                self.kv.write_batch(writes)
                writes.clear()
        return keep

    def abandon_walk(self, walk_id: int) -> int:
        """Delete an uncommitted walk's spilled ads, at most ``BATCH_ADS`` a batch, then its
        record (a crash between leaves it open: ``cleanup_open_walks`` finishes); how many."""
        writes: list[Write] = []
        count = 0
        for key, raw in self.kv.scan(b"w" + keys.u64(walk_id)):
            count += 1
            ad = decode(raw, StagedAd, key)
            writes += [(keys.known(ad.cid, walk_id), None), (key, None)]
            if len(writes) >= 2 * BATCH_ADS:
                self.kv.write_batch(writes)
                writes.clear()
        self.kv.write_batch([*writes, (keys.walk(walk_id), None)])
        return count

    def cleanup_open_walks(self) -> list[int]:
        """Abandon every walk a crash left uncommitted; return their ids."""
        open_walks = [
            int.from_bytes(key[1:], "big")
            for key, raw in self.kv.scan(b"W")
            if not decode(raw, WalkRecord, key).committed
        ]
        for walk_id in open_walks:
            self.abandon_walk(walk_id)
        return open_walks

    def open_walk_publishers(self) -> set[bytes]:
        """Publishers with a walk whose staged ads are not all done (committed or not)."""
        return {decode(raw, WalkRecord, key).publisher for key, raw in self.kv.scan(b"W")}

    # --- publishers (``staging.publishers``) ---------------------------------------------------

    def publisher(self, publisher: bytes) -> PublisherRecord:
        return publishers.publisher(self.kv, publisher)

    def known_publishers(self) -> list[tuple[bytes, list[str]]]:
        return publishers.known_publishers(self.kv)

    def has_publisher(self, publisher: bytes) -> bool:
        return publishers.has_publisher(self.kv, publisher)

    def set_publisher_error(self, publisher: bytes, error: str | None) -> bool:
        return publishers.set_publisher_error(self.kv, publisher, error, self.clock())

    def latest_processed(self, publisher: bytes) -> bytes | None:
        return publishers.latest_processed(self.kv, publisher)

    def record_announce(self, publisher: bytes, head: bytes, addrs: Sequence[str]) -> None:
        publishers.record_announce(self.kv, publisher, head, addrs, self.clock())

    def unsynced_announces(self) -> list[tuple[bytes, AnnounceRecord]]:
        """Recorded announces whose head is not yet staged or done: to replay after a restart."""
        return [(p, r) for p, r in publishers.announces(self.kv) if not self.is_known(r.head)]

    def clear_announce(self, publisher: bytes, head: bytes, addrs: Sequence[str]) -> bool:
        return publishers.clear_announce(self.kv, publisher, head, addrs)

    # --- freeze -----------------------------------------------------------------------------

    def frozen_at(self) -> float | None:
        """When the indexer was frozen (``PUT /freeze``, or its disk filling), if it is."""
        raw = self.kv.get(keys.FROZEN)
        return None if raw is None else struct.unpack(">d", raw)[0]

    def set_frozen(self, at: float | None) -> None:
        """Freeze (durably: synced) at ``at``, or unfreeze with None."""
        value = None if at is None else struct.pack(">d", at)
        self.kv.write_batch([(keys.FROZEN, value)], sync=True)

    # --- the worker side -------------------------------------------------------------------

    def providers(self) -> list[bytes]:
        """Providers with staged work, in key order."""
        out: list[bytes] = []
        for key, _ in self.kv.scan(keys.stack_prefix()):
            provider = key[2 : 2 + key[1]]
            if not out or out[-1] != provider:
                out.append(provider)
        return out

    def stacks(self, provider: bytes) -> list[tuple[int, StackRecord]]:
        prefix = keys.stack_prefix(provider)
        out = []
        for key, raw in self.kv.scan(prefix):
            seq = int.from_bytes(key[len(prefix) :], "big")
            state_key = keys.stack_state(provider, seq)
            state = decode(self.kv.get(state_key) or b"", StackState, state_key)
            out.append((seq, StackRecord.of(decode(raw, StackHeader, key), state)))
        return out

    def next_entry(self, provider: bytes) -> Entry | None:
        """The oldest ad of the provider's oldest stack."""
        for seq, stack in self.stacks(provider):
            return self._entry(provider, seq, stack)
        return None

    def next_after(self, entry: Entry) -> Entry | None:
        """``next_entry(entry.provider)`` for a caller that just handled ``entry``, read by key
        while ``entry``'s stack lasts: no prefix scan per ad (see the rules).

        That stack, while its header is there, is still the provider's oldest: commit seqs only
        grow, so no older stack can appear.  Its state says where it is now (a pop, a drop, an
        attempt recorded meanwhile); once it is gone, ``next_entry`` finds the next one.
        """
        provider, seq = entry.provider, entry.seq
        header_key, state_key = keys.stack(provider, seq), keys.stack_state(provider, seq)
        header, state = self.kv.get(header_key), self.kv.get(state_key)
        if header is None or state is None:
            return self.next_entry(provider)
        stack = StackRecord.of(
            decode(header, StackHeader, header_key), decode(state, StackState, state_key)
        )
        return self._entry(provider, seq, stack) if stack.count > 0 else self.next_entry(provider)

    def _entry(self, provider: bytes, seq: int, stack: StackRecord) -> Entry:
        pos = stack.count - 1
        key = keys.staged(stack.walk_id, provider, pos)
        return Entry(provider, seq, pos, stack, decode(self.kv.get(key) or b"", StagedAd, key))

    def finish(
        self, entry: Entry, *, ok: bool, error: str | None = None, writes: Sequence[Write] = ()
    ) -> None:
        """Pop ``entry`` and mark its ad done, atomically with ``writes``."""
        cid = entry.ad.cid
        batch: list[Write] = list(writes)
        batch += [
            (keys.staged(entry.stack.walk_id, entry.provider, entry.pos), None),
            (keys.done(cid), encode(DoneRecord(ok, self.clock(), error))),
            (keys.known(cid, entry.stack.walk_id), b""),  # emptied, not deleted: see the rules
            (keys.progress(cid), None),
            (b"p" + keys.peer(entry.stack.publisher), cid),
        ]
        state_key = keys.stack_state(entry.provider, entry.seq)
        if entry.pos == 0:
            batch += [(keys.stack(entry.provider, entry.seq), None), (state_key, None)]
            batch += self._walk_done_if_last(entry)
        else:
            popped = StackState(entry.pos, entry.stack.last_error, 0)
            batch.append((state_key, encode(popped)))
        self.kv.write_batch(batch)

    def _walk_done_if_last(self, entry: Entry) -> list[Write]:
        key = keys.walk(entry.stack.walk_id)
        walk = self._get(key, WalkRecord)
        if not isinstance(walk, WalkRecord) or walk.stacks <= 1:
            return [(key, None)]
        return [(key, encode(msgspec.structs.replace(walk, stacks=walk.stacks - 1)))]

    def drop_provider(self, provider: bytes, batch: int = 1000) -> int:
        """Drop every stack of ``provider`` unapplied (``DELETE /removeprovider``); the number of
        ads dropped.  Each stack goes from view in one batch (its header, its state, its walk's
        count), then its ads in batches of at most ``batch`` writes, so memory stays bounded; a
        crash between leaves only unreachable ads of a stack no longer listed."""
        dropped = 0
        for seq, stack in self.stacks(provider):
            writes: list[Write] = [
                (keys.stack(provider, seq), None),
                (keys.stack_state(provider, seq), None),
            ]
            walk = self._get(keys.walk(stack.walk_id), WalkRecord)
            if isinstance(walk, WalkRecord):
                left = walk.stacks - 1
                replaced = msgspec.structs.replace(walk, stacks=left)
                writes.append((keys.walk(stack.walk_id), encode(replaced) if left > 0 else None))
            self.kv.write_batch(writes)
            dropped += self._drop_ads(stack.walk_id, provider, batch)
        # A state a worker rewrote after its stack went (it was mid-ad): never listed, dropped.
        orphans = [(key, None) for key, _ in self.kv.scan(b"T" + keys.peer(provider))]
        if orphans:
            self.kv.write_batch(orphans)
        return dropped

    def _drop_ads(self, walk_id: int, provider: bytes, batch: int) -> int:
        prefix, count = keys.staged_prefix(walk_id, provider), 0
        while True:
            writes: list[Write] = []
            for key, raw in self.kv.scan(prefix):
                cid = decode(raw, StagedAd, key).cid
                writes += [
                    (key, None),
                    (keys.known(cid, walk_id), None),
                    (keys.progress(cid), None),
                ]
                if len(writes) >= batch:
                    break
            if not writes:
                return count
            count += len(writes) // 3
            self.kv.write_batch(writes)

    def save_progress(self, entry: Entry, progress: bytes, writes: Sequence[Write]) -> None:
        self.kv.write_batch([*writes, (keys.progress(entry.ad.cid), progress)])

    def load_progress(self, cid: bytes) -> bytes | None:
        return self.kv.get(keys.progress(cid))

    def record_attempt(self, entry: Entry, error: str) -> StackRecord:
        s = entry.stack
        state = StackState(s.count, error, s.attempts + 1)
        self.kv.put(keys.stack_state(entry.provider, entry.seq), encode(state))
        return msgspec.structs.replace(s, last_error=error, attempts=s.attempts + 1)

    def done(self, cid: bytes) -> DoneRecord | None:
        record = self._get(keys.done(cid), DoneRecord)
        return record if isinstance(record, DoneRecord) else None

    def holds(self, provider: bytes, cid: bytes) -> bool:
        """True when one of ``provider``'s stacks still holds the ad ``cid``: read through its
        known markers, by key, so no stack's ads are loaded (a stack may hold millions)."""
        stacks = {stack.walk_id: stack.count for _, stack in self.stacks(provider)}
        for key, raw in self.kv.scan(keys.known_prefix(cid)):
            if not raw:
                continue  # popped: its ad is done
            record = decode(raw, KnownRecord, key)
            if record.provider != provider or record.pos >= stacks.get(record.walk_id, 0):
                continue  # another provider's, or not in a listed stack (popped, dropped)
            if self.kv.get(keys.staged(record.walk_id, provider, record.pos)) is not None:
                return True
        return False

    def upcoming(self, entry: Entry, limit: int) -> list[StagedAd]:
        """The ads of ``entry``'s stack that come after it, next first, at most ``limit``.

        Read by key, one ``get`` each (called per ad: a reverse scan costs more, and more as
        the popped ads' tombstones pile up); the list ends at the first one gone (dropped)."""
        out: list[StagedAd] = []
        for pos in range(entry.pos - 1, max(entry.pos - 1 - limit, -1), -1):
            key = keys.staged(entry.stack.walk_id, entry.provider, pos)
            raw = self.kv.get(key)
            if raw is None:
                break
            out.append(decode(raw, StagedAd, key))
        return out

    def entries(self, provider: bytes, seq: int, limit: int = 0) -> list[tuple[int, StagedAd]]:
        """A stack's ads still to do, next to pop first (all of them when ``limit`` is 0)."""
        for s_seq, stack in self.stacks(provider):
            if s_seq == seq:
                return self.stack_ads(provider, stack, limit)
        return []

    def stack_ads(
        self, provider: bytes, stack: StackRecord, limit: int = 0
    ) -> list[tuple[int, StagedAd]]:
        """``entries`` of a stack already read (``stacks``), without reading the stacks again."""
        return self._ads(stack.walk_id, provider, stack.count - 1, limit)

    def _ads(
        self, walk_id: int, provider: bytes, pos: int, limit: int
    ) -> list[tuple[int, StagedAd]]:
        """(position, ad) from ``pos`` down, at most ``limit`` (0: no limit)."""
        if pos < 0:
            return []
        prefix, out = keys.staged_prefix(walk_id, provider), []
        for key, raw in self.kv.scan(
            prefix, reverse=True, start=keys.staged(walk_id, provider, pos)
        ):
            out.append((int.from_bytes(key[len(prefix) :], "big"), decode(raw, StagedAd, key)))
            if len(out) == limit:
                break
        return out
