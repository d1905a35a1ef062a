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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.etcd import STATE_FILE as ETCD_STATE
from tests.cluster.etcd import EtcdCluster, EtcdMissing, free_base_port
from tests.cluster.valkey import HarnessError, ValkeyCluster, start_cluster

__all__ = ["main"]

NODES = 3
STATE = "cluster.json"
INDEXER = shutil.which("indexer", path=str(Path(sys.executable).parent)) or "indexer"


def _start_node(directory: Path, i: int, store: str, etcd: str, base: int) -> dict[str, Any]:
    data = directory / f"n{i}"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "node.toml"
    config.write_text(f'[cluster]\nstore = "{store}"\netcd = "{etcd}"\nnode = "n{i}"\n')
    ports = [base + 3 * i + k for k in range(3)]
    args = [INDEXER, "daemon", "--data-dir", str(data), "--config", str(config), "--no-p2p"]
    args += ["--find-addr", f"127.0.0.1:{ports[0]}", "--ingest-addr", f"127.0.0.1:{ports[1]}"]
    args += ["--admin-addr", f"127.0.0.1:{ports[2]}", "--json"]
    log = (data / "daemon.log").open("ab")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the daemon prints its URLs once it serves
    if not line:
        raise RuntimeError(f"node n{i} did not start; see {data / 'daemon.log'}")
    info: dict[str, Any] = json.loads(line)
    info |= {"node": f"n{i}", "pid": proc.pid, "log": str(data / "daemon.log")}
    return info


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
        base = free_base_port(3 * NODES)
        for i in range(NODES):
            nodes.append(_start_node(directory, i, valkey.url, ",".join(etcd.endpoints), base))
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
