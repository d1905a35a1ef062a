"""``indexer admin staging ls`` shows the pending work while a daemon ingests (issue 6).

A real ``publisher serve`` is reached through a proxy on 127.0.0.1 that delays every block (ads
and entry chunks, not the head) so the ingest takes seconds; the chain is announced over HTTP to
a real ``indexer daemon`` and the CLI is polled as an operator would poll it.  No timing is
asserted: only what the CLI showed, and that it ends with nothing staged.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from indexer.publisher.chain import Publisher
from sync import Link, Message, PeerId
from sync.model.metadata import bitswap
from tests.e2e.test_publisher_cli import Serving
from tests.httpstub import SlowProxy
from tests.indexer.cli.test_cli_admin import Daemon, cli_json

ADS = 12  # staged work stays visible for several CLI polls (each ~0.7 s)
DELAY = 0.3


@dataclass
class Chain:
    pub: str
    head: str
    proxy: SlowProxy


@contextlib.contextmanager
def slowed_chain(tmp_path: Path) -> Iterator[Chain]:
    """``ADS`` ads of 10 multihashes each, served by ``publisher serve`` behind a ``SlowProxy``."""
    publisher = Publisher.init(tmp_path / "pub")
    for i in range(ADS):
        mhs = [b"\x12\x20" + hashlib.sha256(b"%d/%d" % (i, j)).digest() for j in range(10)]
        publisher.add(b"ctx-%d" % i, mhs, bitswap())
    pub, head = str(publisher.peer_id), str(publisher.head())
    publisher.close()
    serving = Serving(tmp_path / "pub")
    origin = "/".join(serving.info["url"].split("/")[:3])  # http://127.0.0.1:port
    proxy = SlowProxy(origin, DELAY)
    try:
        yield Chain(pub, head, proxy)
    finally:
        proxy.close()
        serving.stop()


def announce(daemon: Daemon, chain: Chain) -> None:
    message = Message.create(Link.parse(chain.head), [chain.proxy.addr], PeerId.parse(chain.pub))
    reply = httpx.put(
        f"{daemon.ingest}/announce", content=message.to_cbor(),
        headers={"content-type": "application/octet-stream"}, timeout=10,
    )  # fmt: skip
    assert reply.status_code == 204, reply.text


def pending(rows: list[dict[str, object]], provider: str) -> int:
    counts = [int(str(r["pending_ads"])) for r in rows if r["provider"] == provider]
    return counts[0] if counts else 0


def wait_until_indexed(daemon: Daemon, chain: Chain, seen: list[int]) -> None:
    """Poll ``staging ls`` (recording what it shows) until the head is processed, nothing left."""
    admin = ("--admin-url", daemon.admin)
    deadline = time.monotonic() + 40
    while True:
        assert time.monotonic() < deadline, f"not indexed in time; staging showed {seen}"
        rows = cli_json("admin", "staging", "ls", *admin)
        if rows:  # each CLI call is a process start: look at the publishers only when idle
            seen.append(pending(rows, chain.pub))
            continue
        heads = [r["latest_processed"] for r in cli_json("admin", "publishers", *admin)]
        if heads == [chain.head]:
            return


def test_staging_ls_shows_the_pending_work_while_it_runs(tmp_path: Path) -> None:
    with slowed_chain(tmp_path) as chain:
        daemon = Daemon(tmp_path / "idx")
        try:
            announce(daemon, chain)
            seen: list[int] = []
            wait_until_indexed(daemon, chain, seen)
            assert any(n > 0 for n in seen), seen  # the work was visible while it ran...
            assert all(0 < n <= ADS for n in seen), seen
            assert seen == sorted(seen, reverse=True), seen  # ...and only ever went down
            assert cli_json("admin", "staging", "ls", "--admin-url", daemon.admin) == []
            assert chain.proxy.delayed >= 2 * ADS  # every ad and every entry chunk was slowed
        finally:
            assert daemon.stop() == 0
        # The stopped daemon's data directory says the same, read offline.
        assert cli_json("admin", "staging", "ls", "--data-dir", str(tmp_path / "idx")) == []


def test_work_left_by_a_killed_daemon_is_read_offline_then_resumed(tmp_path: Path) -> None:
    data = str(tmp_path / "idx")
    with slowed_chain(tmp_path) as chain:
        daemon = Daemon(tmp_path / "idx")
        announce(daemon, chain)
        deadline = time.monotonic() + 20
        while not pending(
            cli_json("admin", "staging", "ls", "--admin-url", daemon.admin), chain.pub
        ):
            assert time.monotonic() < deadline, "nothing was ever staged"
        daemon.stop(signal.SIGKILL)
        [row] = cli_json("admin", "staging", "ls", "--data-dir", data)
        assert row["provider"] == chain.pub and 0 < row["pending_ads"] <= ADS
        assert row["working"] is None and row["publishers"] == [chain.pub]
        detail = cli_json("admin", "staging", "show", chain.pub, "--data-dir", data)
        assert sum(s["pending"] for s in detail["stacks"]) == row["pending_ads"]
        # A restarted daemon resumes the staged work with no new announce.
        daemon = Daemon(tmp_path / "idx")
        try:
            seen: list[int] = []
            wait_until_indexed(daemon, chain, seen)
            assert all(n <= row["pending_ads"] for n in seen), (seen, row)
        finally:
            assert daemon.stop() == 0
    assert cli_json("admin", "staging", "ls", "--data-dir", data) == []


def test_sync_wait_returns_only_once_everything_is_indexed(tmp_path: Path) -> None:
    with slowed_chain(tmp_path) as chain:
        daemon = Daemon(tmp_path / "idx")
        try:
            admin = ("--admin-url", daemon.admin)
            row = cli_json("admin", "sync", "--publisher", chain.pub, "--addr", chain.proxy.addr,
                           "--wait", *admin)  # fmt: skip
            # The sync itself ends after the walk; the entries were still being fetched then.
            assert row["sync"]["walked"] == row["sync"]["processed"] == ADS
            assert row["pending_ads"] == 0 and row["latest_processed"] == chain.head
            assert cli_json("admin", "staging", "ls", *admin) == []
        finally:
            assert daemon.stop() == 0
