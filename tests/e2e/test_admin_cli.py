"""``indexer admin staging ls`` shows the pending work while a daemon ingests (issue 6).

A real ``publisher serve`` is reached through a proxy on 127.0.0.1 that passes the head and the
ads but holds every entry chunk until the test releases it, so the chain is walked and staged
and then waits, however fast or loaded the machine is; the chain is announced over HTTP to a
real ``indexer daemon`` and the CLI is polled as an operator would poll it.  No timing is
asserted: only what the CLI showed, and that it ends with nothing staged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from indexer.publisher.chain import Publisher
from sync import Link, Message, PeerId
from sync.model.metadata import bitswap
from tests.e2e.test_publisher_cli import INDEXER, Serving
from tests.httpstub import SlowProxy
from tests.indexer.cli.test_cli_admin import Daemon, clean_env, cli_json

ADS = 12
DELAY = 0.05  # per block once released: the indexing after the release spans a few CLI polls


@dataclass
class Chain:
    pub: str
    head: str
    proxy: SlowProxy


@contextlib.contextmanager
def slowed_chain(tmp_path: Path) -> Iterator[Chain]:
    """``ADS`` ads of 10 multihashes each, served by ``publisher serve`` behind a ``SlowProxy``
    that holds the entry chunks until ``chain.proxy.release()``."""
    publisher = Publisher.init(tmp_path / "pub")
    ads = set()
    for i in range(ADS):
        mhs = [b"\x12\x20" + hashlib.sha256(b"%d/%d" % (i, j)).digest() for j in range(10)]
        ads.add(publisher.add(b"ctx-%d" % i, mhs, bitswap()).cid)
    pub, head = str(publisher.peer_id), str(publisher.head())
    publisher.close()
    serving = Serving(tmp_path / "pub")
    origin = "/".join(serving.info["url"].split("/")[:3])  # http://127.0.0.1:port
    proxy = SlowProxy(origin, DELAY, pass_only=frozenset(ads))
    try:
        yield Chain(pub, head, proxy)
    finally:
        proxy.close()
        serving.stop()


def wait_until_staged(daemon: Daemon, chain: Chain) -> int:
    """Poll ``staging ls`` until the walk has staged every ad (the entries are held)."""
    deadline = time.monotonic() + 60
    while (
        n := pending(cli_json("admin", "staging", "ls", "--admin-url", daemon.admin), chain.pub)
    ) < ADS:
        assert time.monotonic() < deadline, f"the walk never staged the chain ({n} of {ADS})"
    return n


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
            seen = [wait_until_staged(daemon, chain)]  # the work is visible while it waits...
            chain.proxy.release()
            wait_until_indexed(daemon, chain, seen)
            assert all(0 < n <= ADS for n in seen), seen
            assert seen == sorted(seen, reverse=True), seen  # ...and only ever went down
            assert cli_json("admin", "staging", "ls", "--admin-url", daemon.admin) == []
            assert chain.proxy.delayed >= 2 * ADS  # every ad and every entry chunk was slowed
            assert chain.proxy.held >= ADS  # and every entry chunk waited for the release
        finally:
            assert daemon.stop() == 0
        # The stopped daemon's data directory says the same, read offline.
        assert cli_json("admin", "staging", "ls", "--data-dir", str(tmp_path / "idx")) == []


def test_work_left_by_a_killed_daemon_is_read_offline_then_resumed(tmp_path: Path) -> None:
    data = str(tmp_path / "idx")
    with slowed_chain(tmp_path) as chain:
        daemon = Daemon(tmp_path / "idx")
        announce(daemon, chain)
        wait_until_staged(daemon, chain)
        daemon.stop(signal.SIGKILL)  # its worker is waiting for the first ad's entries
        [row] = cli_json("admin", "staging", "ls", "--data-dir", data)
        assert row["provider"] == chain.pub and row["pending_ads"] == ADS
        assert row["working"] is None and row["publishers"] == [chain.pub]
        detail = cli_json("admin", "staging", "show", chain.pub, "--data-dir", data)
        assert sum(s["pending"] for s in detail["stacks"]) == row["pending_ads"]
        # A restarted daemon resumes the staged work with no new announce.
        chain.proxy.release()
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
            waiting = subprocess.Popen(
                [INDEXER, "admin", "sync", "--publisher", chain.pub, "--addr", chain.proxy.addr,
                 "--wait", *admin, "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
            )  # fmt: skip
            # The sync itself ends after the walk; the entries are still held: it must wait.
            wait_until_staged(daemon, chain)
            assert waiting.poll() is None, waiting.communicate()
            chain.proxy.release()
            out, err = waiting.communicate(timeout=60)
            assert waiting.returncode == 0, err
            row = json.loads(out)
            assert row["sync"]["walked"] == row["sync"]["processed"] == ADS
            assert row["pending_ads"] == 0 and row["latest_processed"] == chain.head
            assert cli_json("admin", "staging", "ls", *admin) == []
        finally:
            assert daemon.stop() == 0
