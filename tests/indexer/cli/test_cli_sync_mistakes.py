"""A user's sync mistakes, as the installed ``indexer`` script answers them: one line each.

``admin sync --addr`` without a transport is refused before any request (the admin URL is a
closed port: reaching it would be a different error); ``indexer ingest`` of an unreachable
publisher exits 1 naming it; Ctrl-C of ``admin sync --wait`` (a real subprocess and real
signals, a real daemon syncing a publisher that holds every request) says the sync goes on in
the daemon and exits 130, also when a second Ctrl-C follows at once; so does Ctrl-C of
``indexer ingest`` in the middle of a fetch (no trio error, no traceback).
"""

from __future__ import annotations

import http.server
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync import PrivateKey
from tests.e2e.test_publisher_cli import INDEXER
from tests.httpstub import StubServer
from tests.indexer.cli.test_cli_admin import (
    Daemon,
    HeldPublisher,
    clean_env,
    cli,
    cli_json,
    closed_port_url,
    one_line_error,
)


@pytest.mark.parametrize(
    "addr", ["/ip4/127.0.0.1/tcp/9", "/ip6/::1/tcp/9", "/dns4/example.com/tcp/443"]
)
def test_sync_addr_without_a_transport_is_refused_with_the_fix(addr: str) -> None:
    peer = str(PrivateKey.generate().peer_id())
    url = closed_port_url()
    out = cli("admin", "sync", "--publisher", peer, "--addr", addr, "--admin-url", url)
    one_line_error(
        out, 2, f"--addr {addr} names no transport to fetch from",
        f"add /http for an HTTP publisher (e.g. {addr}/http)", f"or /p2p/{peer} for a libp2p one",
    )  # fmt: skip
    for fine in (f"{addr}/http", f"{addr}/p2p/{peer}", f"/p2p/{peer}"):  # accepted: no daemon
        out = cli("admin", "sync", "--publisher", peer, "--addr", fine, "--admin-url", url)
        one_line_error(out, 1, f"no daemon at {url}")


def test_ingest_of_an_unreachable_publisher_exits_1_naming_it(tmp_path: Path) -> None:
    peer = str(PrivateKey.generate().peer_id())
    addr = closed_port_url().replace("http://127.0.0.1:", "/ip4/127.0.0.1/tcp/") + "/http"
    out = subprocess.run(
        [INDEXER, "ingest", "--data-dir", str(tmp_path / "idx"), "--publisher",
         f"{addr}/p2p/{peer}"],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    [last] = out.stderr.strip().splitlines()  # the only line: no log line says it first
    assert last.startswith(f"error: sync of {peer} at {addr} failed: "), last
    assert "fetch head from" in last and "127.0.0.1" in last, last


@pytest.fixture
def held_sync(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``admin sync --wait`` following a sync the daemon cannot finish (the publisher holds)."""
    daemon, held = Daemon(tmp_path / "idx"), HeldPublisher()
    peer = str(PrivateKey.generate().peer_id())
    admin = ("--admin-url", daemon.admin)
    args = [INDEXER, "admin", "sync", "--publisher", peer, "--addr", held.addr, "--wait", *admin]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        deadline = time.monotonic() + 20  # the daemon runs the sync: the CLI follows it
        while not any(r["syncing"] for r in cli_json("admin", "publishers", *admin)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.05)
        yield proc, peer
        rows = cli_json("admin", "publishers", *admin)
        assert [r["syncing"] for r in rows] == [True]  # Ctrl-C left the sync running
    finally:
        proc.kill()
        proc.wait()
        held.close()
        assert daemon.stop() == 0


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_of_sync_wait_says_the_sync_goes_on(
    held_sync: tuple[subprocess.Popen[str], str], signals: int
) -> None:
    proc, peer = held_sync
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr and "Trio" not in stderr, stderr
    assert stderr.strip() == (
        f"interrupted: the sync of {peer} goes on in the daemon (follow it with "
        "`indexer admin publishers`)"
    )


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_of_ingest_mid_fetch_exits_130_in_one_line(tmp_path: Path, signals: int) -> None:
    asked, release = threading.Event(), threading.Event()

    def hold(request: http.server.BaseHTTPRequestHandler) -> None:
        asked.set()
        release.wait(30)
        request.send_error(404)

    stub = StubServer(hold)
    peer = str(PrivateKey.generate().peer_id())
    args = [INDEXER, "ingest", "--data-dir", str(tmp_path / "idx")]
    args += ["--publisher", f"{stub.addr}/p2p/{peer}"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        assert asked.wait(30), "ingest never asked the publisher"
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)  # well before the 30 s fetch timeout
    finally:
        proc.kill()
        release.set()
        stub.close()
    assert proc.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr and "Trio" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted: what was staged is indexed by the next `indexer ingest` (or the daemon) on "
        "this data directory"
    )
