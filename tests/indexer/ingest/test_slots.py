"""FairSlots: long holders make way for newcomers; without contention it is a plain limiter."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from indexer.ingest.slots import FairSlots


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _hold(slots: FairSlots, until: trio.Event, holding: list[str], name: str) -> None:
    async with slots.hold():
        holding.append(name)
        await until.wait()


async def test_a_newcomer_waits_only_until_a_holder_is_old(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = FairSlots(fast=2, slow=8, slow_after=30.0)
    forever = trio.Event()
    holding: list[str] = []
    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(_hold, slots, forever, holding, f"slow{i}")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        token = await slots.acquire()  # both fast slots are held by slow holders
        waited = trio.current_time() - start
        assert 30.0 <= waited < 31.0  # it got a slot as soon as the oldest came of age
        assert slots.demoted == 1 and slots.fast_holders == 2 and slots.slow_holders == 1
        slots.release(token)
        assert slots.fast_holders == 1
        forever.set()
    assert slots.fast_holders == 0 and slots.slow_holders == 0  # every release found its pool


async def test_no_contention_moves_nobody(autojump_clock: trio.testing.MockClock) -> None:
    slots = FairSlots(fast=2, slow=8, slow_after=1.0)
    token = await slots.acquire()
    await trio.sleep(100)
    other = await slots.acquire()
    assert slots.demoted == 0 and slots.fast_holders == 2
    slots.release(token)
    slots.release(other)


async def test_a_full_slow_pool_means_waiting_for_a_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = FairSlots(fast=1, slow=1, slow_after=5.0)
    first_done, second_done = trio.Event(), trio.Event()
    holding: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold, slots, first_done, holding, "a")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_hold, slots, second_done, holding, "b")  # demotes "a" after 5 s
        await trio.sleep(6)
        assert holding == ["a", "b"] and slots.slow_holders == 1
        got: list[float] = []

        async def third() -> None:
            async with slots.hold():
                got.append(trio.current_time())

        nursery.start_soon(third)
        await trio.sleep(100)
        assert got == []  # the slow pool is full: "b" cannot be moved aside
        release_at = trio.current_time()
        first_done.set()  # "a" leaves the slow pool; "b" (old) can now be moved aside
        await trio.sleep(10)
        assert got and got[0] - release_at <= 5.0 + 0.1
        second_done.set()
