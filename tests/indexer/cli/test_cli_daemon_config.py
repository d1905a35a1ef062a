"""``indexer daemon --config F``: a bad file is one line naming the file and the key, exit 2.

Each daemon runs as a real process whose data directory holds a trap (a file named ``db``, see
``tests.indexer.test_security``), and the directory must be untouched afterwards: the refusal
came before anything was written, opened or bound.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_publisher_cli import INDEXER
from tests.indexer.cli.test_cli_admin import one_line_error
from tests.indexer.test_security import daemon


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nfind_adr = 1\n", 'unknown key "server.find_adr"'),
        ("[ingest]\nretyr_max = 1.0\n", 'unknown key "ingest.retyr_max"'),
        ("[ingest.entries_budget]\nsecs = 1\n", 'unknown key "ingest.entries_budget.secs"'),
        ("[http]\nhead_timout = 1\n", 'unknown key "http.head_timout"'),
        ("[policy]\ndeny = []\n", 'unknown key "policy.deny"'),
        ("[polcy]\n", 'unknown key "polcy"'),
        ('[ingest]\nretry_max = "5m"\n', "ingest.retry_max: expected float, got str"),
        ("[http]\nhead_timeout = 0\n", "http.head_timeout: expected float > 0.0, got 0"),
        ("[ingest\n", "cannot read it as TOML"),
    ],
)
def test_a_bad_config_file_stops_the_daemon_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = daemon(tmp_path / "idx", "--config", str(config))
    one_line_error(out, 2, f"{config}: {message}")
    assert os.listdir(tmp_path / "idx") == ["db"]


def test_a_missing_config_file_stops_the_daemon_but_a_missing_default_one_does_not(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.toml"
    out = daemon(tmp_path / "idx", "--config", str(missing))
    one_line_error(out, 2, f"{missing}: no such file")
    assert os.listdir(tmp_path / "idx") == ["db"]
    # No --config and no <data-dir>/config.toml: the defaults, so the daemon gets as far as the
    # trap (LevelDB cannot open a file), after writing its key and config.
    out = daemon(tmp_path / "idx")
    assert out.returncode != 0 and "missing.toml" not in out.stderr
    assert {"identity.key", "config.toml"} <= set(os.listdir(tmp_path / "idx"))


def test_command_line_addresses_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nadmin_addr = "127.0.0.1:0"\n')
    out = daemon(tmp_path / "a", "--config", str(config), "--admin-addr", "0.0.0.0:0")
    one_line_error(out, 2, "admin_addr 0.0.0.0:0 is not loopback")  # the flag, not the file
    config.write_text('[server]\nadmin_addr = "0.0.0.0:0"\n')
    out = daemon(tmp_path / "b", "--config", str(config))
    one_line_error(out, 2, "admin_addr 0.0.0.0:0 is not loopback")  # the file, no flag
    out = daemon(tmp_path / "c", "--config", str(config), "--admin-addr", "127.0.0.1:0")
    assert "is not loopback" not in out.stderr  # the flag wins: refused only by the trap
    for name in "ab":
        assert os.listdir(tmp_path / name) == ["db"]


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        command = [INDEXER, "daemon", "--data-dir", str(tmp_path / "idx"), "--no-p2p"]
        command += ["--find-addr", addr, "--ingest-addr", "127.0.0.1:0"]
        command += ["--admin-addr", "127.0.0.1:0"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr  # a start-up mistake: exit 2, as every other one
    assert "Traceback" not in out.stderr and out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on {addr} (find): "), last
    one_line_error(out, 2, f"cannot listen on {addr} (find): Address already in use")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cluster-store", "redis://127.0.0.1:7000"], '"store" and "etcd" go together'),
        (["--cluster-etcd", "http://127.0.0.1:2379"], '"store" and "etcd" go together'),
        (["--cluster-store", "redis://h", "--cluster-etcd", "h:1"], "store: not host:port"),
    ],
)
def test_bad_cluster_flags_stop_the_daemon_in_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = daemon(tmp_path / "idx", *flags)
    one_line_error(out, 2, message)
    assert os.listdir(tmp_path / "idx") == ["db"]
