"""A worker yields once per ad: ads settled without any I/O (staged with an error) must not let
it run ad after ad while the daemon's other tasks wait (with 100k such ads staged, a restarted
daemon's listeners started only after all of them: 110 s)."""

from __future__ import annotations

from pathlib import Path

import trio

from bench.recovery import PROVIDERS, _stage
from indexer.ingest.engine import Ingester
from staging import StagingArea
from store import KV
from sync.ipnisync.fetch import fetcher_factory

ADS = 200


def pending(staging: StagingArea) -> int:
    return sum(
        len(staging.entries(p, seq)) for p in staging.providers() for seq, _ in staging.stacks(p)
    )


async def test_other_tasks_run_while_a_worker_settles_staged_ads(tmp_path: Path) -> None:
    _stage(tmp_path / "db", PROVIDERS, ADS // PROVIDERS, b"yield")
    with KV(tmp_path / "db") as kv:
        staging = StagingArea(kv)
        assert pending(staging) == ADS
        ingester = Ingester(kv, fetcher_factory(timeout=5))
        left_when_scheduled: list[int] = []

        async def bystander() -> None:
            left_when_scheduled.append(pending(staging))

        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            nursery.start_soon(bystander)
            with trio.fail_after(30):
                await ingester.wait_idle()
            nursery.cancel_scope.cancel()
        assert left_when_scheduled and left_when_scheduled[0] > 0, left_when_scheduled
        assert pending(staging) == 0
