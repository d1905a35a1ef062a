"""The index's background compaction: a resumable, bounded sweep of dangling value keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from store import KV, IndexStore, KVStore, MemoryKV, Write, value_key
from store.compaction import CompactionProgress
from tests.builders import multihash

P = b"\x00\x24provider"
LIVE, GONE = b"live", b"gone"


def build(kv: KVStore, n: int = 40) -> IndexStore[KVStore]:
    """Multihashes 0..n-1 in LIVE; the even ones also in GONE, then GONE is removed."""
    gone = [multihash(i) for i in [*range(0, n, 2), *range(n, n + 5)]]
    kv.write_batch(
        [
            *IndexStore.put_value(P, LIVE, b"m"),
            *IndexStore.put_value(P, GONE, b"m"),
            *IndexStore.put_multihashes(value_key(P, LIVE), [multihash(i) for i in range(n)]),
            *IndexStore.put_multihashes(value_key(P, GONE), gone),
        ]
    )
    kv.write_batch(IndexStore.remove_context(P, GONE))
    return IndexStore(kv)


def check_lookups(index: IndexStore[KVStore], n: int = 40) -> None:
    for i in range(n + 5):
        expected = [LIVE] if i < n else []
        assert [r.context_id for r in index.lookup(multihash(i))] == expected


def sweep(index: IndexStore[KVStore], budget: int) -> list[CompactionProgress]:
    steps = [index.compact(budget)]
    while not steps[-1].sweep_done:
        steps.append(index.compact(budget))
    return steps


def test_a_sweep_drops_dangling_value_keys_and_keeps_live_ones(kv: KVStore) -> None:
    index = build(kv)
    assert index.count_keys() == 40 + 20 + 5
    steps = sweep(index, budget=1000)
    assert len(steps) == 1
    assert (steps[0].examined, steps[0].removed, steps[0].emptied) == (45, 25, 5)
    assert index.count_keys() == 40
    assert all(raw == value_key(P, LIVE) for _, raw in kv.scan(b"i"))
    check_lookups(index)
    assert index.compact(1000) == CompactionProgress(0, 0, 0, sweep_done=True, cursor=None)


def test_nothing_to_do_without_a_removal(kv: KVStore) -> None:
    kv.write_batch(IndexStore.put_multihashes(b"12345678", [multihash(1)]))  # dangling, no mark
    index = IndexStore(kv)
    assert index.compact(10) == CompactionProgress(0, 0, 0, sweep_done=True, cursor=None)
    assert index.count_keys() == 1


def test_small_steps_respect_the_budget_and_lookups_stay_right(kv: KVStore) -> None:
    index = build(kv)
    steps: list[CompactionProgress] = []
    while not steps or not steps[-1].sweep_done:
        steps.append(index.compact(7))
        check_lookups(index)  # between every two steps
    assert [s.examined for s in steps] == [7] * 6 + [3]
    assert sum(s.removed for s in steps) == 25
    assert index.count_keys() == 40


def test_a_removal_during_a_sweep_marks_the_next_one(kv: KVStore) -> None:
    index = build(kv)
    index.compact(5)
    kv.write_batch(IndexStore.remove_context(P, LIVE))
    sweep(index, budget=5)
    assert 0 < index.count_keys() < 40  # keys before the cursor were examined while LIVE lived
    sweep(index, budget=5)
    assert index.count_keys() == 0 and list(kv.scan(b"i")) == []


def test_a_context_readded_during_a_step_keeps_its_keys() -> None:
    class Readding(MemoryKV):
        """Re-adds GONE after compaction read its record, just before the step's batch."""

        def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
            batch = list(writes)
            if any(key == b"g" for key, _ in batch) and len(batch) > 2:
                super().write_batch(IndexStore.put_value(P, GONE, b"back"))
            super().write_batch(batch, sync)

    kv = Readding()
    index = build(kv)
    step = index.compact(1000)
    assert step.removed == 25  # judged dangling when checked ...
    assert index.count_keys() == 65  # ... but the re-added context kept every key
    assert [r.metadata for r in index.lookup(multihash(0))] == [b"m", b"back"]


def test_the_sweep_resumes_after_a_restart(reopen: Callable[[], KV]) -> None:
    with reopen() as kv:
        index = build(kv)
        first = index.compact(10)
        assert first.cursor is not None and not first.sweep_done
    with reopen() as kv:
        index = IndexStore(kv)
        steps = sweep(index, budget=10)
        assert sum(s.examined for s in steps) == 45 - 10  # resumed at the cursor
        assert first.removed + sum(s.removed for s in steps) == 25
        assert index.count_keys() == 40
        check_lookups(index)
