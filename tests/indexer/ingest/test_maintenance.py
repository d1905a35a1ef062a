"""``run_compaction`` on a real LevelDB: steps in a thread, reads meanwhile, idle sleeps, cancel.

A ``ParkingKV`` holds a compaction step inside the store's write lock (its reads under the lock
wait for ``release``) so a test can act while a step is provably under way; ``Recorder`` reports
each step's (trio time, progress) to the test over a channel.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from indexer.ingest.maintenance import run_compaction
from store import KV, CompactionProgress, IndexStore, MemoryKV, ValueRecord, value_key
from tests.builders import multihash

P = b"\x00\x24maintenance-provider"
ONLY_A = [multihash(i) for i in range(6)]
SHARED = [multihash(i) for i in range(6, 9)]
ONLY_B = [multihash(i) for i in range(9, 12)]


class ParkingKV(KV):
    """A LevelDB whose reads under the write lock wait for ``release`` while ``parking``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.parking = False
        self.parked = trio.Event()
        self.release = threading.Event()

    def get(self, key: bytes) -> bytes | None:
        if self.parking and self._lock.locked():
            self.parking = False
            trio.from_thread.run_sync(self.parked.set)  # raises on trio's own thread
            assert self.release.wait(timeout=30)
        return super().get(key)


class Recorder(IndexStore[KV]):
    """An index whose every compaction step is sent to ``steps`` (from the step's thread)."""

    steps: trio.MemorySendChannel[tuple[float, CompactionProgress]]

    def compact(self, budget: int) -> CompactionProgress:
        progress = super().compact(budget)
        trio.from_thread.run_sync(self._report, progress)
        return progress

    def _report(self, progress: CompactionProgress) -> None:  # on the event loop's thread
        self.steps.send_nowait((trio.current_time(), progress))


def open_index(
    kv: KV,
) -> tuple[Recorder, trio.MemoryReceiveChannel[tuple[float, CompactionProgress]]]:
    send, receive = trio.open_memory_channel[tuple[float, CompactionProgress]](1000)
    index = Recorder(kv)
    object.__setattr__(index, "steps", send)
    kv.write_batch(
        [
            *IndexStore.put_value(P, b"A", b"meta-a"),
            *IndexStore.put_value(P, b"B", b"meta-b"),
            *IndexStore.put_multihashes(value_key(P, b"A"), ONLY_A + SHARED),
            *IndexStore.put_multihashes(value_key(P, b"B"), SHARED + ONLY_B),
            *IndexStore.remove_context(P, b"A"),
        ]
    )
    return index, receive


async def test_lookups_complete_while_a_step_holds_the_write_lock(tmp_path: Path) -> None:
    kv = ParkingKV(tmp_path / "db")
    index, steps = open_index(kv)
    b = ValueRecord(P, b"B", b"meta-b")
    kv.parking = True
    with kv, trio.fail_after(30):  # real time: no mock clock in this test
        async with trio.open_nursery() as nursery:
            await nursery.start(run_compaction, index)
            await kv.parked.wait()
            assert kv._lock.locked()  # the step is inside its batch
            assert index.lookup(SHARED[0]) == [b]  # on the event loop's thread
            assert await trio.to_thread.run_sync(index.lookup, ONLY_B[0]) == [b]  # another one
            assert index.lookup(ONLY_A[0]) == []
            assert index.count_keys() == 15  # nothing dropped yet
            kv.release.set()
            _, progress = await steps.receive()
            assert progress.sweep_done and progress.removed == 9
            assert index.count_keys() == 6 and index.lookup(SHARED[1]) == [b]
            nursery.cancel_scope.cancel()


async def test_steps_follow_each_other_then_idle_between_sweeps(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    del autojump_clock  # time jumps whenever every task waits: only the idle sleeps take time
    with KV(tmp_path / "db") as kv:
        index, steps = open_index(kv)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_compaction, index, budget=4, idle=60))
            start = trio.current_time()
            sweep = [await steps.receive() for _ in range(3)]  # 12 keys, 4 a step
            assert [at - start for at, _ in sweep] == [0, 0, 0]
            assert [p.sweep_done for _, p in sweep] == [False, False, True]
            assert sum(p.removed for _, p in sweep) == 9
            at, progress = await steps.receive()  # nothing pending: an empty look, an idle later
            assert at - start == 60 and progress.examined == 0 and progress.sweep_done
            kv.write_batch(IndexStore.remove_context(P, b"B"))
            sweep = [await steps.receive() for _ in range(2)]  # 6 keys left, 4 a step
            assert [at - start for at, _ in sweep] == [120, 120]
            assert sum(p.removed for _, p in sweep) == 6 and index.count_keys() == 0
            nursery.cancel_scope.cancel()


async def test_cancelling_waits_for_the_running_step(tmp_path: Path) -> None:
    kv = ParkingKV(tmp_path / "db")
    index, steps = open_index(kv)
    released = False

    async def release_later() -> None:
        nonlocal released
        for _ in range(20):  # an abandoned step would let the nursery close meanwhile
            await trio.lowlevel.checkpoint()
        released = True
        kv.release.set()

    kv.parking = True
    with kv, trio.fail_after(30):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_compaction, index, budget=4))
                await kv.parked.wait()
                nursery.cancel_scope.cancel()
                outer.start_soon(release_later)
            assert released  # the task ended only after its step did
        _, first = steps.receive_nowait()
        assert not first.sweep_done and kv.get(b"g") == first.cursor  # the sweep resumes there
        assert IndexStore(kv).compact(100).removed == 9 - first.removed


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        await run_compaction(IndexStore(MemoryKV()), budget=0)
    with pytest.raises(ValueError, match="idle"):
        await run_compaction(IndexStore(MemoryKV()), idle=-1)
