"""A real ``indexer daemon`` subprocess, as the cluster tests, ``make cluster`` and the cluster
bench start it: one class so the three agree on the flags, the config and the log.

Rules: the daemon's log (stderr) goes to ``<data>/daemon.log``, never a pipe (a busy daemon would
fill it and block); its one stdout line (``--json``: the URLs) is read by ``ready``; every
server binds 127.0.0.1, on the ports given (``free_ports`` picks them below the ephemeral range)
or on port 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests.cluster.etcd import free_base_port

__all__ = ["INDEXER", "DaemonProcess", "cluster_config", "free_ports", "until"]

INDEXER = shutil.which("indexer", path=str(Path(sys.executable).parent)) or "indexer"


async def until(
    check: Callable[[], Awaitable[bool]], limit: float, what: str, *, poll: float = 0.05
) -> None:
    """Poll ``check`` (other processes' state: no event to wait for) until true, or fail."""
    with trio.move_on_after(limit):
        while True:
            if await check():
                return
            await trio.sleep(poll)
    raise AssertionError(f"not within {limit:g} s: {what}")


def free_ports() -> tuple[int, int, int]:
    """Free (find, ingest, admin) ports below the ephemeral range."""
    base = free_base_port(3)
    return base, base + 1, base + 2


def cluster_config(store: str, etcd: str, node: str, **settings: object) -> str:
    """A ``[cluster]`` section: ``store``, ``etcd``, ``node`` and any other of its keys."""
    lines = [f'store = "{store}"', f'etcd = "{etcd}"', f'node = "{node}"']
    for key, value in settings.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "[cluster]\n" + "\n".join(lines) + "\n"


class DaemonProcess:
    """``indexer daemon --data-dir data`` with ``config`` (TOML text, "" for none)."""

    def __init__(
        self,
        data: Path,
        config: str = "",
        *,
        ports: tuple[int, int, int] | None = None,
        detach: bool = False,
    ) -> None:
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        find, ingest, admin = ports or (0, 0, 0)
        args = [INDEXER, "daemon", "--data-dir", str(data), "--no-p2p", "--json"]
        args += ["--find-addr", f"127.0.0.1:{find}", "--ingest-addr", f"127.0.0.1:{ingest}"]
        args += ["--admin-addr", f"127.0.0.1:{admin}"]
        if config:
            (data / "node.toml").write_text(config)
            args += ["--config", str(data / "node.toml")]
        self.log = data / "daemon.log"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=detach
            )
        self.info: dict[str, Any] = {}

    def ready(self) -> dict[str, Any]:
        """Block until the daemon prints its URLs (it serves); fail with its log's tail."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"daemon did not start: {self.log.read_text()[-3000:]}")
        self.info = json.loads(line)
        return self.info

    def events(self, event: str) -> list[dict[str, Any]]:
        """The log's records of ``event``, oldest first."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                out.append(record)
        return out

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL past ``timeout``); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self._ended(self.proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._ended(self.proc.wait(timeout=10))

    def _ended(self, code: int) -> int:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        """SIGCONT (a frozen one too), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self._ended(self.proc.wait(timeout=10))
