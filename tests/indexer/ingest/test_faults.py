"""Fault injection: every publisher fault at every position, while good publishers ingest.

One ``Ingester`` on a real LevelDB serves, at once, three good publishers (the production h11
server) and one bad publisher per (fault, position) (``tests.faultpub``: real sockets on
127.0.0.1).  Faults: the publisher goes away (refused), a TCP reset mid-body, 500, a body
dripped slower than the fetcher's timeout, another block's bytes for a CID, a body over the
block cap (with and without a length), a redirect that does not parse (it raised an untyped
``ValueError`` in the client), and an unexpected exception (a bug) from the fetcher.
Positions: the signed head (a sync with no announced CID), the walk (an ad after the head, once
ads were spilled), an ad's first entries chunk, a later one; plus a publisher whose announced
address refuses from the start.

It must hold: the ingester stays up, every good multihash is indexed, and each bad publisher's
error (naming its class) is where an operator looks: the admin views (``publisher_rows``,
``staging_rows``, ``staging_detail``), the provider's record for a permanent ad error, and a
structured log line.  Then the ingester is restarted on the same LevelDB with the bad
publishers still bad and their announces recorded as accepted (what made the daemon die at
every start before supervision): it comes up, replays them, stays up, good content still found.

Transient faults are retried forever, so ``wait_idle`` would not return: every wait is a
condition polled under ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from structlog.testing import capture_logs

from indexer.admin.views import publisher_rows, staging_detail, staging_rows
from indexer.ingest.engine import IngestConfig, Ingester
from staging import StagingArea
from store import KV
from sync import Link, PeerId, PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.head import SignedHead
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder
from tests.faultpub import (
    ADS,
    WIRE_FAULTS,
    FaultPublisher,
    block_at,
    buggy_factory,
    close_all,
    closed_port,
    fault_chain,
    fault_mhs,
)

MAX_BLOCK = 16 << 10
FETCH_TIMEOUT = 1.0  # a drip (a byte every 0.25 s) never finishes a block in time
CONFIG = IngestConfig(
    segment=2,
    retry_base=0.05,
    retry_max=0.4,
    max_attempts=2,
    slow_sync_after=1.0,
    stall_after=0.5,
    sync_timeout=20.0,
)
FAULTS = (*WIRE_FAULTS, "bug")
POSITIONS = ("head", "walk", "first_chunk", "later_chunk")
CLASS = {
    "refuse": "FetchFailed",
    "reset": "FetchFailed",
    "500": "FetchFailed",
    "drip": "FetchFailed",
    "mismatch": "HashMismatch",
    "oversize": "BlockTooLarge",
    "oversize_stream": "BlockTooLarge",
    "bad_redirect": "FetchFailed",
}
TEXT = {  # what else the error says, so an operator can tell the faults apart
    "refuse": "ConnectError",
    "reset": "Connection reset",
    "500": "status 500",
    "drip": "TooSlowError",
    "mismatch": "hash",
    "oversize": "cap",
    "oversize_stream": "cap",
    "bad_redirect": "bad redirect",
}
BUGS: dict[str, Exception] = {
    "head": RuntimeError("injected bug at the signed head"),
    "walk": RuntimeError("injected bug at the walk"),
    "first_chunk": KeyError("injected bug at the first chunk"),
    "later_chunk": RuntimeError("injected bug at a later chunk"),
}
PERMANENT = {"mismatch", "oversize", "oversize_stream"}  # at an entries chunk: the ad is skipped
Log = Mapping[str, Any]  # one structured log line, as structlog.testing.capture_logs keeps it


@dataclass
class Case:
    fault: str
    position: str
    key: PrivateKey
    base: int
    chain: ChainBuilder = field(init=False)
    target: Link = field(init=False)  # for "head", the head ad (the signed head names it)
    pub: FaultPublisher | None = None
    addr: str = ""

    def __post_init__(self) -> None:
        self.chain = fault_chain(self.key, self.base)
        self.target = block_at(self.chain, self.position) if self.position != "head" else self.ad(2)

    @property
    def name(self) -> str:
        return f"{self.fault}@{self.position}"

    @property
    def peer(self) -> PeerId:
        return self.key.peer_id()

    @property
    def expected(self) -> str:
        if self.fault == "bug":
            return type(BUGS[self.position]).__name__
        if self.fault == "mismatch" and self.position == "head":
            return "SignatureError"  # a head is not content-addressed: its signature is checked
        return CLASS[self.fault]

    @property
    def wire_target(self) -> str:
        """What the fault hits, as ``FaultPublisher`` and ``BuggyFetcher`` name it."""
        if self.position != "head":
            return str(self.target)
        return f"head of {self.peer}" if self.fault == "bug" else "head"

    @property
    def announced(self) -> Link | None:
        """The CID announced: none at the head position (the sync fetches the signed head)."""
        return None if self.position == "head" else self.chain.head_link

    @property
    def at_walk(self) -> bool:
        """The fault stops the sync (nothing staged), rather than a worker."""
        return self.position in ("head", "walk", "announce")

    @property
    def permanent(self) -> bool:
        return not self.at_walk and self.fault in PERMANENT

    def ad(self, i: int) -> Link:
        return self.chain.order[i][0]


def _cases() -> list[Case]:
    cases = [Case("refuse", "announce", PrivateKey.generate(), 0)]
    for f, fault in enumerate(FAULTS):
        for p, position in enumerate(POSITIONS):
            cases.append(Case(fault, position, PrivateKey.generate(), 10_000 * (1 + 3 * f + p)))
    return cases


@pytest.fixture
def cases() -> Iterator[list[Case]]:
    made = _cases()
    for case in made:
        if case.position == "announce" or case.name == "refuse@head":
            case.addr = closed_port()  # it refuses from the start
            continue
        if case.position == "head":
            decoy = SignedHead.create(case.ad(2), PrivateKey.generate()).encode()
        else:
            decoy = case.chain.blocks[block_at(case.chain, case.position, decoy=True)]
        case.pub = FaultPublisher(
            case.chain, case.fault, case.wire_target, max_block=MAX_BLOCK, decoy=decoy
        )
        case.addr = case.pub.addr
    yield made
    close_all(c.pub for c in made if c.pub is not None)


def _fetchers(cases: list[Case]) -> Callable[..., Any]:
    bugs = {c.wire_target: BUGS[c.position] for c in cases if c.fault == "bug"}
    return buggy_factory(fetcher_factory(max_block=MAX_BLOCK, timeout=FETCH_TIMEOUT), bugs)


def _indexed(ingester: Ingester, peer: PeerId, mhs: list[bytes]) -> bool:
    return all(peer.raw in {r.provider for r in ingester.index.lookup(m)} for m in mhs)


def _ad_indexed(ingester: Ingester, case: Case, ad: int) -> bool:
    done = StagingArea(ingester.kv).done(case.ad(ad).raw)
    return done is not None and done.ok and _indexed(ingester, case.peer, fault_mhs(case.base, ad))


def _attempts(ingester: Ingester, peer: PeerId) -> int:
    stacks = StagingArea(ingester.kv).stacks(peer.raw)
    return stacks[0][1].attempts if stacks else 0


def _settled(ingester: Ingester, case: Case, attempts: int) -> bool:
    """``case``'s fault has shown itself: the sync failed, the ad was skipped, or it retried."""
    if case.at_walk:
        progress = ingester.progress.get(case.peer.raw)
        return progress is not None and not progress.running and progress.error is not None
    if case.permanent:
        done = StagingArea(ingester.kv).done(case.ad(1).raw)
        return done is not None and not done.ok and _ad_indexed(ingester, case, 2)
    return _attempts(ingester, case.peer) >= attempts


async def _until(what: Callable[[], list[str]], limit: float) -> None:
    """Poll until ``what()`` lists nothing left to wait for (its last list if time runs out)."""
    left = what()
    try:
        with trio.fail_after(limit):
            while left:
                await trio.sleep(0.05)
                left = what()
    except trio.TooSlowError:
        pytest.fail(f"still waiting for: {left}")


def _log(logs: Sequence[Log], case: Case) -> list[Log]:
    """The structured log lines naming ``case``'s publisher or provider."""
    peer = str(case.peer)
    return [e for e in logs if peer in (e.get("publisher"), e.get("provider"))]


def _names(entry: Log) -> str:
    """What a log line says the error was: its ``error`` field, or its exception's class."""
    exc = entry.get("exc_info")
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return str(entry.get("error", ""))


def _check_views(ingester: Ingester, case: Case) -> None:
    """Where an operator looks, the bad publisher's error names its class."""
    name, cls = case.name, case.expected
    staging = StagingArea(ingester.kv)
    [row] = [r for r in _publisher_rows(ingester) if r["publisher"] == str(case.peer)]
    rows = cast(list[dict[str, Any]], staging_rows(staging, ingester.working))
    staged = {r["provider"]: r for r in rows}
    if case.at_walk:
        # Never synced: nothing durable; the live sync status says why (publisher_rows).
        assert row["sync"]["error"].startswith(cls), (name, row)
        assert row["last_error"] == row["sync"]["error"], (name, row)
        assert row["latest_scanned"] is None, (name, row)
        assert not staging.has_publisher(case.peer.raw), name
        assert str(case.peer) not in staged, name
        assert all(p != case.peer.raw for p, _ in staging.unsynced_announces()), name
        assert not any(staging.is_known(case.ad(a).raw) for a in range(ADS)), name
        return
    assert row["latest_scanned"] == str(case.chain.head_link), (name, row)
    detail: dict[str, Any] = staging_detail(staging, ingester.index, case.peer)
    if case.permanent:
        done = staging.done(case.ad(1).raw)
        assert done is not None and (done.error or "").startswith(cls), (name, done)
        record = ingester.index.provider(case.peer.raw)
        assert record is not None and (record.last_error or "").startswith(cls), (name, record)
        assert detail["last_error"] == record.last_error and detail["stacks"] == [], name
        assert row["pending_ads"] == 0, (name, row)
        return
    # Transient: the stack stays, is retried, and says why.
    srow = staged[str(case.peer)]
    assert srow["attempts"] >= 2 and srow["last_error"].startswith(cls), (name, srow)
    assert detail["stacks"][0]["last_error"].startswith(cls), name  # read later: maybe newer
    assert row["pending_ads"] >= 2, (name, row)  # this ad and the next wait, in order
    assert staging.done(case.ad(2).raw) is None, name


def _publisher_rows(ingester: Ingester) -> list[dict[str, Any]]:
    rows = publisher_rows(StagingArea(ingester.kv), ingester.syncing, ingester.progress)
    return cast(list[dict[str, Any]], rows)


def _check_log(logs: Sequence[Log], case: Case) -> None:
    lines = _log(logs, case)
    said = [_names(e) for e in lines if e.get("log_level") in ("warning", "error")]
    assert any(s.startswith(case.expected) for s in said), (case.name, lines)
    if case.fault in TEXT:
        text = "signed by" if case.expected == "SignatureError" else TEXT[case.fault]
        assert any(text.lower() in s.lower() for s in said), (case.name, said)
    if case.fault == "bug":  # a bug is logged with its traceback
        assert any(isinstance(e.get("exc_info"), type(BUGS[case.position])) for e in lines)


async def _serve_good(nursery: trio.Nursery, n: int) -> list[tuple[PrivateKey, ChainBuilder, str]]:
    good = []
    for i in range(n):
        key = PrivateKey.generate()
        chain = fault_chain(key, 1_000_000 * (i + 1), ads=4)
        listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
        good.append((key, chain, f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"))
    return good


async def test_every_fault_at_every_position_while_good_publishers_ingest(
    tmp_path: Path, cases: list[Case]
) -> None:
    fetchers = _fetchers(cases)
    async with trio.open_nursery() as servers:
        good = await _serve_good(servers, 3)
        good_mhs = [(k.peer_id(), [m for _, ms in c.order for m in ms]) for k, c, _ in good]

        # --- first run: everything announced at once -------------------------------------
        kv = KV(tmp_path / "db")
        ingester = Ingester(kv, fetchers, config=CONFIG)
        exited = trio.Event()
        with kv, capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(_run, ingester, exited)
                for case in cases:
                    ingester.request_sync(case.peer, [case.addr], case.announced)
                for key, chain, addr in good:
                    ingester.request_sync(key.peer_id(), [addr], chain.head_link)

                def waiting() -> list[str]:
                    left = [str(p) for p, ms in good_mhs if not _indexed(ingester, p, ms)]
                    return left + [c.name for c in cases if not _settled(ingester, c, 2)]

                await _until(waiting, 40)
                assert not exited.is_set()
                for case in cases:
                    _check_views(ingester, case)
                    _check_log(logs, case)
                    if case.at_walk:
                        assert not any(_ad_indexed(ingester, case, a) for a in range(ADS))
                    elif case.fault != "refuse":  # a refusing publisher may be gone sooner
                        assert _ad_indexed(ingester, case, 0), case.name
                before = {c.name: _attempts(ingester, c.peer) for c in cases}
                nursery.cancel_scope.cancel()
        assert not _errors_escaped(logs)

        # --- restart: bad publishers still bad, their announces recorded as accepted ------
        kv = KV(tmp_path / "db")
        ingester = Ingester(kv, fetchers, config=CONFIG)
        replayed = [c for c in cases if c.at_walk and c.announced is not None]
        for case in replayed:  # what the intake writes before it answers 204
            head = case.announced
            assert head is not None
            StagingArea(ingester.kv).record_announce(case.peer.raw, head.raw, [case.addr])
        exited = trio.Event()
        with kv, capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(_run, ingester, exited)  # it comes up

                def replaying() -> list[str]:
                    left = [c.name for c in replayed if not _settled(ingester, c, 0)]
                    transient = [c for c in cases if not c.at_walk and not c.permanent]
                    return left + [
                        c.name
                        for c in transient
                        if _attempts(ingester, c.peer) < before[c.name] + 1
                    ]

                await _until(replaying, 30)
                assert not exited.is_set()
                assert [e for e in logs if e["event"].startswith("replaying announces")]
                for p, ms in good_mhs:
                    assert _indexed(ingester, p, ms)
                shown = {r["publisher"] for r in _publisher_rows(ingester)}
                for case in cases:
                    if case.at_walk and case not in replayed:
                        assert str(case.peer) not in shown, case.name  # nothing durable left
                    else:
                        _check_views(ingester, case)
                for case in replayed:
                    _check_log(logs, case)
                nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()


async def _run(
    ingester: Ingester, exited: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    try:
        await ingester.run(task_status=task_status)
    finally:
        exited.set()


def _errors_escaped(logs: Sequence[Log]) -> list[Log]:
    """Log lines saying a record could not be written: an error the supervision itself hit."""
    return [e for e in logs if e["event"].startswith("cannot record")]


async def test_a_bug_fetching_a_block_the_walk_never_needs_does_not_fail_the_sync(
    tmp_path: Path,
) -> None:
    """The lookahead fetches the next ad's guess while the walker checks the current one; when
    the walk stops before it (a known ad), whatever that fetch raised must not matter."""
    key = PrivateKey.generate()
    chain = fault_chain(key, 0, ads=2)
    bugs: dict[str, Exception] = {}
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, _bugs_on(bugs), config=CONFIG)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
            addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            await nursery.start(ingester.run)
            ingester.request_sync(key.peer_id(), [addr], chain.head_link)
            with trio.fail_after(20):
                await ingester.wait_idle()
            known = chain.head_link
            assert known is not None
            bugs[str(known)] = RuntimeError("a bug on a block the walk does not need")
            chain.add(key, fault_mhs(0, 2), context_id=b"ctx-2")  # its PreviousID: the known ad
            with capture_logs() as logs:
                ingester.request_sync(key.peer_id(), [addr], chain.head_link)
                with trio.fail_after(20):
                    await ingester.wait_idle()
            progress = ingester.progress[key.peer_id().raw]
            assert progress.error is None and progress.staged == 1, progress
            assert _indexed(ingester, key.peer_id(), fault_mhs(0, 2))
            bugs_logged = [e for e in logs if isinstance(e.get("exc_info"), RuntimeError)]
            assert bugs_logged and bugs_logged[0]["block"] == str(known)  # seen, with the block
            nursery.cancel_scope.cancel()


def _bugs_on(bugs: dict[str, Exception]) -> Callable[..., Any]:
    return buggy_factory(fetcher_factory(max_block=MAX_BLOCK, timeout=FETCH_TIMEOUT), bugs)
