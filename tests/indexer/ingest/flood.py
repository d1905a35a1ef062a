"""An announce flood: fake peer IDs at refused addresses, each from its own source, measured.

``flood`` drives a real ``AnnounceIntake`` and ``Ingester`` and, at 25/50/75/100% of the flood
(each time after the junk syncs were tried), measures the Python heap (tracemalloc, when
tracing), the live allocated blocks, RSS, and the staging records left.  ``test_hostile_ingest``
runs a small flood in process; run as a module it is the soak variant, in its own process so
that RSS means something::

    .venv/bin/python -m tests.indexer.ingest.flood --announces 60000 [--trace]
        [--write-buffer-mib 4]

prints one JSON object per quarter, then one with the records left, ``/sync/status`` sizes and
what a restart on the same LevelDB replays.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog
import trio
import trio.lowlevel

from indexer.daemon import STATUS_PAGE, sync_status
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.intake import AnnounceIntake
from staging import StagingArea
from store import KV, Tuning
from sync import Link, Message, PeerId
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import Request, serve_tcp

__all__ = ["REFUSED", "durable", "flood", "junk_announce", "junk_peer", "status_pages"]

REFUSED = "/ip4/127.0.0.1/tcp/1/http"  # nothing listens on port 1


def junk_peer(i: int) -> PeerId:
    """A well-formed (sha2-256) peer ID nobody holds the key of."""
    return PeerId(b"\x12\x20" + hashlib.sha256(b"junk peer %d" % i).digest())


def junk_announce(i: int) -> Message:
    return Message.create(Link.make(0x0129, b"junk head %d" % i), [REFUSED], junk_peer(i))


def durable(kv: KV) -> dict[str, int]:
    """Staging records by key prefix (announces ``A``, publishers ``P``, every key)."""
    return {
        "A": sum(1 for _ in kv.scan(b"A")),
        "P": sum(1 for _ in kv.scan(b"P")),
        "all": sum(1 for _ in kv.scan(b"")),
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def flood(
    intake: AnnounceIntake,
    ingester: Ingester,
    count: int,
    *,
    first: int = 0,
    backlog: int = 500,
    trace: str = "none",  # "all": tracemalloc throughout; "last": over the last quarter only
    at_half: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Announce ``count`` junk publishers; one measurement per quarter.

    The flood goes as fast as the ingester tries the syncs (at most ``backlog`` pending): a
    faster one is answered 503 past ``max_publishers``, which bounds nothing more.
    """
    statuses: Counter[int] = Counter()
    quarters: list[dict[str, Any]] = []
    marks = [count * q // 4 for q in (1, 2, 3, 4)]
    start = time.perf_counter()
    if trace == "all":
        tracemalloc.start()
    for n in range(count):
        i = first + n
        statuses[intake.accept(junk_announce(i), source=f"junk-{i}").status] += 1
        if n % 50 == 49:
            await trio.lowlevel.checkpoint()
            with trio.fail_after(60):
                while ingester.pending_publishers > backlog:  # noqa: ASYNC110 -- a bounded poll of a count
                    await trio.sleep(0.005)
        if at_half is not None and n + 1 == count // 2:
            await at_half()
        if n + 1 in marks:
            with trio.fail_after(120):
                await ingester.wait_idle()  # every junk sync so far was tried
            gc.collect()
            quarters.append(
                {
                    "announces": n + 1,
                    "seconds": round(time.perf_counter() - start, 2),
                    "heap": tracemalloc.get_traced_memory()[0]
                    if tracemalloc.is_tracing()
                    else None,
                    "blocks": sys.getallocatedblocks(),
                    "rss": _rss(),
                    "statuses": dict(statuses),
                    "progress": len(ingester.progress),
                    "records": durable(ingester.kv),
                }
            )
            if trace == "last" and len(quarters) == 3:
                tracemalloc.start()
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    return quarters


def status_pages(ingester: Ingester, limit: int = STATUS_PAGE) -> tuple[int, int, int]:
    """Follow ``/sync/status`` page by page: (rows, pages, largest body in bytes)."""
    rows = pages = largest = 0
    query: dict[str, list[str]] = {"limit": [str(limit)]}
    while True:
        response = sync_status(
            ingester, StagingArea(ingester.kv), Request("GET", "/sync/status", query, {})
        )
        assert response.status == 200 and isinstance(response.body, bytes)
        pages += 1
        rows += len(msgspec.json.decode(response.body))
        largest = max(largest, len(response.body))
        links = dict(response.headers).get("link")
        if links is None:
            return rows, pages, largest
        after = links.split("after=", 1)[1].split(">", 1)[0]
        query = {"limit": [str(limit)], "after": [after]}


async def _main(count: int, trace: bool, data: Path, tuning: Tuning) -> None:
    from tests.builders import ChainBuilder, key, multihash

    chain = ChainBuilder()
    legit = key(0)
    chain.add(legit, [multihash(i) for i in range(10)])
    head = chain.head_link
    assert head is not None
    with KV(data / "db", tuning=tuning) as kv:
        ingester = Ingester(kv, fetcher_factory(timeout=5), config=IngestConfig())
        intake = AnnounceIntake(ingester)
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
            addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            took: list[float] = []

            async def watch(since: float) -> None:
                while not ingester.index.lookup(multihash(3)):  # noqa: ASYNC110 -- polls the index: nothing signals
                    await trio.sleep(0.01)
                took.append(round(time.perf_counter() - since, 3))

            async def legit_announce() -> None:
                message = Message.create(head, [addr], legit.peer_id())
                assert intake.accept(message, source="legit").status == 204
                nursery.start_soon(watch, time.perf_counter())

            for quarter in await flood(
                intake, ingester, count, trace="all" if trace else "none", at_half=legit_announce
            ):
                print(json.dumps(quarter), flush=True)
            rows, pages, largest = status_pages(ingester)
            whole = sync_status(
                ingester, StagingArea(ingester.kv), Request("GET", "/sync/status", {}, {})
            )
            assert isinstance(whole.body, bytes)
            # junk accepted but never tried (the daemon stops before their syncs run)
            for i in range(count, count + 300):
                intake.accept(junk_announce(i), source=f"junk-{i}")
            nursery.cancel_scope.cancel()
        indexed = bool(ingester.index.lookup(multihash(3)))
        left = durable(kv)
    with KV(data / "db", tuning=tuning) as kv:
        restarted = Ingester(kv, fetcher_factory(timeout=5))
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            await nursery.start(restarted.run)
            start_seconds = time.perf_counter() - t0
            replayed = restarted.pending_publishers
            await restarted.wait_idle()
            nursery.cancel_scope.cancel()
        after_restart = durable(kv)
    db_bytes = sum(f.stat().st_size for f in (data / "db").iterdir() if f.is_file())
    print(
        json.dumps(
            {
                "legit_indexed": indexed,
                "legit_seconds_to_index": took[0] if took else None,
                "records_after_stop": left,
                "status_rows": rows,
                "status_pages": pages,
                "status_largest_page": largest,
                "status_first_page": len(whole.body),
                "replayed_on_restart": replayed,
                "restart_seconds": round(start_seconds, 3),
                "records_after_restart": after_restart,
                "db_bytes": db_bytes,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announces", type=int, default=60_000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc (slower, ~3x)")
    parser.add_argument(
        "--write-buffer-mib", type=int, default=Tuning().write_buffer_size >> 20,
        help="LevelDB's memtable (RSS grows with it until it is flushed)",
    )  # fmt: skip
    args = parser.parse_args()
    tuning = Tuning(write_buffer_size=args.write_buffer_mib << 20)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_main, args.announces, args.trace, Path(tmp), tuning)


if __name__ == "__main__":
    main()
