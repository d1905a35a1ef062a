"""Hostile ingest: starvation, spoofed announces, re-announce after a failure, announce floods.

Real parts only: LevelDB in ``tmp_path``, publishers over real HTTP on 127.0.0.1 (trio's
``serve_tcp`` for honest ones, stdlib threaded servers for dripping or stalled ones), the real
``AnnounceIntake`` and ``Ingester``.  Config values are small so each test takes seconds; every
wait is bounded by ``trio.fail_after``; outcomes are asserted ("indexed while the slow ones still
run"), never timings.  Times to index are printed as observations (``pytest -s``).
"""

from __future__ import annotations

import gc
import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypedDict, Unpack

import msgspec
import pytest
import trio

from indexer.daemon import STATUS_PAGE, sync_status
from indexer.ingest.engine import ADDR_SETS, IngestConfig, Ingester
from indexer.ingest.intake import MAX_ADDRS, AnnounceIntake
from staging import StagingArea
from store import KV
from sync import Link, Message, PeerId, PrivateKey, encode_block
from sync.errors import BadCid
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.protocol import IPNI_PATH
from sync.ipnisync.routes import BlockSource, ipnisync_handler
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import ChainBuilder, MemorySource, key, make_ad, multihash
from tests.conftest import ROOT
from tests.httpstub import StubServer
from tests.indexer.ingest.flood import durable, flood, junk_announce, junk_peer, status_pages

FETCH_TIMEOUT = 20.0  # per request: longer than any wait below, each dripped block is within it
REFUSED = "/ip4/127.0.0.1/tcp/1/http"  # nothing listens on port 1


class ChainServer(StubServer):
    """A stdlib HTTP publisher serving ``source`` over ipnisync, slowly if asked.

    Each block's body is sent in ``pieces`` pieces, ``pause`` seconds apart (a dripping
    publisher); with ``stall`` every block request gets its headers and one byte, then nothing
    until the server is closed.  ``asked`` counts block requests, ``served`` those answered in
    full.  The three settings are read per request, so a test may change them as it goes.
    """

    def __init__(
        self, source: BlockSource, *, pause: float = 0.0, pieces: int = 1, stall: bool = False
    ) -> None:
        self.pause, self.pieces, self.stall = pause, pieces, stall
        self.asked = self.served = 0
        self.closed = threading.Event()
        lock = threading.Lock()

        def get(h: http.server.BaseHTTPRequestHandler) -> None:
            name = h.path.rsplit("/", 1)[-1]
            body: bytes | None = None
            is_block = h.path.startswith(IPNI_PATH + "/") and name != "head"
            if is_block:
                with lock:
                    self.asked += 1
                try:
                    body = source.block(Link.parse(name))
                except BadCid:
                    body = None
            elif h.path == IPNI_PATH + "/head":
                body = source.signed_head()
            try:
                if is_block and self.stall:
                    h.send_response(200)
                    h.send_header("content-length", "1000")
                    h.end_headers()
                    h.wfile.write(b"{")
                    h.wfile.flush()
                    self.closed.wait(600)
                    return
                if body is None:
                    h.send_error(404)
                    return
                h.send_response(200)
                h.send_header("content-length", str(len(body)))
                h.end_headers()
                step = -(-len(body) // self.pieces)
                for start in range(0, len(body), step):
                    if self.pause and self.closed.wait(self.pause):
                        return
                    h.wfile.write(body[start : start + step])
                    h.wfile.flush()
                with lock:
                    self.served += 1
            except OSError:  # the indexer hung up (a cancelled or preempted sync)
                pass

        super().__init__(get)

    def close(self) -> None:
        self.closed.set()
        super().close()


class Switch:
    """An ipnisync handler that answers 503 to everything until ``up`` is set."""

    def __init__(self, source: BlockSource) -> None:
        self.up = False
        self.inner = ipnisync_handler(source)

    async def __call__(self, request: Request) -> Response:
        if not self.up:
            return Response.text(503, "down for maintenance")
        return await self.inner(request)


async def serve(nursery: trio.Nursery, handler: Handler, port: int = 0) -> str:
    """Serve ``handler`` on 127.0.0.1; its ``/http`` multiaddr."""
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", port)
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"


def chain_of(signer: PrivateKey, ads: int, mh_base: int, per_ad: int = 0) -> ChainBuilder:
    """``ads`` ads signed by ``signer``; ad i carries multihashes ``mh_base + i*per_ad ...``."""
    chain = ChainBuilder()
    for i in range(ads):
        start = mh_base + i * per_ad
        chain.add(signer, [multihash(start + j) for j in range(per_ad)] or None)
    return chain


def fake_chain(publisher: PeerId, ads: int, previous: Link | None = None) -> ChainBuilder:
    """Ads naming ``publisher`` as provider, signed by a stranger: what a spoofer can make."""
    chain = ChainBuilder()
    chain.head_link = previous
    stranger = key(999)
    for i in range(ads):
        chain.add(stranger, provider=str(publisher), context_id=b"fake%d" % i)
    return chain


def head_of(chain: ChainBuilder) -> Link:
    assert chain.head_link is not None
    return chain.head_link


def junk_link(n: int) -> Link:
    return Link.make(0x0129, b"no such head %d" % n)


class Tuning(TypedDict, total=False):
    """The ``IngestConfig`` fields these tests set."""

    slow_sync_after: float
    stall_after: float
    sync_timeout: float
    history: int
    max_syncs: int
    max_slow_syncs: int


@asynccontextmanager
async def ingesting(
    kv: KV, **config: Unpack[Tuning]
) -> AsyncIterator[tuple[Ingester, trio.Nursery]]:
    """A running ``Ingester`` over ``kv``; its nursery (cancelled on exit) for servers too."""
    ingester = Ingester(
        kv,
        fetcher_factory(timeout=FETCH_TIMEOUT),
        config=IngestConfig(**config),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(ingester.run)
        yield ingester, nursery
        nursery.cancel_scope.cancel()


async def indexed(ingester: Ingester, mh: bytes, limit: float = 15) -> float:
    """Wait until ``mh`` is in the index; the seconds it took (an observation)."""
    start = trio.current_time()
    with trio.fail_after(limit):
        while not ingester.index.lookup(mh):  # noqa: ASYNC110 -- polls the index: nothing signals
            await trio.sleep(0.02)
    return trio.current_time() - start


async def until(predicate: object, limit: float = 15) -> None:
    assert callable(predicate)
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 -- a bounded poll of any predicate
            await trio.sleep(0.02)


@contextmanager
def servers(*made: ChainServer) -> Iterator[None]:
    try:
        yield
    finally:
        for server in made:
            server.close()


def verified(ingester: Ingester, publisher: PeerId) -> list[str]:
    return StagingArea(ingester.kv).publisher(publisher.raw).addrs


# --- starvation ------------------------------------------------------------------------------


async def synced_then_grown(
    intake: AnnounceIntake, ingester: Ingester, x: PrivateKey, chain: ChainBuilder, addr: str
) -> PeerId:
    """X announces its chain at ``addr`` and is indexed (so ``addr`` is verified); then X's chain
    grows by one ad of 5 multihashes (100..104), not yet announced."""
    pub = x.peer_id()
    first = Message.create(head_of(chain), [addr], pub)
    assert intake.accept(first, source="x").status == 204
    await indexed(ingester, multihash(4))
    await until(lambda: not ingester.is_syncing(pub.raw))
    chain.add(x, [multihash(100 + i) for i in range(5)])
    return pub


async def test_slow_publishers_do_not_starve_an_honest_one(tmp_path: Path) -> None:
    """6 dripping publishers, 4 slots: the honest one is indexed while all 6 still run."""
    slow_keys = [key(100 + i) for i in range(6)]
    chains = [chain_of(k, 60, 10_000 * (i + 1)) for i, k in enumerate(slow_keys)]
    slow = [ChainServer(c, pause=0.05, pieces=4) for c in chains]  # 0.2 s per block
    honest_key = key(110)
    honest = chain_of(honest_key, 3, 0, per_ad=5)
    with servers(*slow), KV(tmp_path / "db") as kv:
        async with ingesting(
            kv, max_syncs=4, max_slow_syncs=8, slow_sync_after=0.3, stall_after=30
        ) as (ingester, nursery):
            intake = AnnounceIntake(ingester)
            for i, (k, c, s) in enumerate(zip(slow_keys, chains, slow, strict=True)):
                msg = Message.create(head_of(c), [s.addr], k.peer_id())
                assert intake.accept(msg, source=f"10.0.0.{i}").status == 204
            await until(lambda: sum(s.asked > 0 for s in slow) >= 4)  # the 4 slots are taken
            addr = await serve(nursery, ipnisync_handler(honest))
            msg = Message.create(head_of(honest), [addr], honest_key.peer_id())
            assert intake.accept(msg, source="192.0.2.1").status == 204
            took = await indexed(ingester, multihash(14))
            still = [ingester.progress[k.peer_id().raw] for k in slow_keys]
            print(
                f"\nstarvation: honest indexed after {took:.2f} s; slow served",
                [s.served for s in slow],
            )
            assert all(ingester.is_syncing(k.peer_id().raw) for k in slow_keys)
            assert all(p.running for p in still)
            assert all(s.served < 60 for s in slow)  # none of the slow syncs is done
            assert [str(r.publisher) for r in ingester.results] == [str(honest_key.peer_id())]


# --- spoofing --------------------------------------------------------------------------------


class Spoof(TypedDict, total=False):
    """How a ``ChainServer`` at a spoofed address serves."""

    pause: float
    pieces: int
    stall: bool


SPOOFS: dict[str, Spoof] = {
    # the spoofed address answers the head's request, then sends nothing more
    "stall": {"stall": True},
    # it serves 40 fake ads (provider X, signed by a stranger), one every 0.25 s: never silent
    # for stall_after, so only the slow-sync rule makes it yield
    "drip": {"pause": 0.05, "pieces": 5},
    # it serves them at once: the sync "succeeds" with 40 ads recorded as invalid
    "fast": {},
}


@pytest.mark.parametrize("spoof", SPOOFS)
async def test_a_spoofed_announce_cannot_delay_or_redirect_a_known_publisher(
    tmp_path: Path, spoof: str
) -> None:
    x = key(200)
    chain = chain_of(x, 2, 0, per_ad=5)
    fake = fake_chain(x.peer_id(), 40)
    spoofer = ChainServer(fake, **SPOOFS[spoof])
    with servers(spoofer), KV(tmp_path / "db") as kv:
        async with ingesting(kv, slow_sync_after=0.5, stall_after=1, sync_timeout=60) as (
            ingester,
            nursery,
        ):
            intake = AnnounceIntake(ingester)
            addr = await serve(nursery, ipnisync_handler(chain))
            pub = x.peer_id()
            assert (
                intake.accept(Message.create(head_of(chain), [addr], pub), source="x").status == 204
            )
            await indexed(ingester, multihash(9))
            await until(lambda: not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == [addr]
            # The spoof: X's address has no such head, nor anything new; so its address is tried
            spoofed = Message.create(head_of(fake), [spoofer.addr], pub)
            assert intake.accept(spoofed, source="203.0.113.66").status == 204
            if spoof == "fast":  # its sync ends; X's addresses are still X's
                await until(lambda: spoofer.served >= 40 and not ingester.is_syncing(pub.raw))
                assert verified(ingester, pub) == [addr]
            else:
                await until(lambda: spoofer.asked > 0)  # the spoof's sync is at its address
            chain.add(x, [multihash(100 + i) for i in range(5)])  # X publishes, announces
            real = Message.create(head_of(chain), [addr], pub)
            assert intake.accept(real, source="x").status == 204
            took = await indexed(ingester, multihash(104), limit=10)
            print(
                f"\nspoof {spoof}: X's ad indexed after {took:.2f} s; spoof sent {spoofer.served}"
            )
            if spoof != "fast":
                assert spoofer.served < 40  # the spoof's sync could not have finished yet
            await until(lambda: not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == [addr]


@pytest.mark.parametrize("how", ["same address, bogus head", "4 other addresses"])
async def test_a_spoof_after_the_real_announce_cannot_lose_its_head(
    tmp_path: Path, how: str
) -> None:
    """X's sync runs (slowly); X announces its next head, which waits; spoofed announces then
    replace it (same address set, bogus head) or evict it (ADDR_SETS others): X's head is still
    indexed, because a head X's own address does not have is replaced by the one X signed."""
    x = key(260)
    chain = chain_of(x, 1, 0, per_ad=5)
    publisher = ChainServer(chain)
    with servers(publisher), KV(tmp_path / "db") as kv:
        async with ingesting(kv) as (ingester, _):
            intake = AnnounceIntake(ingester)
            pub = await synced_then_grown(intake, ingester, x, chain, publisher.addr)
            publisher.pause, asked = 0.5, publisher.asked
            second = Message.create(head_of(chain), [publisher.addr], pub)
            assert intake.accept(second, source="x").status == 204
            await until(lambda: publisher.asked > asked)  # its sync runs, slowly
            chain.add(x, [multihash(200 + i) for i in range(5)])
            third = Message.create(head_of(chain), [publisher.addr], pub)
            assert intake.accept(third, source="x").status == 204  # waits for the running one
            if how.startswith("same"):
                spoofs = [Message.create(junk_link(0), [publisher.addr], pub)]
            else:
                spoofs = [
                    Message.create(junk_link(i), [f"/ip4/127.0.0.1/tcp/{i + 2}/http"], pub)
                    for i in range(ADDR_SETS)
                ]
            for spoofed in spoofs:
                assert intake.accept(spoofed, source="203.0.113.66").status == 204
            took = await indexed(ingester, multihash(204), limit=20)
            print(f"\nspoof after the real announce ({how}): X's head indexed after {took:.2f} s")
            await until(lambda: not ingester.is_syncing(pub.raw), limit=20)
            assert verified(ingester, pub) == [publisher.addr]


async def test_a_spoof_cannot_preempt_a_slow_sync_at_verified_addresses(tmp_path: Path) -> None:
    """X's own sync at its verified address is slow (silent past stall_after); a spoofed announce
    with other addresses arrives: X's sync goes on (the spoof's would try X's address first)."""
    x = key(250)
    chain = chain_of(x, 1, 0, per_ad=5)
    publisher = ChainServer(chain)
    with servers(publisher), KV(tmp_path / "db") as kv:
        async with ingesting(kv, stall_after=0.3, slow_sync_after=0.3) as (ingester, _):
            intake = AnnounceIntake(ingester)
            pub = await synced_then_grown(intake, ingester, x, chain, publisher.addr)
            publisher.pause = 1.5  # each block now takes 1.5 s: silent for 5 x stall_after
            asked = publisher.asked
            real = Message.create(head_of(chain), [publisher.addr], pub)
            assert intake.accept(real, source="x").status == 204
            await until(lambda: publisher.asked > asked)  # X's block is on its way, slowly
            spoofed = Message.create(junk_link(7), [REFUSED], pub)
            assert intake.accept(spoofed, source="203.0.113.66").status == 204
            await indexed(ingester, multihash(104), limit=15)
            assert verified(ingester, pub) == [publisher.addr]


async def test_sync_timeout_ends_the_whole_sync_not_each_attempt(tmp_path: Path) -> None:
    """Verified addresses that stall until sync_timeout: the announced ones are not tried."""
    x = key(251)
    chain = chain_of(x, 1, 0, per_ad=5)
    publisher, other = ChainServer(chain), ChainServer(chain, stall=True)
    with servers(publisher, other), KV(tmp_path / "db") as kv:
        async with ingesting(kv, sync_timeout=1, stall_after=30) as (ingester, _):
            intake = AnnounceIntake(ingester)
            pub = await synced_then_grown(intake, ingester, x, chain, publisher.addr)
            publisher.stall = True
            moved = Message.create(head_of(chain), [other.addr], pub)
            assert intake.accept(moved, source="x").status == 204
            await until(lambda: not ingester.is_syncing(pub.raw))
            error = ingester.progress[pub.raw].error
            assert error is not None and error.startswith("SyncTimedOut"), error
            assert other.asked == 0  # the whole sync was over: no second attempt


async def test_a_stalled_spoof_yields_to_the_real_first_announce(tmp_path: Path) -> None:
    """First contact: the spoof arrives first and stalls; the real announce is indexed soon."""
    x = key(210)
    chain = chain_of(x, 2, 0, per_ad=5)
    spoofer = ChainServer(fake_chain(x.peer_id(), 1), stall=True)
    with servers(spoofer), KV(tmp_path / "db") as kv:
        async with ingesting(kv, stall_after=0.5, sync_timeout=60) as (ingester, nursery):
            intake = AnnounceIntake(ingester)
            addr = await serve(nursery, ipnisync_handler(chain))
            pub = x.peer_id()
            spoofed = Message.create(junk_link(1), [spoofer.addr], pub)
            assert intake.accept(spoofed, source="203.0.113.66").status == 204
            await until(lambda: spoofer.asked > 0)
            real = Message.create(head_of(chain), [addr], pub)
            assert intake.accept(real, source="x").status == 204
            took = await indexed(ingester, multihash(9), limit=10)
            print(f"\nfirst contact, stalled spoof: indexed after {took:.2f} s")
            await until(lambda: not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == [addr]


async def test_a_fast_spoof_on_first_contact_does_not_become_the_publishers_address(
    tmp_path: Path,
) -> None:
    """A spoof serving fake ads for a publisher never seen: its address is not verified."""
    x = key(211)
    chain = chain_of(x, 2, 0, per_ad=5)
    fake = fake_chain(x.peer_id(), 3)
    spoofer = ChainServer(fake)
    with servers(spoofer), KV(tmp_path / "db") as kv:
        async with ingesting(kv, stall_after=0.5) as (ingester, nursery):
            intake = AnnounceIntake(ingester)
            addr = await serve(nursery, ipnisync_handler(chain))
            pub = x.peer_id()
            assert intake.accept(Message.create(head_of(fake), [spoofer.addr], pub)).status == 204
            await until(lambda: spoofer.served >= 3 and not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == []
            real = Message.create(head_of(chain), [addr], pub)
            assert intake.accept(real, source="x").status == 204
            await indexed(ingester, multihash(9), limit=10)
            await until(lambda: not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == [addr]


# --- rate limits -----------------------------------------------------------------------------


async def test_spoofed_announces_spend_their_own_rate_limit(tmp_path: Path) -> None:
    """Announces naming X from S1 get 429 past the burst; X's own from S2 is accepted, indexed."""
    x = key(220)
    chain = chain_of(x, 2, 0, per_ad=5)
    now = [0.0]  # a frozen clock: no token comes back during the test
    with KV(tmp_path / "db") as kv:
        async with ingesting(kv) as (ingester, nursery):
            intake = AnnounceIntake(
                ingester, rate=1, burst=5, source_rate=1, source_burst=50, clock=lambda: now[0]
            )
            addr = await serve(nursery, ipnisync_handler(chain))
            pub = x.peer_id()
            spoofed = [
                intake.accept(Message.create(junk_link(i), [REFUSED], pub), source="203.0.113.9")
                for i in range(12)
            ]
            assert [r.status for r in spoofed] == [204] * 5 + [429] * 7
            # the same stranger naming other publishers spends its own source budget
            others = [
                intake.accept(
                    Message.create(junk_link(i), [REFUSED], key(300 + i).peer_id()),
                    source="203.0.113.9",
                ).status
                for i in range(60)
            ]
            assert others.count(204) == 50 - 5 and set(others[45:]) == {429}
            own = intake.accept(Message.create(head_of(chain), [addr], pub), source="198.51.100.7")
            assert own.status == 204 and own.message == ""
            await indexed(ingester, multihash(9))
            await until(lambda: not ingester.is_syncing(pub.raw))
            assert verified(ingester, pub) == [addr]


# --- re-announce after a failed sync ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("down", ["refused", "503"])
async def test_the_same_announce_after_a_failed_sync_is_acted_on(tmp_path: Path, down: str) -> None:
    x = key(230)
    chain = chain_of(x, 2, 0, per_ad=5)
    pub = x.peer_id()
    with KV(tmp_path / "db") as kv:
        async with ingesting(kv) as (ingester, nursery):
            intake = AnnounceIntake(ingester, dedupe_window=60)
            switch = Switch(chain)
            if down == "refused":
                port = free_port()
                addr = f"/ip4/127.0.0.1/tcp/{port}/http"
            else:
                addr = await serve(nursery, switch)
            msg = Message.create(head_of(chain), [addr], pub)
            assert intake.accept(msg, source="x").status == 204
            while_syncing = intake.accept(msg, source="x")  # its sync is pending: dropped
            assert (while_syncing.status, while_syncing.message) == (204, "already accepted")
            await until(lambda: not ingester.is_syncing(pub.raw))
            failed = ingester.progress[pub.raw]
            assert failed.error is not None and not ingester.index.lookup(multihash(9))
            staging = StagingArea(ingester.kv)
            assert staging.unsynced_announces() == []  # tried: nothing durable left
            if down == "refused":
                await serve(nursery, switch, port)
            switch.up = True
            again = intake.accept(msg, source="x")  # same head and addresses, within 60 s
            assert again.status == 204 and again.message == ""  # acted on, not "already accepted"
            await indexed(ingester, multihash(9))
            assert verified(ingester, pub) == [addr]


# --- floods ----------------------------------------------------------------------------------

FLOOD = 6000  # junk announces in process (the soak variant: 60,000, defaults, in a subprocess)
HISTORY, TABLE, BACKLOG = 250, 500, 500  # small bounds, so that the flood fills them many times
# A junk announce that left anything in memory would cost ~10 live blocks (its SyncProgress
# with its error, dict entries); trio's deadline heap alone keeps up to ~1,000 stale cancel
# scopes (~5 blocks each) between its prunes, so the bound is 5 blocks per announce.
LEAK_BLOCKS = 5


def live_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


async def test_an_announce_flood_plateaus_and_leaves_nothing_durable(tmp_path: Path) -> None:
    legit = key(240)
    chain = chain_of(legit, 1, 50_000, per_ad=10)
    with KV(tmp_path / "db") as kv:
        async with ingesting(kv, history=HISTORY) as (ingester, nursery):
            intake = AnnounceIntake(ingester, table=TABLE)
            addr = await serve(nursery, ipnisync_handler(chain))
            took: list[float] = []

            async def legit_announce() -> None:  # at 50% of the flood
                message = Message.create(head_of(chain), [addr], legit.peer_id())
                assert intake.accept(message, source="198.51.100.1").status == 204
                nursery.start_soon(lambda: watch(took))

            async def watch(into: list[float]) -> None:
                into.append(await indexed(ingester, multihash(50_009), limit=60))

            before = live_blocks()
            quarters = await flood(intake, ingester, FLOOD, backlog=BACKLOG, at_half=legit_announce)
            blocks = [q["blocks"] for q in quarters]
            print(
                f"\nflood of {FLOOD}: live blocks {before}, then {blocks}; legit indexed {took} s"
            )
            print("  rss (MiB)", [q["rss"] >> 20 for q in quarters], quarters[-1]["records"])
            assert quarters[-1]["statuses"] == {204: FLOOD}  # all accepted: none was turned away
            # The Python heap plateaus: the last quarter adds less than LEAK_BLOCKS per announce
            assert blocks[3] - blocks[2] < LEAK_BLOCKS * FLOOD // 4, blocks
            # ... because every table is bounded by its configuration, not by the flood
            assert len(ingester.progress) <= HISTORY + BACKLOG + 1
            assert len(ingester.results) <= HISTORY
            assert max(len(intake._seen), len(intake._pairs._tokens)) <= TABLE
            assert len(intake._sources._tokens) <= TABLE
            # Nothing durable of the junk: no announce record, no publisher record, only the
            # legitimate publisher's index and records (the same count at 75% and 100%).
            assert quarters[0]["records"] == {"A": 0, "P": 0, "all": 1}  # the walk id counter
            assert quarters[2]["records"] == quarters[3]["records"]
            assert quarters[3]["records"]["A"] == 0 and quarters[3]["records"]["P"] == 1
            assert took and ingester.index.lookup(multihash(50_000))  # the legit one was indexed
            # /sync/status: bounded by the configured history, not by the flood, and paged
            rows, pages, largest = status_pages(ingester, limit=100)
            print(f"  /sync/status: {rows} rows in {pages} pages, the largest {largest} bytes")
            assert rows <= HISTORY + BACKLOG + 1 and pages == -(-rows // 100)
            assert largest < 100 * 2048
            first = sync_status(
                ingester, StagingArea(ingester.kv), Request("GET", "/sync/status", {}, {})
            )
            assert isinstance(first.body, bytes)
            assert len(msgspec.json.decode(first.body)) == min(rows, STATUS_PAGE)


async def test_a_restart_after_a_flood_replays_only_what_was_not_tried(tmp_path: Path) -> None:
    untried = 200
    with KV(tmp_path / "db") as kv:
        async with ingesting(kv, history=HISTORY) as (ingester, _):
            intake = AnnounceIntake(ingester, table=TABLE)
            await flood(intake, ingester, 1500, backlog=BACKLOG)
            assert durable(kv)["A"] == 0
            for i in range(10_000, 10_000 + untried):  # accepted, then the daemon stops at once
                assert intake.accept(junk_announce(i), source=f"junk-{i}").status == 204
        assert durable(kv) == {"A": untried, "P": 0, "all": untried + 1}
        async with ingesting(kv, history=HISTORY) as (restarted, _):
            assert restarted.pending_publishers == untried  # replayed: these, not the 1,700
            with trio.fail_after(60):
                await restarted.wait_idle()
            assert durable(kv) == {"A": 0, "P": 0, "all": 1}


async def test_an_announce_cannot_carry_unbounded_addresses(tmp_path: Path) -> None:
    pub = key(241).peer_id()
    many = [f"/ip4/127.0.0.1/tcp/{port}/http" for port in range(1, MAX_ADDRS + 2)]
    long = "/ip4/127.0.0.1/tcp/1" + "/ip4/127.0.0.1/tcp/2" * 60 + "/http"  # 601 bytes binary
    with KV(tmp_path / "db") as kv:
        async with ingesting(kv) as (ingester, _):
            intake = AnnounceIntake(ingester)
            assert intake.accept(Message.create(junk_link(1), many, pub)).status == 400
            assert intake.accept(Message.create(junk_link(1), [long], pub)).status == 400
            assert intake.accept(Message.create(junk_link(1), many[:MAX_ADDRS], pub)).status == 204
            assert durable(kv)["A"] == 1


async def test_junk_publishers_answered_with_junk_ads_leave_nothing_durable(tmp_path: Path) -> None:
    """Fake peer IDs whose address serves an ad for each (named for it, signed by a stranger):
    every sync fetches its ad, and still nothing of them is kept."""
    count = 200
    blocks: dict[Link, bytes] = {}
    for i in range(count):
        ad = make_ad(key(999), provider=str(junk_peer(i)), context_id=b"junk %d" % i)
        cid, raw = encode_block(ad.to_node())
        blocks[cid] = raw
    server = ChainServer(MemorySource(*blocks.items()))
    with servers(server), KV(tmp_path / "db") as kv:
        async with ingesting(kv) as (ingester, _):
            intake = AnnounceIntake(ingester)
            for i, head in enumerate(blocks):
                message = Message.create(head, [server.addr], junk_peer(i))
                assert intake.accept(message, source=f"junk-{i}").status == 204
            with trio.fail_after(60):
                await ingester.wait_idle()
            # The server thread counts a block after its last write: the sync may be over first.
            await until(lambda: server.served >= count)
            assert server.served == count  # each sync got its junk ad
            errors = {str(p.error).split(":")[0] for p in ingester.progress.values()}
            assert errors == {"PolicyError"}
            assert durable(kv) == {"A": 0, "P": 0, "all": 1}
            assert StagingArea(ingester.kv).providers() == []


async def test_pending_strangers_do_not_lock_out_or_delay_a_known_publisher(
    tmp_path: Path,
) -> None:
    """Strangers whose address holds every connection fill the pending table and every slot;
    a known publisher's announce is still accepted, and synced at once."""
    x = key(270)
    chain = chain_of(x, 1, 0, per_ad=5)
    holding = ChainServer(MemorySource(), stall=True)  # accepts, answers one byte, then nothing
    with servers(holding), KV(tmp_path / "db") as kv:
        async with ingesting(kv, max_syncs=2, max_slow_syncs=2, slow_sync_after=60) as (
            ingester,
            nursery,
        ):
            intake = AnnounceIntake(ingester, max_publishers=10)
            addr = await serve(nursery, ipnisync_handler(chain))
            pub = x.peer_id()
            assert intake.accept(Message.create(head_of(chain), [addr], pub)).status == 204
            await indexed(ingester, multihash(4))
            await until(lambda: not ingester.is_syncing(pub.raw))
            junk = [
                intake.accept(
                    Message.create(junk_link(i), [holding.addr], junk_peer(i)), source=f"j{i}"
                ).status
                for i in range(11)
            ]
            assert junk == [204] * 10 + [503]  # the pending table is full
            await until(lambda: holding.asked >= 2)  # both slots are held
            chain.add(x, [multihash(100 + i) for i in range(5)])
            own = intake.accept(Message.create(head_of(chain), [addr], pub), source="x")
            assert own.status == 204
            took = await indexed(ingester, multihash(104), limit=10)
            print(
                f"\nknown publisher behind {holding.asked} held syncs: indexed after {took:.2f} s"
            )
            assert all(ingester.is_syncing(junk_peer(i).raw) for i in range(10))  # still held


@pytest.mark.soak
@pytest.mark.timeout(2400)  # its subprocess has 1800 s
def test_soak_a_flood_of_60000_plateaus_in_rss_and_restarts_in_no_time() -> None:
    """The tester's flood, at full size, with the default bounds, in its own process (RSS).

    LevelDB's memtable (64 MiB by default) holds every write until it is flushed, so RSS grows
    with the flood's writes until then (~0.6 KiB per junk announce); with a 4 MiB memtable the
    plateau shows within 60,000 announces.
    """
    root = ROOT
    flood = ["-m", "tests.indexer.ingest.flood", "--announces", "60000", "--write-buffer-mib", "4"]
    done = subprocess.run(
        [sys.executable, *flood],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *quarters, final = (json.loads(line) for line in done.stdout.splitlines())
    rss = [q["rss"] for q in quarters]
    print("\nsoak: rss (MiB)", [r >> 20 for r in rss], "final", final)
    assert rss[3] - rss[2] < rss[2] // 20  # the last quarter grows RSS by less than 5%
    assert all(q["records"]["A"] == 0 and q["records"]["P"] <= 1 for q in quarters)
    assert final["legit_indexed"] and final["replayed_on_restart"] == 300
    assert final["records_after_restart"]["A"] == 0
    assert final["status_largest_page"] < 2 << 20  # one page of /sync/status stays < 2 MiB
