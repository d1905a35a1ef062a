"""Reloading a running daemon's config: ``indexer admin reload-config`` and SIGHUP.

A real daemon; the policy is changed in its file and reloaded: a publisher denied by the new
file gets 403 on its next announce without a restart; a bad file is refused in one line and the
old policy stays; SIGHUP reloads too, and a changed ``[server]`` address is reported as needing a
restart.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx

from sync import Message, PeerId, PrivateKey
from tests.builders import link
from tests.cluster.daemon import INDEXER, DaemonProcess, free_ports


def _announce(daemon: DaemonProcess, publisher: PeerId, seed: int) -> int:
    message = Message.create(link(seed), ["/ip4/127.0.0.1/tcp/1/http"], publisher)
    url = f"{daemon.info['ingest_url']}/announce"
    return httpx.put(url, content=message.to_cbor(), timeout=10).status_code


def _reload(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INDEXER, "admin", "reload-config", "--admin-url", daemon.info["admin_url"]],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_a_reload_applies_the_policy_and_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    publisher = PrivateKey.generate().peer_id()
    find, ingest, admin = free_ports()
    config = "[policy]\ndeny_publishers = []\n"
    daemon = DaemonProcess(tmp_path / "idx", config, ports=(find, ingest, admin))
    path = daemon.data / "node.toml"
    try:
        daemon.ready()
        assert _announce(daemon, publisher, 1) == 204
        path.write_text(f'[policy]\ndeny_publishers = ["{publisher}"]\n')
        out = _reload(daemon)
        assert out.returncode == 0 and out.stdout.strip() == f"reloaded {path}", out
        assert _announce(daemon, publisher, 2) == 403  # no restart
        path.write_text("[policy\n")  # a bad file
        out = _reload(daemon)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        line = out.stderr.strip()
        assert "\n" not in line and "not reloaded, the old configuration stays" in line, line
        assert "cannot read it as TOML" in line
        assert _announce(daemon, publisher, 3) == 403  # the old policy is still in force
        path.write_text('[policy]\ndeny_publishers = []\n[server]\nfind_addr = "127.0.0.1:1"\n')
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not daemon.events("configuration reloaded")[1:]:  # another process: poll its log
            assert time.monotonic() < deadline, "SIGHUP did not reload within 20 s"
            time.sleep(0.05)
        [_, by_signal] = daemon.events("configuration reloaded")
        assert by_signal["not_applied"] == ["server"]
        assert _announce(daemon, publisher, 4) == 204
        assert httpx.get(f"{daemon.info['find_url']}/health", timeout=5).status_code == 200
    finally:
        assert daemon.stop() == 0
