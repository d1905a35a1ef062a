"""The staging area's commit rules, on a real LevelDB in tmp_path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import staging.area
from staging import StagedAd, StagingArea, StagingCorrupt
from staging import keys as staging_keys
from store import KV, Write

P = b"\x00\x03prv"
PUB_A, PUB_B = b"\x00\x01a", b"\x00\x01b"


@pytest.fixture
def area(tmp_path: Path) -> Iterator[StagingArea]:
    kv = KV(tmp_path / "db")
    yield StagingArea(kv, clock=lambda: 1000.0)
    kv.close()


def chain(n: int) -> list[bytes]:
    """cids of one chain, newest first: c{n-1} ... c0."""
    return [f"c{i}".encode() for i in reversed(range(n))]


def walk(area: StagingArea, publisher: bytes, cids: list[bytes]) -> tuple[int, int]:
    base = area.commit_seq()
    walk_id = area.begin_walk(publisher, ["/dns4/x/tcp/1/http"], cids[0])
    area.spill(walk_id, [(P, pos, StagedAd(cid=c, raw=c)) for pos, c in enumerate(cids)])
    return walk_id, base


def drain(area: StagingArea) -> list[bytes]:
    out = []
    while (entry := area.next_entry(P)) is not None:
        out.append(entry.ad.cid)
        area.finish(entry, ok=True)
    return out


def test_two_publishers_walking_one_chain_apply_each_ad_once(area: StagingArea) -> None:
    """Both walks began before either committed; the second keeps only what is new."""
    long_walk, base_a = walk(area, PUB_A, chain(6))  # head c5
    short_walk, base_b = walk(area, PUB_B, chain(4))  # head c3, same chain
    assert area.commit_walk(short_walk, {P: 4}, base_seq=base_b) == {P: 4}
    assert area.commit_walk(long_walk, {P: 6}, base_seq=base_a) == {P: 2}
    assert drain(area) == [b"c0", b"c1", b"c2", b"c3", b"c4", b"c5"]
    assert area.kv.get(staging_keys.staged(long_walk, P, 3)) is None  # truncated tail deleted


def test_a_long_truncated_walk_is_deleted_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The truncated tail of a long walk is deleted a bounded batch at a time, not held whole."""
    monkeypatch.setattr(staging.area, "BATCH_ADS", 5)
    batches: list[int] = []

    class Sizes(KV):
        def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
            items = list(writes)
            batches.append(len(items))
            super().write_batch(items, sync=sync)

    with Sizes(tmp_path / "db") as kv:
        area = StagingArea(kv, clock=lambda: 1000.0)
        long_walk, base_a = walk(area, PUB_A, chain(40))
        short_walk, base_b = walk(area, PUB_B, chain(36))  # the same chain's 36 oldest
        assert area.commit_walk(short_walk, {P: 36}, base_seq=base_b) == {P: 36}
        batches.clear()
        assert area.commit_walk(long_walk, {P: 40}, base_seq=base_a) == {P: 4}
        assert max(batches) <= 2 * 5 + 6  # 5 ads' deletes, or the commit (+ the rest's)
        assert sum(batches) >= 2 * 36  # every truncated ad and its marker went
        assert list(kv.scan(staging_keys.staged_prefix(long_walk, P))) == [
            (staging_keys.staged(long_walk, P, pos), kv.get(staging_keys.staged(long_walk, P, pos)))
            for pos in range(4)
        ]
        assert drain(area) == [f"c{i}".encode() for i in range(40)]


def test_identical_concurrent_walks_stage_nothing_twice(area: StagingArea) -> None:
    w1, b1 = walk(area, PUB_A, chain(3))
    w2, b2 = walk(area, PUB_B, chain(3))
    area.commit_walk(w1, {P: 3}, base_seq=b1)
    assert area.commit_walk(w2, {P: 3}, base_seq=b2) == {P: 0}
    assert [seq for seq, _ in area.stacks(P)] == [1]
    assert drain(area) == [b"c0", b"c1", b"c2"]


def test_cursor_moves_only_with_the_commit(area: StagingArea) -> None:
    walk_id, base = walk(area, PUB_A, chain(2))
    assert area.publisher(PUB_A).latest_scanned is None
    assert not area.is_known(b"c1")
    area.commit_walk(walk_id, {P: 2}, base_seq=base)
    record = area.publisher(PUB_A)
    assert record.latest_scanned == b"c1" and record.addrs == ["/dns4/x/tcp/1/http"]
    assert area.is_known(b"c1") and area.is_known(b"c0")
    drain(area)
    assert area.latest_processed(PUB_A) == b"c1"
    done = area.done(b"c0")
    assert done is not None and done.ok
    assert area.kv.get(staging_keys.walk(walk_id)) is None  # the finished walk is gone


def test_progress_and_attempts(area: StagingArea) -> None:
    walk_id, base = walk(area, PUB_A, chain(1))
    area.commit_walk(walk_id, {P: 1}, base_seq=base)
    entry = area.next_entry(P)
    assert entry is not None
    area.save_progress(entry, b"half", [(b"xindex", b"1")])
    assert area.load_progress(b"c0") == b"half" and area.kv.get(b"xindex") == b"1"
    assert area.record_attempt(entry, "publisher down").attempts == 1
    again = area.next_entry(P)
    assert again is not None and again.stack.last_error == "publisher down"
    area.finish(again, ok=False, error="entries not found", writes=[(b"xindex", None)])
    assert area.load_progress(b"c0") is None and area.kv.get(b"xindex") is None
    done = area.done(b"c0")
    assert done is not None and not done.ok and done.error == "entries not found"


def test_corrupt_record_is_a_typed_error(area: StagingArea) -> None:
    area.kv.put(staging_keys.publisher(PUB_A), b"\xc1garbage")
    with pytest.raises(StagingCorrupt):
        area.publisher(PUB_A)


def test_upcoming_lists_the_ads_after_the_next_one(area: StagingArea) -> None:
    walk_id, base = walk(area, PUB_A, chain(5))
    area.commit_walk(walk_id, {P: 5}, base_seq=base)
    entry = area.next_entry(P)
    assert entry is not None and entry.ad.cid == b"c0"
    assert [ad.cid for ad in area.upcoming(entry, 2)] == [b"c1", b"c2"]
    assert [ad.cid for ad in area.upcoming(entry, 10)] == [b"c1", b"c2", b"c3", b"c4"]
    assert area.upcoming(entry, 0) == []
    for _ in range(4):
        area.finish(entry, ok=True)
        entry = area.next_entry(P)
        assert entry is not None
    assert entry.ad.cid == b"c4" and area.upcoming(entry, 3) == []  # the stack's last ad


def test_next_after_reads_the_next_ad_by_key_and_agrees_with_next_entry(
    area: StagingArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a stack the next ad is read by key (no scan); at a stack's end, after a drop,
    a pop by someone else or a recorded attempt it is what ``next_entry`` says."""
    for cids in (chain(3), [b"d1", b"d0"]):  # two stacks of one provider, FIFO
        walk_id, base = walk(area, PUB_A, cids)
        area.commit_walk(walk_id, {P: len(cids)}, base_seq=base)
    entry = area.next_entry(P)
    assert entry is not None and entry.ad.cid == b"c0"
    area.finish(entry, ok=True)
    scans: list[bytes] = []
    real_scan = area.kv.scan

    def scan(prefix: bytes, **kw: Any) -> Iterator[tuple[bytes, bytes]]:
        scans.append(prefix)
        return real_scan(prefix, **kw)

    monkeypatch.setattr(area.kv, "scan", scan)
    after = area.next_after(entry)
    assert after == area.next_entry(P) and after is not None and after.ad.cid == b"c1"
    scans.clear()
    assert area.next_after(entry) == after and scans == []  # read by key, the same entry
    retried = area.record_attempt(after, "publisher down")
    again = area.next_after(after)
    assert again is not None and again.ad.cid == b"c1" and again.stack == retried
    other = area.next_entry(P)  # someone else (mark-processed) pops it meanwhile
    assert other is not None
    area.finish(other, ok=True)
    last = area.next_after(after)
    assert last is not None and last.ad.cid == b"c2" and last == area.next_entry(P)
    area.finish(last, ok=True)  # the stack's last ad: the next stack is found by a scan
    nxt = area.next_after(last)
    assert nxt is not None and nxt.ad.cid == b"d0" and nxt == area.next_entry(P)
    area.drop_provider(P)
    assert area.next_after(nxt) is None and area.next_entry(P) is None


def test_drop_provider_removes_its_stacks_unapplied(area: StagingArea) -> None:
    other = b"\x00\x03oth"
    walk_id, base = walk(area, P, chain(5))
    area.spill(walk_id, [(other, 0, StagedAd(cid=b"o0", raw=b"o0"))])
    area.commit_walk(walk_id, {P: 5, other: 1}, base_seq=base)
    entry = area.next_entry(P)
    assert entry is not None
    area.save_progress(entry, b"half", [])
    assert area.drop_provider(P, batch=4) == 5  # batches of at most 4 writes
    assert area.stacks(P) == [] and area.providers() == [other]
    assert area.load_progress(entry.ad.cid) is None
    assert not any(area.is_known(c) for c in chain(5))
    assert area.is_known(b"o0")  # the other provider's stack keeps its walk
    assert [a.ad.cid for a in [area.next_entry(other)] if a] == [b"o0"]
    area.finish(area.next_entry(other), ok=True)  # type: ignore[arg-type]
    assert list(area.kv.scan(b"W")) == [] and area.providers() == []
    assert area.drop_provider(P) == 0


def test_holds_finds_a_staged_ad_by_key_without_loading_its_stack(area: StagingArea) -> None:
    walk(area, PUB_B, [b"u0"])  # never committed
    walk_id, base = walk(area, PUB_A, chain(3))
    assert not area.holds(P, b"c1")  # spilled, not committed: no stack holds it yet
    area.commit_walk(walk_id, {P: 3}, base_seq=base)
    assert area.holds(P, b"c1") and area.holds(P, b"c0")
    assert not area.holds(b"\x00\x03oth", b"c1")  # by provider
    assert not area.holds(P, b"u0") and not area.holds(P, b"nope")
    entry = area.next_entry(P)
    assert entry is not None and entry.ad.cid == b"c0"
    area.finish(entry, ok=True)
    assert not area.holds(P, b"c0") and area.holds(P, b"c2")  # popped: no longer held
    area.drop_provider(P)
    assert not area.holds(P, b"c2")


def test_a_done_ads_known_marker_is_emptied_not_deleted(area: StagingArea) -> None:
    """``finish`` leaves the ``k`` marker live and empty: a seek for a new ad's marker must not
    step over a run of tombstones (one per ad done) to find the next live key."""
    walk_id, base = walk(area, PUB_A, chain(50))
    area.commit_walk(walk_id, {P: 50}, base_seq=base)
    assert len(drain(area)) == 50
    markers = list(area.kv.scan(b"k"))
    assert len(markers) == 50 and all(raw == b"" for _, raw in markers)
    assert all(area.is_known(c) for c in chain(50))  # through the done markers
    assert not area.is_known(b"c50") and not area.holds(P, b"c7")
