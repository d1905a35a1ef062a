"""``make cluster`` / ``make cluster-stop``: a whole local cluster on loopback, for trying it.

``python -m tests.cluster.local up --dir D`` starts a 3+3 Valkey cluster (``tests.cluster.valkey``),
a 3-member etcd (``tests.cluster.etcd``) and three ``indexer daemon`` nodes (``n0``..``n2``, each
with its own data directory and ``node.toml`` under ``D``), then prints each node's find,
ingest and admin URLs.  ``down`` stops the daemons (SIGTERM: they hand their publishers back),
then etcd, then Valkey.  Rules: every server binds 127.0.0.1; the daemons' ports are picked
free below the ephemeral range; ``up`` refuses a directory that is already up; each step waits
a bounded time and undoes what it started when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.daemon import DaemonProcess, cluster_config, free_ports
from tests.cluster.etcd import STATE_FILE as ETCD_STATE
from tests.cluster.etcd import EtcdCluster, EtcdMissing
from tests.cluster.valkey import HarnessError, ValkeyCluster, start_cluster

__all__ = ["main"]

NODES = 3
STATE = "cluster.json"


def _start_node(directory: Path, i: int, store: str, etcd: str) -> dict[str, Any]:
    node = DaemonProcess(
        directory / f"n{i}", cluster_config(store, etcd, f"n{i}"), ports=free_ports(), detach=True
    )
    try:
        info = node.ready()
    except RuntimeError as exc:
        raise RuntimeError(f"node n{i}: {exc}") from None
    return info | {"node": f"n{i}", "pid": node.proc.pid, "log": str(node.log)}


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def up(directory: Path) -> int:
    if (directory / STATE).exists():
        print(f"a cluster is already up in {directory} (make cluster-stop first)", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    valkey = start_cluster(directory / "valkey")
    valkey.dir = directory / "valkey"
    valkey.save()
    try:
        etcd = EtcdCluster(directory / "etcd")
        etcd.start(detach=True)
        etcd.save()
    except BaseException:
        valkey.stop()
        raise
    nodes: list[dict[str, Any]] = []
    state = {"nodes": nodes}
    try:
        for i in range(NODES):
            nodes.append(_start_node(directory, i, valkey.url, ",".join(etcd.endpoints)))
    except BaseException:
        for node in nodes:
            _stop_pid(node["pid"])
        etcd.stop()
        valkey.stop()
        raise
    (directory / STATE).write_text(json.dumps(state, indent=2))
    print(f"valkey {valkey.url}")
    print(f"etcd   {','.join(etcd.endpoints)}")
    for node in nodes:
        print(f"{node['node']}: find {node['find_url']}  ingest {node['ingest_url']}  "
              f"admin {node['admin_url']}")  # fmt: skip
    return 0


def down(directory: Path) -> int:
    path = directory / STATE
    if not path.exists():
        print(f"no cluster is up in {directory}", file=sys.stderr)
        return 1
    for node in json.loads(path.read_text())["nodes"]:
        _stop_pid(node["pid"])
        print(f"{node['node']} stopped")
    if (directory / "etcd" / ETCD_STATE).exists():
        EtcdCluster.load(directory / "etcd").stop()
        (directory / "etcd" / ETCD_STATE).unlink()
        print("etcd stopped")
    if (directory / "valkey" / "cluster.json").exists():
        ValkeyCluster.load(directory / "valkey").stop()
        (directory / "valkey" / "cluster.json").unlink()
        print("valkey stopped")
    path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.local", description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path("cluster"), help="state and data")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    try:
        return up(directory) if args.action == "up" else down(directory)
    except (HarnessError, EtcdMissing, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
