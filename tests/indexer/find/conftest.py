"""A real find server over a real index: chains served over HTTP, ingested, then queried.

``find_rig(tmp_path, chains)`` serves each ``ChainBuilder`` with the ipnisync handler, lets an
``Ingester`` (LevelDB in ``tmp_path``) ingest them all, starts ``serve_find`` on a free port of
127.0.0.1 and yields an httpx client on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import trio

from indexer.find import serve_find
from indexer.ingest.engine import IngestConfig, Ingester
from store import KV, IndexStore
from sync import Link, PrivateKey, encode_block
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder, make_ad

# The fixture's LastAdvertisementTime, 2023-06-28T12:21:06Z, as the ingester's clock.
FIXTURE_TIME = datetime(2023, 6, 28, 12, 21, 6, tzinfo=UTC).timestamp()


http_fetcher = fetcher_factory(timeout=5)


@dataclass
class FindRig:
    client: httpx.AsyncClient
    index: IndexStore
    base: str
    publisher_addrs: dict[str, str] = field(default_factory=dict)  # publisher -> its address


def add_broken_entries(chain: ChainBuilder, signer: PrivateKey, context_id: bytes) -> Link:
    """Append an ad whose entries block is valid DAG-JSON but no EntryChunk (a permanent error)."""
    bogus, raw = encode_block({"NotEntries": 1})
    chain.blocks[bogus] = raw
    ad = make_ad(signer, previous=chain.head_link, entries=bogus, context_id=context_id)
    cid, raw = encode_block(ad.to_node())
    chain.blocks[cid], chain.head_link = raw, cid
    return cid


@asynccontextmanager
async def find_rig(tmp_path: Path, chains: Sequence[ChainBuilder]) -> AsyncIterator[FindRig]:
    kv = KV(tmp_path / "indexer")
    config = IngestConfig(segment=3, retry_base=0.01, max_attempts=1)
    ingester = Ingester(kv, http_fetcher, config=config, clock=lambda: FIXTURE_TIME)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            addrs = {}
            for chain in chains:
                listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
                addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
                assert chain.head_key is not None
                publisher = chain.head_key.peer_id()
                addrs[str(publisher)] = addr
                ingester.request_sync(publisher, [addr])
            with trio.fail_after(10):
                await ingester.wait_idle()
            listeners = await nursery.start(serve_find, ingester.index, "127.0.0.1", 0)
            base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            async with httpx.AsyncClient(base_url=base) as client:
                yield FindRig(client, ingester.index, base, addrs)
            nursery.cancel_scope.cancel()
    finally:
        kv.close()
