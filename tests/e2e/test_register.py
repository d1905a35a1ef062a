"""``POST /register`` on a real daemon: a provider registers its addresses with a signed
RegisterRequest (go-libipni's), find's ``/providers/{id}`` shows them; replays, forgeries,
refused providers and floods are refused with the status storetheindex would give."""

from __future__ import annotations

from pathlib import Path

import httpx

from sync import PrivateKey
from sync.announce.register import make_register_request
from tests.cluster.daemon import DaemonProcess, free_ports


def test_a_provider_registers_and_a_replay_or_forgery_does_not(tmp_path: Path) -> None:
    key, denied = PrivateKey.generate(), PrivateKey.generate()
    config = f'[policy]\ndeny_providers = ["{denied.peer_id()}"]\n'
    daemon = DaemonProcess(tmp_path / "idx", config, ports=free_ports())
    try:
        info = daemon.ready()
        url = f"{info['ingest_url']}/register"
        request = make_register_request(key, ["/ip4/10.1.2.3/tcp/4001"], seq=100)
        assert httpx.post(url, content=request, timeout=10).status_code == 200
        found = httpx.get(f"{info['find_url']}/providers/{key.peer_id()}", timeout=10)
        assert found.status_code == 200, found.text
        assert found.json()["AddrInfo"]["Addrs"] == ["/ip4/10.1.2.3/tcp/4001"]
        replay = httpx.post(url, content=request, timeout=10)
        assert replay.status_code == 400 and "not newer" in replay.text
        newer = make_register_request(key, ["/ip4/10.9.9.9/tcp/1"], seq=101)
        assert httpx.post(url, content=newer, timeout=10).status_code == 200
        found = httpx.get(f"{info['find_url']}/providers/{key.peer_id()}", timeout=10)
        assert found.json()["AddrInfo"]["Addrs"] == ["/ip4/10.9.9.9/tcp/1"]
        forged = bytearray(make_register_request(key, ["/ip4/10.6.6.6/tcp/1"], seq=102))
        forged[-1] ^= 1
        bad = httpx.post(url, content=bytes(forged), timeout=10)
        assert bad.status_code == 400 and "cannot read register request" in bad.text
        refused = make_register_request(denied, ["/ip4/10.7.7.7/tcp/1"])
        assert httpx.post(url, content=refused, timeout=10).status_code == 403
        assert httpx.get(url, timeout=10).status_code == 405
        junk = [httpx.post(url, content=b"junk", timeout=10).status_code for _ in range(12)]
        assert 429 in junk and set(junk) <= {400, 429}  # a flood is rate limited per source
    finally:
        assert daemon.stop() == 0
