"""storetheindex's admin controls through ``indexer admin`` against real daemons (issue 13).

A real ``publisher serve`` is synced by a real ``indexer daemon`` (A); a second daemon (B)
imports A's providers from A's find server; then A's provider is removed, and a real find
query no longer finds its content.  Each command is also run with a table, and its errors are
one line with the documented exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sync import PrivateKey
from tests.e2e.test_publisher_cli import Serving, mh_lines, ok
from tests.indexer.cli.test_cli_admin import Daemon, cli, cli_json, one_line_error


@dataclass
class Synced:
    a: Daemon
    b: Daemon
    pub: str
    addr: str


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    tmp = tmp_path_factory.mktemp("admin-controls")
    pub_dir = str(tmp / "pub")
    pub = ok("init", "--data-dir", pub_dir)["peer_id"]
    for i, ctx in enumerate(["a", "b"]):
        ok("add", "--data-dir", pub_dir, "--context-id", ctx, "--multihashes", "-",
           stdin=mh_lines(10 * i, 10))  # fmt: skip
    serving = Serving(tmp / "pub")
    with contextlib.ExitStack() as stack:
        stack.callback(serving.stop)
        a = Daemon(tmp / "a")
        stack.callback(a.stop)
        b = Daemon(tmp / "b")
        stack.callback(b.stop)
        addr = serving.info["http_multiaddr"]
        done = cli("admin", "sync", "--publisher", pub, "--addr", addr, "--wait", "--json",
                   "--admin-url", a.admin)  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield Synced(a, b, pub, addr)


def find_status(daemon: Daemon, line: str) -> int:
    return httpx.get(f"{daemon.find}/multihash/{_b58(line)}", timeout=10).status_code


def _b58(hex_line: str) -> str:
    import base58

    return base58.b58encode(bytes.fromhex(hex_line.strip())).decode()


def test_telemetry_shows_the_providers_rate(synced: Synced) -> None:
    rates = cli_json("admin", "telemetry", "--admin-url", synced.a.admin)
    rate = rates[synced.pub]
    assert rate["Count"] == 20 and rate["Samples"] == 2 and rate["Elapsed"] > 0
    one = cli_json("admin", "telemetry", synced.pub, "--admin-url", synced.a.admin)
    assert one == {synced.pub: rate}
    table = cli("admin", "telemetry", "--admin-url", synced.a.admin)
    assert table.returncode == 0 and synced.pub in table.stdout and "mh/s" in table.stdout
    other = str(PrivateKey.generate().peer_id())
    out = cli("admin", "telemetry", other, "--admin-url", synced.a.admin)
    one_line_error(out, 1, "no ingest rate", other)
    one_line_error(cli("admin", "telemetry", "nope", "--admin-url", synced.a.admin), 2, "bad")
    empty = cli_json("admin", "telemetry", "--admin-url", synced.b.admin)
    assert empty == {}


def test_loglevel_sets_and_lists_loggers(synced: Synced) -> None:
    names = cli_json("admin", "loglevel", "--admin-url", synced.a.admin)
    assert "daemon" in names and names == sorted(names)
    [row] = cli_json("admin", "loglevel", "ingest=debug", "--admin-url", synced.a.admin)
    assert row == {"Subsystem": "ingest", "Level": "debug", "Matched": ["ingest"]}
    table = cli("admin", "loglevel", "ingest=info", "--admin-url", synced.a.admin)
    assert table.returncode == 0 and "ingest" in table.stdout
    out = cli("admin", "loglevel", "ingest=loud", "--admin-url", synced.a.admin)
    one_line_error(out, 2, "SUBSYSTEM=LEVEL")


def test_import_providers_from_a_second_daemon(synced: Synced) -> None:
    doc = cli_json("admin", "import-providers", "--from", synced.a.find, "--admin-url",
                   synced.b.admin)  # fmt: skip
    assert doc["Imported"] == [synced.pub] and doc["From"] == synced.a.find
    providers = httpx.get(f"{synced.b.find}/providers", timeout=10).json()
    assert [p["AddrInfo"]["ID"] for p in providers] == [synced.pub]
    again = cli("admin", "import-providers", "--from", synced.a.find, "--admin-url",
                synced.b.admin)  # fmt: skip
    assert again.returncode == 0 and "0 providers imported" in again.stdout
    assert "1 skipped" in again.stdout
    one_line_error(cli("admin", "import-providers", "--from", "ftp://x", "--admin-url",
                       synced.b.admin), 2, "--from")  # fmt: skip
    dead = cli("admin", "import-providers", "--from", "http://127.0.0.1:1", "--admin-url",
               synced.b.admin)  # fmt: skip
    one_line_error(dead, 1, "502")


def test_mark_processed_errors_are_one_line(synced: Synced) -> None:
    other = str(PrivateKey.generate().peer_id())
    head = httpx.get(f"{synced.a.admin}/publishers/{synced.pub}", timeout=10).json()
    cid = head["latest_processed"]
    out = cli("admin", "mark-processed", other, cid, "--admin-url", synced.a.admin)
    one_line_error(out, 1, "unknown provider")
    out = cli("admin", "mark-processed", synced.pub, cid, "--admin-url", synced.a.admin)
    one_line_error(out, 1, "already processed")
    out = cli("admin", "mark-processed", synced.pub, "nope", "--admin-url", synced.a.admin)
    one_line_error(out, 2, "bad ad CID")


def test_remove_provider_then_find_finds_nothing(synced: Synced, tmp_path: Path) -> None:
    line = mh_lines(0, 1)
    assert find_status(synced.a, line) == 200
    doc = cli_json("admin", "remove-provider", synced.pub, "--block", "--admin-url",
                   synced.a.admin)  # fmt: skip
    assert doc["Contexts"] == 2 and doc["Blocked"] is True and doc["Registered"] is True
    for i in range(20):
        assert find_status(synced.a, mh_lines(i, 1)) == 404
    assert httpx.get(f"{synced.a.find}/providers", timeout=10).json() == []
    out = cli("admin", "remove-provider", synced.pub, "--admin-url", synced.a.admin)
    one_line_error(out, 1, "unknown provider")
    # Blocked: a sync is refused.
    out = cli("admin", "sync", "--publisher", synced.pub, "--addr", synced.addr, "--admin-url",
              synced.a.admin)  # fmt: skip
    one_line_error(out, 1, "403")
    # B imported only the record: removing it there drops the record, with a table.
    table = cli("admin", "remove-provider", synced.pub, "--admin-url", synced.b.admin)
    assert table.returncode == 0 and "removed" in table.stdout, table.stderr


def test_freeze_and_unfreeze(synced: Synced) -> None:
    admin = ("--admin-url", synced.b.admin)
    doc = cli_json("admin", "freeze", *admin)
    assert doc["Frozen"] is True and doc["FrozenAt"]
    status = cli_json("admin", "status", *admin)
    assert status["Frozen"] is True and status["FrozenAt"] == doc["FrozenAt"]
    table = cli("admin", "status", *admin)
    assert "frozen at" in table.stdout
    thawed = cli("admin", "freeze", "--unfreeze", *admin)
    assert thawed.returncode == 0 and "not frozen" in thawed.stdout
    assert cli_json("admin", "status", *admin)["Frozen"] is False
