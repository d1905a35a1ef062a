"""Shared pytest configuration: where the conformance vectors live, Hypothesis profiles, and the
session's real Valkey cluster (``valkey_cluster``: started on first use, never skipped: a missing
server binary fails with how to install one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.cluster.etcd import EtcdCluster, EtcdMissing
from tests.cluster.valkey import HarnessError, ValkeyCluster, start_cluster

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
JS = ROOT / "tests" / "js"
JS_CLIENTS = ("@helia/delegated-routing-v1-http-api-client", "@libp2p/ipni-content-routing")

settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"conformance vectors missing: {FIXTURES} (shared/ must sit beside the repo)")
    return FIXTURES


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, with the real JS clients of ``tests/js`` installed (``npm ci``)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the JS clients (Debian: apt-get install npm)")
    if not all((JS / "node_modules" / name).is_dir() for name in JS_CLIENTS):
        cmd = [npm, "ci", "--no-audit", "--no-fund"]
        done = subprocess.run(cmd, cwd=JS, timeout=300, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS} failed:\n{done.stderr[-2000:]}")
    return node


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """One 3-primary, 3-replica Valkey cluster for the session, on 127.0.0.1."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("valkey"))
    except HarnessError as exc:
        pytest.fail(f"Valkey cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    try:
        cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    except EtcdMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
