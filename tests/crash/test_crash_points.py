"""Crash injection at EVERY write point of sync and processing.

A crash-free run counts the LevelDB batches ingest writes.  Then, for every N, a fresh indexer
runs with a KV that dies at its N-th batch (the batch is not applied, nothing after it runs).
After each crash the database is reopened and checked against the four invariants; then a
restarted ingester resumes (without a new announce), the publisher is announced again, and the
final index must equal the crash-free run's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Literal

import pytest
import trio

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from staging import StagingArea
from store import KV, Write
from sync import Link, PeerId
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap, ipfs_gateway_http
from sync.net.httpserver import serve_tcp
from tests.builders import multihash
from tests.crash.invariants import check_invariants


class Crash(BaseException):
    """The process died (BaseException: nothing in the code under test may catch it)."""


class CrashingKV(KV):
    def __init__(self, path: Path, crash_at: int | None) -> None:
        super().__init__(path)
        self.crash_at = crash_at
        self.batches = 0

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        self.batches += 1
        if self.crash_at is not None and self.batches >= self.crash_at:
            raise Crash(f"crash at batch {self.batches}")
        super().write_batch(writes, sync)


http_fetcher = fetcher_factory(timeout=5)


def build_chain(pub: Publisher) -> list[tuple[Link, set[bytes]]]:
    """The chain, oldest first, with the multihashes each ad carries (disjoint per ad)."""
    pub.store.set_config(PublisherConfig(chunk_size=4, addresses=["/ip4/10.0.0.1/tcp/1"]))
    ops: list[tuple[bytes, range | Literal["meta"] | None]] = [
        (b"A", range(0, 10)),  # 3 chunks
        (b"B", range(10, 13)),
        (b"A", None),  # remove A
        (b"C", range(20, 29)),  # 3 chunks
        (b"A", range(30, 33)),  # A again after its removal
        (b"C", "meta"),
    ]
    out = []
    for ctx, what in ops:
        if what is None:
            result = pub.remove(ctx)
            mhs: set[bytes] = set()
        elif what == "meta":
            result = pub.update_metadata(ctx, ipfs_gateway_http())
            mhs = set()
        else:
            mhs = {multihash(i) for i in what}
            result = pub.add(ctx, sorted(mhs), bitswap())
        out.append((result.link, mhs))
    return out


def index_state(kv: KV) -> dict[bytes, bytes]:
    """The index proper (multihash keys and value records), independent of timing."""
    return {k: v for prefix in (b"i", b"v") for k, v in kv.scan(prefix)}


async def run_ingest(kv: KV, addr: str, pub: PeerId, *, announce: bool) -> None:
    ingester = Ingester(kv, http_fetcher, config=IngestConfig(segment=2), clock=lambda: 1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(ingester.run)
        if announce:
            ingester.request_sync(pub, [addr])
        with trio.fail_after(30):
            await ingester.wait_idle()
        nursery.cancel_scope.cancel()


Served = tuple[Publisher, str, list[tuple[Link, set[bytes]]]]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    pub = Publisher.init(tmp_path / "pub")
    chain = build_chain(pub)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_tcp, ipnisync_handler(pub), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
        yield pub, addr, chain
        nursery.cancel_scope.cancel()
    pub.close()


async def test_every_crash_point_recovers_to_the_crash_free_index(
    tmp_path: Path, served: Served
) -> None:
    pub, addr, chain = served
    baseline_kv = CrashingKV(tmp_path / "baseline", None)
    await run_ingest(baseline_kv, addr, pub.peer_id, announce=True)
    baseline = index_state(baseline_kv)
    total = baseline_kv.batches
    check_invariants(baseline_kv, chain, pub.peer_id.raw)
    assert all(StagingArea(baseline_kv).done(c.raw) for c, _ in chain)
    baseline_kv.close()
    assert total >= 14, total  # walk, 4 spills, commit, per-chunk progress, 6 finishes

    for n in range(1, total + 1):
        path = tmp_path / f"crash-{n}"
        crashing = CrashingKV(path, n)
        with pytest.raises(BaseExceptionGroup) as info:
            await run_ingest(crashing, addr, pub.peer_id, announce=True)
        assert info.group_contains(Crash), info.value
        crashing.close()
        with KV(path) as kv:
            check_invariants(kv, chain, pub.peer_id.raw)
            accepted = StagingArea(kv).publisher(pub.peer_id.raw).latest_scanned is not None
        with KV(path) as kv:  # 3. restart: staged work resumes with no new announce
            await run_ingest(kv, addr, pub.peer_id, announce=False)
            check_invariants(kv, chain, pub.peer_id.raw)
            if accepted:  # the whole chain was committed: nothing of it may be lost
                assert all(StagingArea(kv).done(c.raw) for c, _ in chain), f"batch {n}"
        with KV(path) as kv:  # the announce is repeated; the result is the crash-free index
            await run_ingest(kv, addr, pub.peer_id, announce=True)
            check_invariants(kv, chain, pub.peer_id.raw)
            assert index_state(kv) == baseline, f"crash at batch {n} changed the final index"
