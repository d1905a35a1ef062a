"""The real ``indexer daemon`` among bad publishers: it stays up, and comes up again.

``PUT /announce`` for publishers that refuse connections, answer 500, reset the connection,
drip, serve other bytes for a CID, a block over the cap or a redirect that does not parse (in
the walk, or at an entries chunk), and for a good ``indexer publisher serve`` that announces
itself.  The daemon must keep answering ``/health``, index the good publisher, and show each
bad one's error through the admin API (``/publishers``, ``/staging``: polled), ``indexer admin
publishers --json`` and ``indexer admin staging ls --json`` (checked once per run), the find
API's provider info and its JSON log lines.  Then it is killed (SIGKILL) with the bad publishers'
announces recorded as accepted and not yet synced (exactly what the intake writes before it
answers 204: before supervision, replaying them killed the daemon at every start) and started
again with the bad publishers still bad: it comes up, replays them, stays up, and the good
content is still found.  A SIGTERM then stops it cleanly.

Every wait is bounded (count and time); nothing is timed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from staging import StagingArea
from store import KV
from sync import Link, Message, PeerId, PrivateKey
from tests.e2e.test_publisher_cli import INDEXER, Serving, mh_lines, ok
from tests.faultpub import FaultPublisher, block_at, close_all, closed_port, fault_chain

MAX_BLOCK = 16 << 10
CONFIG = f"""
[ingest]
fetch_timeout = 1.0
max_block = {MAX_BLOCK}
slow_sync_after = 2.0
stall_after = 1.0
"""
# (fault, position, the error class an operator must see)
BAD = [
    ("refuse", "announce", "FetchFailed"),
    ("500", "walk", "FetchFailed"),
    ("reset", "walk", "FetchFailed"),
    ("drip", "walk", "FetchFailed"),
    ("mismatch", "walk", "HashMismatch"),
    ("oversize", "walk", "BlockTooLarge"),
    ("bad_redirect", "walk", "FetchFailed"),  # was an untyped ValueError from urljoin
    ("500", "later_chunk", "FetchFailed"),  # transient: staged, retried, across the restart
    ("reset", "first_chunk", "FetchFailed"),
    ("oversize", "first_chunk", "BlockTooLarge"),  # permanent: the ad is skipped, recorded
]


class Daemon:
    """``indexer daemon`` with its JSON log lines in a file (a pipe nobody reads would fill)."""

    def __init__(self, data: Path, config: Path, log: Path) -> None:
        args = [INDEXER, "daemon", "--data-dir", str(data), "--config", str(config), "--json"]
        args += ["--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0"]
        args += ["--admin-addr", "127.0.0.1:0", "--no-p2p"]
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the start-up line: every service listens
        assert line, log.read_text()[-3000:]
        self.info: dict[str, Any] = json.loads(line)
        self.client = httpx.Client(timeout=10)

    def up(self) -> bool:
        """The process lives and its ingest server answers ``/health``."""
        if self.proc.poll() is not None:
            return False
        health = self.client.get(f"{self.info['ingest_url']}/health")
        return health.status_code == 200 and health.text.startswith("ready")

    def api(self, path: str) -> Any:
        """``GET <admin API><path>`` as JSON (what ``indexer admin ... --json`` prints)."""
        r = self.client.get(f"{self.info['admin_url']}{path}")
        assert r.status_code == 200, r.text
        return r.json()

    def admin(self, *args: str) -> Any:
        """``indexer admin <args> --json`` against this daemon, as an operator runs it."""
        out = subprocess.run(
            [INDEXER, "admin", *args, "--admin-url", self.info["admin_url"], "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def announce(self, peer: PeerId, head: Link, addr: str) -> None:
        message = Message.create(head, [addr], peer)
        r = self.client.put(f"{self.info['ingest_url']}/announce", content=message.to_cbor())
        assert r.status_code == 204, r.text

    def found(self, mh_hex: str) -> list[str]:
        r = self.client.get(f"{self.info['find_url']}/multihash/{mh_hex}")
        if r.status_code != 200:
            return []
        return [
            p["Provider"]["ID"] for m in r.json()["MultihashResults"] for p in m["ProviderResults"]
        ]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for text in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue  # a traceback rendered by format_exc_info spans one JSON line; others
        return lines

    def stop(self, sig: signal.Signals) -> int:
        self.client.close()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@dataclass
class Bad:
    fault: str
    position: str
    expected: str
    key: PrivateKey
    addr: str = ""
    pub: FaultPublisher | None = None

    def __post_init__(self) -> None:
        self.chain = fault_chain(self.key, 0)
        self.head = self.chain.head_link

    @property
    def name(self) -> str:
        return f"{self.fault}@{self.position}"

    @property
    def peer(self) -> str:
        return str(self.key.peer_id())

    @property
    def announced_addr(self) -> str:
        """Its address as announced (intake wants ``/p2p/<publisher>`` on every address)."""
        return f"{self.addr}/p2p/{self.peer}"

    @property
    def at_walk(self) -> bool:
        return self.position in ("walk", "announce")


@pytest.fixture
def bad() -> Iterator[list[Bad]]:
    made = [Bad(f, p, e, PrivateKey.generate()) for f, p, e in BAD]
    for b in made:
        if b.position == "announce":
            b.addr = closed_port()
            continue
        target = block_at(b.chain, b.position)
        decoy = b.chain.blocks[block_at(b.chain, b.position, decoy=True)]
        b.pub = FaultPublisher(b.chain, b.fault, target, max_block=MAX_BLOCK, decoy=decoy)
        b.addr = b.pub.addr
    yield made
    close_all(b.pub for b in made if b.pub is not None)


def until(what: Callable[[], list[str]], daemon: Daemon, limit: float) -> None:
    """Poll ``what()`` (what is still awaited) until it is empty; the daemon must stay up."""
    deadline = time.monotonic() + limit
    left = what()
    while left:
        assert daemon.up(), f"the daemon went down: {daemon.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"still waiting for: {left}"
        time.sleep(0.2)
        left = what()


def _shown(daemon: Daemon, bad: list[Bad], *, cli: bool = False) -> list[str]:
    """The bad publishers whose error is not yet where an operator looks, with its class
    (read from the admin API, or with ``cli`` from ``indexer admin ... --json``)."""
    if cli:
        publishers, staging = daemon.admin("publishers"), daemon.admin("staging", "ls")
    else:
        publishers, staging = daemon.api("/publishers"), daemon.api("/staging")
    rows = {r["publisher"]: r for r in publishers}
    staged = {r["provider"]: r for r in staging}
    left = []
    for b in bad:
        row = rows.get(b.peer) or {}
        if b.at_walk:  # never synced: the live error, also in the table's last error
            error = (row.get("sync") or {}).get("error") or ""
            if row.get("last_error") != error:
                error = ""
        elif b.expected == "BlockTooLarge":  # permanent: on the provider, as find shows it
            info = daemon.client.get(f"{daemon.info['find_url']}/providers/{b.peer}")
            error = info.json().get("LastError", "") if info.status_code == 200 else ""
        else:  # transient: the stack waits, retried, with its error
            error = (staged.get(b.peer) or {}).get("last_error") or ""
        if not error.startswith(b.expected):
            left.append(b.name)
    return left


def _attempts(daemon: Daemon) -> dict[str, int]:
    """Attempts so far of each provider's oldest staged stack (``indexer admin staging ls``)."""
    return {r["provider"]: r["attempts"] for r in daemon.api("/staging")}


def _logged(daemon: Daemon, b: Bad) -> bool:
    """A warning or error log line names the publisher (or provider) and the error's class."""
    return any(
        b.peer in (line.get("publisher"), line.get("provider"))
        and line.get("level") in ("warning", "error")
        and str(line.get("error", "")).startswith(b.expected)
        for line in daemon.log_lines()
    )


def test_daemon_survives_bad_publishers_and_restarts_among_them(
    tmp_path: Path, bad: list[Bad]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    data = tmp_path / "idx"
    pub_dir = tmp_path / "pub"
    good = ok("init", "--data-dir", str(pub_dir))["peer_id"]
    mhs = mh_lines(0, 40).split()
    added = ok("add", "--data-dir", str(pub_dir), "--context-id", "good",
               "--multihashes", "-", stdin="\n".join(mhs) + "\n")  # fmt: skip

    daemon = Daemon(data, config, tmp_path / "run1.log")
    serving: Serving | None = None
    try:
        for b in bad:
            assert b.head is not None
            daemon.announce(b.key.peer_id(), b.head, b.announced_addr)
        serving = Serving(pub_dir, "--announce", daemon.info["ingest_url"])

        def waiting() -> list[str]:
            missing = [m for m in mhs if good not in daemon.found(m)]
            return (["good"] if missing else []) + _shown(daemon, bad)

        until(waiting, daemon, 60)
        assert _shown(daemon, bad, cli=True) == []  # as an operator reads it
        for b in bad:
            assert _logged(daemon, b), b.name
        rows = {r["publisher"]: r for r in daemon.admin("publishers")}
        assert rows[good]["latest_processed"] == added["cid"] and rows[good]["last_error"] is None
        retried = _attempts(daemon)
    finally:
        if serving is not None:
            serving.stop()
        daemon.stop(signal.SIGKILL)

    # The bad publishers' announces, as accepted and not yet synced; the publishers stay bad.
    with KV(data / "db") as kv:
        staging = StagingArea(kv)
        for b in bad:
            if b.at_walk:
                assert b.head is not None
                staging.record_announce(b.key.peer_id().raw, b.head.raw, [b.addr])  # no /p2p/
        replay = len(staging.unsynced_announces())
        assert replay == sum(b.at_walk for b in bad)

    daemon = Daemon(data, config, tmp_path / "run2.log")  # it comes up: every service listens
    try:
        for _ in range(15):  # and stays up while the replays fail
            assert daemon.up(), daemon.log.read_text()[-3000:]
            time.sleep(0.2)

        def again() -> list[str]:  # the replays failed again; the staged ads were retried
            attempts = _attempts(daemon)
            return _shown(daemon, bad) + [p for p, n in retried.items() if attempts[p] <= n]

        until(again, daemon, 60)
        assert _shown(daemon, bad, cli=True) == []
        assert all(good in daemon.found(m) for m in mhs)  # the good content is still found
        [replaying] = [
            line
            for line in daemon.log_lines()
            if line["event"] == "replaying announces accepted before a restart"
        ]
        assert replaying["announces"] == replay
        for b in bad:
            if b.at_walk:
                assert _logged(daemon, b), b.name
        assert daemon.up()
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
