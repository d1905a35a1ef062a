"""``indexer admin``, ``indexer find`` and ``indexer providers`` against a REAL daemon.

One daemon (a subprocess, ``--no-p2p``) and one ``publisher serve`` are shared by the module; the
chain is synced once with ``indexer admin sync --wait --json`` and every read command is checked
against it.  Every error path is checked to be exactly one line on stderr with a non-zero exit.
The CLI runs as the installed ``indexer`` script, as a user runs it.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58
import pytest

from staging import StagingArea
from staging.records import StagedAd
from store import KV
from sync import Link, PeerId, PrivateKey
from tests.e2e.test_publisher_cli import INDEXER, Serving, mh_lines, ok
from tests.httpstub import StubServer

RAW = 0x55


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the CLI's variables, plus ``extra``."""
    env = {**os.environ, "COLUMNS": "250"}
    for name in ("INDEXER_ADMIN_URL", "INDEXER_FIND_URL", "INDEXER_ADMIN_TOKEN"):
        env.pop(name, None)
    return {**env, **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env(**(env or {}))
    return subprocess.run(
        [INDEXER, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def cli_json(*args: str) -> Any:
    out = cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def one_line_error(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with ``code`` and said so in exactly one line, no traceback."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    line = out.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    for needle in needles:
        assert needle in line, line
    return line


class Daemon:
    """``indexer daemon`` in a subprocess; its log goes to a file (a pipe could fill up)."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        args = [INDEXER, "daemon", "--data-dir", str(data), "--json", "--no-p2p"]
        for name in ("find", "ingest", "admin"):
            args += [f"--{name}-addr", "127.0.0.1:0"]
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        self.log = (data.parent / f"{data.name}.log").open("a")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=clean_env(**(env or {}))
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, (data.parent / f"{data.name}.log").read_text()
        info = json.loads(line)
        self.admin, self.find, self.ingest = info["admin_url"], info["find_url"], info["ingest_url"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class HeldPublisher(StubServer):
    """An HTTP "publisher" on 127.0.0.1 that holds every request until released, then 404s."""

    def __init__(self) -> None:
        self.release = threading.Event()

        def hold(request: http.server.BaseHTTPRequestHandler) -> None:
            self.release.wait(20)
            request.send_error(404)

        super().__init__(hold)

    def close(self) -> None:
        self.release.set()
        super().close()


@dataclass
class Node:
    daemon: Daemon
    pub: str
    addr: str
    head: str
    synced: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("admin-cli")
    pub_dir = str(tmp / "pub")
    pub = ok("init", "--data-dir", pub_dir)["peer_id"]
    head = ""
    for i, ctx in enumerate(["a", "b", "c"]):
        added = ok("add", "--data-dir", pub_dir, "--context-id", ctx, "--multihashes", "-",
                   stdin=mh_lines(10 * i, 10))  # fmt: skip
        head = added["cid"]
    serving = Serving(tmp / "pub")
    daemon = Daemon(tmp / "idx")
    try:
        addr = serving.info["http_multiaddr"]
        synced = cli("admin", "sync", "--publisher", pub, "--addr", addr, "--wait", "--json",
                     "--admin-url", daemon.admin)  # fmt: skip
        yield Node(daemon, pub, addr, head, synced)
    finally:
        daemon.stop()
        serving.stop()


def test_sync_wait_indexes_the_chain_and_prints_the_final_row(node: Node) -> None:
    assert node.synced.returncode == 0, node.synced.stderr
    row = json.loads(node.synced.stdout)  # one JSON document: no progress bar off a terminal
    assert row["publisher"] == node.pub
    assert row["sync"]["walked"] == 3 and row["sync"]["staged"] == 3
    assert row["sync"]["processed"] == 3 and row["sync"]["running"] is False
    assert row["latest_processed"] == node.head and row["pending_ads"] == 0


def test_staging_is_empty_once_indexed(node: Node) -> None:
    assert cli_json("admin", "staging", "ls", "--admin-url", node.daemon.admin) == []
    table = cli("admin", "staging", "ls", "--admin-url", node.daemon.admin)
    assert table.returncode == 0 and "nothing pending" in table.stdout
    detail = cli_json("admin", "staging", "show", node.pub, "--admin-url", node.daemon.admin)
    assert detail["provider"] == node.pub and detail["last_ad"] == node.head
    assert detail["pending_ads"] == 0 and detail["stacks"] == []


def test_publishers_show_both_cursors_at_the_head(node: Node) -> None:
    [row] = cli_json("admin", "publishers", "--admin-url", node.daemon.admin)
    assert row["publisher"] == node.pub
    assert row["latest_processed"] == node.head == row["latest_scanned"]
    table = cli("admin", "publishers", "--admin-url", node.daemon.admin)
    assert table.returncode == 0 and node.pub in table.stdout and node.head[-8:] in table.stdout
    status = cli_json("admin", "status", "--admin-url", node.daemon.admin)
    assert status["Frozen"] is False and PeerId.parse(status["ID"])


def test_a_known_publisher_syncs_without_addr(node: Node) -> None:
    out = cli("admin", "sync", "--publisher", node.pub, "--admin-url", node.daemon.admin)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sync of {node.pub} started"


def test_find_by_base58_hex_and_cid_lists_the_provider(node: Node) -> None:
    hex_mh = mh_lines(0, 1).strip()  # in the ad of context "a"
    raw = bytes.fromhex(hex_mh)
    for key in (hex_mh, base58.b58encode(raw).decode(), str(Link(b"\x01\x55" + raw))):
        answer = cli_json("find", key, "--find-url", node.daemon.find)
        [result] = answer["MultihashResults"]
        assert [p["Provider"]["ID"] for p in result["ProviderResults"]] == [node.pub], key
        table = cli("find", key, "--find-url", node.daemon.find)
        assert table.returncode == 0, table.stderr
        [line] = [ln for ln in table.stdout.splitlines() if node.pub in ln]
        assert "bitswap" in line and "│ a " in line


def test_providers_lists_the_provider(node: Node) -> None:
    [info] = cli_json("providers", "--find-url", node.daemon.find)
    assert info["AddrInfo"]["ID"] == node.pub
    assert info["LastAdvertisement"] == {"/": node.head}
    table = cli("providers", "--find-url", node.daemon.find)
    assert table.returncode == 0 and node.pub in table.stdout


def test_find_of_an_unknown_multihash_is_no_results(node: Node) -> None:
    key = mh_lines(999, 1).strip()
    one_line_error(cli("find", key, "--find-url", node.daemon.find), 1, f"no results for {key}")


def test_unknown_provider_is_one_line(node: Node) -> None:
    stranger = str(PrivateKey.generate().peer_id())
    out = cli("admin", "staging", "show", stranger, "--admin-url", node.daemon.admin)
    one_line_error(out, 1, f"unknown provider {stranger}")


def test_bad_input_is_refused_locally(node: Node) -> None:
    admin = ("--admin-url", node.daemon.admin)
    out = cli("admin", "sync", "--publisher", "not-a-peer", "--addr", node.addr, *admin)
    one_line_error(out, 2, "bad publisher ID 'not-a-peer'")
    one_line_error(cli("admin", "staging", "show", "nope", *admin), 2, "bad provider ID 'nope'")
    out = cli("admin", "sync", "--publisher", node.pub, "--addr", "/not/a/multiaddr", *admin)
    one_line_error(out, 2, "--addr")
    one_line_error(cli("find", "not-a-cid", "--find-url", node.daemon.find), 2, "not a CID")


def test_no_daemon_is_one_line_for_every_command(node: Node) -> None:
    url = closed_port_url()
    for args in (
        ("admin", "staging", "ls", "--admin-url", url),
        ("admin", "staging", "show", node.pub, "--admin-url", url),
        ("admin", "publishers", "--admin-url", url),
        ("admin", "status", "--admin-url", url),
        ("admin", "sync", "--publisher", node.pub, "--addr", node.addr, "--admin-url", url),
        ("providers", "--find-url", url),
        ("find", mh_lines(0, 1).strip(), "--find-url", url),
    ):
        one_line_error(cli(*args), 1, f"no daemon at {url}: is `indexer daemon` running?")


def test_data_dir_of_a_running_daemon_says_use_the_api(node: Node) -> None:
    data = str(node.daemon.data)
    for args in (("ls",), ("show", node.pub)):
        out = cli("admin", "staging", *args, "--data-dir", data)
        one_line_error(out, 1, f"the daemon is running on {data}", "drop --data-dir")


def test_a_failed_sync_and_a_sync_already_running(node: Node) -> None:
    held = HeldPublisher()
    peer = str(PrivateKey.generate().peer_id())
    admin = ("--admin-url", node.daemon.admin)
    try:
        first = cli("admin", "sync", "--publisher", peer, "--addr", held.addr, *admin)
        assert first.returncode == 0 and first.stdout.strip() == f"sync of {peer} started"
        second = cli("admin", "sync", "--publisher", peer, "--addr", held.addr, *admin)
        one_line_error(second, 1, f"a sync of {peer} is already running")
        held.release.set()  # the head now answers 404: the sync fails
        deadline = time.monotonic() + 15
        while any(r["syncing"] for r in cli_json("admin", "publishers", *admin)):
            assert time.monotonic() < deadline, "the held sync never ended"
            time.sleep(0.1)
        out = cli("admin", "sync", "--publisher", peer, "--wait", *admin)
        one_line_error(out, 1, f"the daemon knows no address of {peer}: pass --addr")
        out = cli("admin", "sync", "--publisher", peer, "--addr", held.addr, "--wait", *admin)
        one_line_error(out, 1, f"sync of {peer} failed")
    finally:
        held.close()


def stage_offline(data: Path, ads: int) -> tuple[str, list[str]]:
    """Stage one committed walk of ``ads`` ads straight into a data directory's LevelDB."""
    provider, publisher = PrivateKey.generate().peer_id(), PrivateKey.generate().peer_id()
    staged = [StagedAd(Link.make(RAW, b"ad %d" % i).raw, b"ad %d" % i) for i in range(ads)]
    with KV(data / "db") as kv:
        area = StagingArea(kv)
        walk = area.begin_walk(publisher.raw, ["/ip4/127.0.0.1/tcp/9/http"], staged[0].cid)
        area.spill(walk, [(provider.raw, pos, ad) for pos, ad in enumerate(staged)])
        area.commit_walk(walk, {provider.raw: ads}, base_seq=area.commit_seq())
    return str(provider), [str(Link(ad.cid)) for ad in staged]


def test_data_dir_reads_a_stopped_daemons_staging(tmp_path: Path) -> None:
    provider, cids = stage_offline(tmp_path / "idx", 7)
    data = str(tmp_path / "idx")
    [row] = cli_json("admin", "staging", "ls", "--data-dir", data)
    assert row["provider"] == provider and row["pending_ads"] == 7 and row["stacks"] == 1
    assert row["working"] is None  # only a running daemon knows
    assert row["next_ad"] == cids[-1]  # the oldest (deepest) ad is applied first
    detail = cli_json("admin", "staging", "show", provider, "--data-dir", data)
    [stack] = detail["stacks"]
    assert stack["pending"] == stack["total"] == 7 and stack["next_ads"][0] == cids[-1]
    table = cli("admin", "staging", "ls", "--data-dir", data)
    assert table.returncode == 0 and provider in table.stdout
    stranger = str(PrivateKey.generate().peer_id())
    out = cli("admin", "staging", "show", stranger, "--data-dir", data)
    one_line_error(out, 1, f"unknown provider {stranger}")
    # Reading changed nothing: the same rows again.
    assert cli_json("admin", "staging", "ls", "--data-dir", data) == [row]


def test_a_missing_data_dir_is_one_line_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    out = cli("admin", "staging", "ls", "--data-dir", str(missing))
    one_line_error(out, 2, "no indexer database")
    assert not missing.exists()
    (tmp_path / "empty").mkdir()
    out = cli("admin", "staging", "show", str(PrivateKey.generate().peer_id()),
              "--data-dir", str(tmp_path / "empty"))  # fmt: skip
    one_line_error(out, 2, "no indexer database")
    assert list((tmp_path / "empty").iterdir()) == []


# --- the admin token ---------------------------------------------------------------------------

TOKEN = "cli-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon started with INDEXER_ADMIN_TOKEN set (on loopback, as every test daemon)."""
    daemon = Daemon(tmp_path_factory.mktemp("guarded") / "idx", {"INDEXER_ADMIN_TOKEN": TOKEN})
    try:
        yield daemon
    finally:
        daemon.stop()


def test_every_admin_command_sends_the_token_and_explains_a_401(guarded: Daemon) -> None:
    peer = str(PrivateKey.generate().peer_id())
    url = ("--admin-url", guarded.admin)
    commands = [
        ("admin", "staging", "ls"),
        ("admin", "staging", "show", peer),
        ("admin", "publishers"),
        ("admin", "status"),
        ("admin", "sync", "--publisher", peer, "--addr", "/ip4/127.0.0.1/tcp/9/http"),
    ]
    for args in commands:
        one_line_error(
            cli(*args, *url), 1, "the daemon needs an admin token: set INDEXER_ADMIN_TOKEN"
        )
        wrong = {"INDEXER_ADMIN_TOKEN": "not-the-daemons-token-0123456789"}
        one_line_error(cli(*args, *url, env=wrong), 1, "refused the admin token")
    right = {"INDEXER_ADMIN_TOKEN": TOKEN}
    status = cli("admin", "status", "--json", *url, env=right)
    assert status.returncode == 0, status.stderr
    assert PeerId.parse(json.loads(status.stdout)["ID"])
    assert cli_json("admin", "publishers", "--admin-token", TOKEN, *url) == []
    out = cli("admin", "staging", "show", peer, *url, env=right)
    one_line_error(out, 1, f"unknown provider {peer}")  # past the token: the daemon answered
    one_line_error(
        cli("admin", "status", *url, env={"INDEXER_ADMIN_TOKEN": "a b"}), 2, "not an admin token"
    )
