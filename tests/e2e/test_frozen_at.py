"""``FrozenAt`` in find's ``ProviderInfo`` against a real daemon (issue 13).

A real ``publisher serve`` is synced by a real ``indexer daemon``; ``PUT /freeze`` then gives
every provider ``FrozenAt`` (its last ad) and ``FrozenAtTime`` (that ad's time), as
storetheindex's registry ``freezeProviders`` does; a restart stays frozen with them, and
``DELETE /freeze`` clears both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_publisher_cli import Serving, mh_lines, ok
from tests.indexer.cli.test_cli_admin import Daemon, cli


def _info(daemon: Daemon, pub: str) -> dict[str, Any]:
    r = httpx.get(f"{daemon.find}/providers/{pub}", timeout=10)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    listed = httpx.get(f"{daemon.find}/providers", timeout=10).json()
    assert [p for p in listed if p["AddrInfo"]["ID"] == pub] == [doc]  # the list says the same
    return doc


def test_freeze_sets_frozen_at_in_find_and_unfreeze_clears_it(tmp_path: Path) -> None:
    pub_dir = str(tmp_path / "pub")
    pub = ok("init", "--data-dir", pub_dir)["peer_id"]
    head = ok("add", "--data-dir", pub_dir, "--context-id", "a", "--multihashes", "-",
              stdin=mh_lines(0, 10))["cid"]  # fmt: skip
    serving = Serving(tmp_path / "pub")
    daemon = Daemon(tmp_path / "idx")
    try:
        addr = serving.info["http_multiaddr"]
        done = cli("admin", "sync", "--publisher", pub, "--addr", addr, "--wait", "--json",
                   "--admin-url", daemon.admin)  # fmt: skip
        assert done.returncode == 0, done.stderr
        before = _info(daemon, pub)
        assert before["LastAdvertisement"] == {"/": head}
        assert before["FrozenAt"] is None and "FrozenAtTime" not in before
        frozen = httpx.put(f"{daemon.admin}/freeze", timeout=10)
        assert frozen.status_code == 200 and frozen.json()["Frozen"] is True
        at = _info(daemon, pub)
        assert at["FrozenAt"] == {"/": head}
        assert at["FrozenAtTime"] == before["LastAdvertisementTime"]
        assert {k: v for k, v in at.items() if not k.startswith("FrozenAt")} == {
            k: v for k, v in before.items() if k != "FrozenAt"
        }
        assert daemon.stop() == 0  # durable: a restart is still frozen, FrozenAt kept
        daemon = Daemon(tmp_path / "idx")
        assert _info(daemon, pub) == at
        thawed = httpx.delete(f"{daemon.admin}/freeze", timeout=10)
        assert thawed.status_code == 200 and thawed.json()["Frozen"] is False
        assert _info(daemon, pub) == before
    finally:
        daemon.stop()
        serving.stop()
