"""``indexer daemon``'s start-up mistakes: each is exactly one line on stderr and exit 2.

Every daemon runs as the installed ``indexer`` script.  A refused one is checked with
``one_line_error`` (the whole of stderr is the one error line: the checks come before the first
log line) and, where the data directory holds the trap of ``tests.indexer.test_security``, the
directory is checked to be untouched.  The "in use" cases run a second daemon beside a REAL
first one (same data directory, same libp2p port).  Ctrl-C, once or twice, stops a running
daemon without a traceback or a trio error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.test_publisher_cli import INDEXER
from tests.indexer.cli.test_cli_admin import clean_env, one_line_error
from tests.indexer.test_security import daemon

LOOPBACK = ["--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0"]
LOOPBACK += ["--admin-addr", "127.0.0.1:0"]


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``indexer daemon`` on ``data`` with every HTTP server on a free port (libp2p per args)."""
    command = [INDEXER, "daemon", "--data-dir", str(data), "--json", *LOOPBACK, *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=clean_env()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(data: Path, *args: str) -> Iterator[dict[str, object]]:
    """A real daemon until the block ends; yields its start-up JSON line."""
    data.mkdir(parents=True, exist_ok=True)
    command = [INDEXER, "daemon", "--data-dir", str(data), "--json", *LOOPBACK, *args]
    with (data.parent / f"{data.name}.log").open("w") as log:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=clean_env()
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, (data.parent / f"{data.name}.log").read_text()
            yield json.loads(line)
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("flag", "addr", "message"),
    [
        ("--find-addr", "localhost", "--find-addr 'localhost' is not HOST:PORT (e.g. 127.0.0.1:"),
        ("--ingest-addr", "127.0.0.1:http", "--ingest-addr '127.0.0.1:http' is not HOST:PORT"),
        ("--admin-addr", "127.0.0.1:", "--admin-addr '127.0.0.1:' is not HOST:PORT"),
        ("--find-addr", "127.0.0.1:99999", "port 99999 is not 0 to 65535"),
        ("--ingest-addr", "::1:3001", "an IPv6 host goes in brackets, e.g. [::1]:3001"),
        ("--admin-addr", "[nope]:3002", "'nope' in brackets is not an IPv6 address"),
        ("--find-addr", "nosuch.invalid:3000", "cannot listen on nosuch.invalid:3000 (find)"),
    ],
)
def test_a_bad_http_address_is_one_line(tmp_path: Path, flag: str, addr: str, message: str) -> None:
    out = daemon(tmp_path / "idx", "--admin-addr", "127.0.0.1:0", flag, addr)
    one_line_error(out, 2, message)
    assert os.listdir(tmp_path / "idx") == ["db"]  # refused before anything was written


def test_an_address_from_the_config_file_is_named_by_its_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nadmin_addr = "3002"\n')
    out = daemon(tmp_path / "idx", "--config", str(config))
    one_line_error(out, 2, f"server.admin_addr in {config} '3002' is not HOST:PORT")
    assert os.listdir(tmp_path / "idx") == ["db"]


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("garbage", "--p2p-addr 'garbage' is not a multiaddr: give /ip4/HOST/tcp/PORT"),
        ("/ip4/127.0.0.1", "is not a TCP address libp2p can listen on"),
        ("/ip4/127.0.0.1/udp/3003/quic-v1", "is not a TCP address libp2p can listen on"),
        ("/dns4/localhost/tcp/3003", "is not a TCP address libp2p can listen on"),
        ("/ip4/127.0.0.1/tcp/99999", "is not a multiaddr"),
    ],
)
def test_a_bad_p2p_address_is_one_line(tmp_path: Path, addr: str, message: str) -> None:
    data = tmp_path / "idx"
    out = run(data, "--p2p-addr", addr)
    one_line_error(out, 2, message, "or --no-p2p")
    assert not data.exists()  # the data directory was not even made


@pytest.mark.parametrize("server", ["find", "ingest", "admin"])
def test_a_port_in_use_is_one_line_naming_the_address_and_the_server(
    tmp_path: Path, server: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        out = run(tmp_path / "idx", "--no-p2p", f"--{server}-addr", addr)
    line = one_line_error(out, 2, f"cannot listen on {addr} ({server}): Address already in use")
    assert f"give --{server}-addr another port" in line
    assert not (tmp_path / "idx").exists()


def test_two_servers_on_one_port_is_one_line(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    out = run(tmp_path / "idx", "--no-p2p", "--find-addr", addr, "--admin-addr", addr)
    one_line_error(out, 2, f"cannot listen on {addr} (admin): Address already in use")


def test_a_data_directory_in_use_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "idx"
    with running(data, "--no-p2p"):
        before = sorted(os.listdir(data))
        out = run(data, "--no-p2p")
        one_line_error(
            out, 2,
            f"another indexer daemon is using {data} (stop it, or give --data-dir another "
            "directory)",
        )  # fmt: skip
        assert sorted(os.listdir(data)) == before


def test_make_run_twice_names_the_data_directory_not_a_port(tmp_path: Path) -> None:
    data = tmp_path / "idx"
    same = [f"--{name}-addr" for name in ("find", "ingest", "admin")]
    same = [x for flag in same for x in (flag, f"127.0.0.1:{free_port()}")]
    same += ["--p2p-addr", f"/ip4/127.0.0.1/tcp/{free_port()}"]
    with running(data, *same):
        out = run(data, *same)  # every port is taken too: the data directory is the cause
        one_line_error(out, 2, f"another indexer daemon is using {data}")


def test_a_second_daemon_cannot_share_the_libp2p_port(tmp_path: Path) -> None:
    p2p = f"/ip4/127.0.0.1/tcp/{free_port()}"
    with running(tmp_path / "first", "--p2p-addr", p2p) as info:
        assert info["p2p_addrs"] == [f"{p2p}/p2p/{info['peer_id']}"]
        out = run(tmp_path / "second", "--p2p-addr", p2p)
        line = one_line_error(out, 2, f"cannot listen on {p2p} (p2p): Address already in use")
        assert "give --p2p-addr another port, or --no-p2p" in line
        assert not (tmp_path / "second").exists()


def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    # Root ignores permissions, so the mistake is a data directory under a regular file.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    out = run(blocker / "idx", "--no-p2p")
    one_line_error(
        out, 2, f"cannot create the data directory {blocker / 'idx'}: {blocker} is a file",
        "give --data-dir a directory you can write",
    )  # fmt: skip
    out = run(blocker, "--no-p2p")
    one_line_error(out, 2, f"the data directory {blocker} is not a directory")
    assert blocker.read_text() == "not a directory\n"
    out = subprocess.run(
        [INDEXER, "init", "--data-dir", str(blocker / "idx")], capture_output=True, text=True,
        timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    one_line_error(out, 2, f"cannot create the data directory {blocker / 'idx'}")


def test_a_corrupt_identity_key_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "idx"
    data.mkdir()
    (data / "identity.key").write_bytes(b"junk")
    out = run(data, "--no-p2p")
    one_line_error(out, 2, f"cannot use {data / 'identity.key'}: ", "move it away")
    assert os.listdir(data) == ["identity.key"]


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_stops_the_daemon_without_a_trio_error(tmp_path: Path, signals: int) -> None:
    data = tmp_path / "idx"
    data.mkdir()
    command = [INDEXER, "daemon", "--data-dir", str(data), "--json", *LOOPBACK, "--no-p2p"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["peer_id"]
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # One: a clean stop. Two: the second exits at once (130) or lands after the close (ignored).
    assert proc.returncode in ((0,) if signals == 1 else (0, 130)), stderr
    assert "Traceback" not in stderr and "Trio" not in stderr, stderr
    if proc.returncode == 0:
        assert "LevelDB closed" in stderr.strip().splitlines()[-1]


def test_publisher_serve_on_a_taken_libp2p_port_is_one_line(tmp_path: Path) -> None:
    pub = tmp_path / "pub"
    init = [INDEXER, "publisher", "init", "--data-dir", str(pub)]
    subprocess.run(init, capture_output=True, check=True, timeout=60, env=clean_env())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p2p = f"/ip4/127.0.0.1/tcp/{taken.getsockname()[1]}"
        serve = [INDEXER, "publisher", "serve", "--data-dir", str(pub), "--listen", "127.0.0.1:0"]
        out = subprocess.run(
            [*serve, "--p2p-listen", p2p], capture_output=True, text=True, timeout=60,
            check=False, env=clean_env(),
        )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot listen on {p2p} (p2p): Address already in use", last


def test_a_start_up_failure_after_the_checks_is_still_exit_2_and_a_runtime_one_exit_1() -> None:
    """A port or the database taken between the checks and the real bind (a race the checks
    cannot close) is still a start-up mistake; a store or etcd that is down is not."""
    from indexer.cli.daemon import _start_failure
    from indexer.errors import CliError, CommandFailed, EtcdUnavailable
    from store import StoreLocked, StoreUnavailable

    data = Path("d")
    taken = OSError("cannot listen on 127.0.0.1:3000 (find): Address already in use")
    cases: list[tuple[BaseException, bool, type[Exception], str]] = [
        (taken, False, CliError, "cannot listen on 127.0.0.1:3000 (find)"),
        (StoreLocked("locked"), False, CliError, "another indexer daemon is using d"),
        (StoreUnavailable("down"), False, CommandFailed, "cluster store: down"),
        (EtcdUnavailable("no etcd"), False, CommandFailed, "no etcd"),
        (taken, True, CommandFailed, "cannot listen on"),  # once running: a failure, exit 1
    ]
    for exc, started, kind, text in cases:
        group = BaseExceptionGroup("nursery", [BaseExceptionGroup("inner", [exc])])
        out = _start_failure(group, started, data)
        assert type(out) is kind and text in str(out), (exc, started, out)
    two = BaseExceptionGroup("nursery", [taken, ValueError("bug")])
    assert _start_failure(two, False, data) is two  # not one failure: left as it is
