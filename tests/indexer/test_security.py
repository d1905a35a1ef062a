"""What the daemon exposes: the admin token's sources, loopback, bind warnings, refusing to start.

No server here binds anything but loopback: the refusals are checked on a real ``indexer daemon``
process whose data directory holds a trap (a FILE named ``db``: LevelDB cannot open it), so even
a daemon that skipped the check would die before its first bind; and the data directory must be
untouched afterwards, which shows the refusal came before anything was written or opened.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import msgspec
import pytest
import trio
from structlog.testing import capture_logs

from indexer.config import Config, ConfigError, Server
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.security import (
    ADMIN_TOKEN_ENV,
    admin_token,
    check_exposure,
    is_loopback_host,
    valid_token,
    warn_exposed,
)
from store import KV
from sync import PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.net.httpserver import Request, Response, serve_tcp
from tests.e2e.test_publisher_cli import INDEXER
from tests.indexer.cli.test_cli_admin import clean_env, one_line_error

TOKEN = "0123456789abcdef0123456789abcdef"


def at(**server: str) -> Config:
    """The default config with these ``[server]`` keys."""
    return Config(server=Server(**server))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.1", False),
        ("192.168.1.10", False),
        ("8.8.8.8", False),
        ("fe80::1", False),
        ("indexer.example", False),
        ("localhost.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_defaults_expose_nothing_and_need_no_token() -> None:
    assert check_exposure(Config(), "") == []


def test_every_server_beyond_loopback_is_named_with_what_it_exposes() -> None:
    config = at(
        find_addr="0.0.0.0:3000",
        ingest_addr="[::]:3001",
        admin_addr="192.168.1.10:3002",
        p2p_addr="/ip4/0.0.0.0/tcp/3003",
    )
    exposed = {e.server: e for e in check_exposure(config, TOKEN)}
    assert set(exposed) == {"find", "ingest", "admin", "p2p"}
    assert exposed["find"].everywhere and exposed["ingest"].everywhere and exposed["p2p"].everywhere
    assert not exposed["admin"].everywhere
    assert "whole index" in exposed["find"].exposes
    assert "refuse_private_addrs is off" in exposed["ingest"].exposes
    assert "admin token" in exposed["admin"].exposes and "gossipsub" in exposed["p2p"].exposes
    on = Config(
        server=msgspec.structs.replace(config.server, p2p_addr="/ip6/::1/tcp/3003"),
        ingest=IngestConfig(refuse_private_addrs=True),
    )
    exposed = {e.server: e for e in check_exposure(on, TOKEN)}
    assert "p2p" not in exposed and "refuse_private_addrs" not in exposed["ingest"].exposes
    dns = at(p2p_addr="/dns4/node.example/tcp/3003")
    assert [e.server for e in check_exposure(dns, "")] == ["p2p"]
    assert check_exposure(at(p2p_addr=""), "") == []  # libp2p off


def test_warn_exposed_logs_one_structured_warning_per_server() -> None:
    config = at(find_addr="0.0.0.0:3000", ingest_addr="10.1.2.3:3001")
    with capture_logs() as logs:
        warn_exposed(config, "")
    assert [(e["log_level"], e["event"], e["server"], e["on"]) for e in logs] == [
        ("warning", "server listens beyond loopback", "find", "every interface"),
        ("warning", "server listens beyond loopback", "ingest", "a non-loopback address"),
    ]
    assert logs[0]["addr"] == "0.0.0.0:3000" and "whole index" in logs[0]["exposes"]


@pytest.mark.parametrize("admin_addr", ["0.0.0.0:3002", "[::]:3002", ":3002", "10.0.0.5:3002"])
def test_admin_beyond_loopback_needs_a_token(admin_addr: str) -> None:
    config = at(admin_addr=admin_addr)
    with pytest.raises(
        ConfigError, match=rf"admin_addr {re.escape(admin_addr)} is not loopback.*{ADMIN_TOKEN_ENV}"
    ):
        check_exposure(config, "")
    assert [e.server for e in check_exposure(config, TOKEN)] == ["admin"]


def test_token_sources(tmp_path: Path) -> None:
    assert admin_token(Config(), {}, tmp_path) == ""
    assert admin_token(Config(), {ADMIN_TOKEN_ENV: TOKEN}, tmp_path) == TOKEN
    (tmp_path / "token").write_text(f"  {TOKEN}x\n")
    (tmp_path / "token").chmod(0o600)
    from_file = at(admin_token_file="token")  # relative: to the data directory
    with capture_logs() as logs:
        assert admin_token(from_file, {}, tmp_path) == TOKEN + "x"
    assert logs == []
    assert admin_token(from_file, {ADMIN_TOKEN_ENV: TOKEN}, tmp_path) == TOKEN  # the env wins
    absolute = at(admin_token_file=str(tmp_path / "token"))
    assert admin_token(absolute, {}, Path("/nonexistent")) == TOKEN + "x"
    (tmp_path / "token").chmod(0o644)
    with capture_logs() as logs:
        admin_token(from_file, {}, tmp_path)
    assert [e["event"] for e in logs] == ["admin token file is readable by others: chmod 600 it"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "is empty"),
        ("  \n", "is empty"),
        ("short", "16 to 1024 characters"),
        ("has spaces in the middle of it", "16 to 1024 characters"),
        ("x" * 1025, "16 to 1024 characters"),
        ("tökentökentökentöken", "cannot read"),  # not ASCII
    ],
)
def test_bad_token_files_are_config_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "token").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        admin_token(at(admin_token_file="token"), {}, tmp_path)


def test_token_alphabet() -> None:
    assert valid_token(TOKEN) and valid_token("A-Za-z0-9._~+/AAAA==")
    for bad in ("x" * 15, TOKEN + "\n", TOKEN + " ", TOKEN + '"', "=" + TOKEN, TOKEN + "é"):
        assert not valid_token(bad), bad


def daemon(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    data.mkdir(parents=True, exist_ok=True)
    (data / "db").write_text("a trap: LevelDB cannot open a file, so nothing could bind\n")
    command = [INDEXER, "daemon", "--data-dir", str(data), "--no-p2p", "--json"]
    command += ["--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=clean_env(**env)
    )


@pytest.mark.parametrize("admin_addr", ["0.0.0.0:0", "[::]:0"])
def test_daemon_refuses_to_start_with_an_exposed_admin_and_no_token(
    tmp_path: Path, admin_addr: str
) -> None:
    out = daemon(tmp_path / "idx", "--admin-addr", admin_addr)
    one_line_error(out, 2, f"admin_addr {admin_addr} is not loopback", ADMIN_TOKEN_ENV, "127.0.0.1")
    assert os.listdir(tmp_path / "idx") == ["db"]  # refused before init, open or bind


def test_daemon_refuses_unusable_tokens_and_bad_config_in_one_line(tmp_path: Path) -> None:
    out = daemon(tmp_path / "a", **{ADMIN_TOKEN_ENV: "too-short"})
    one_line_error(out, 2, f"{ADMIN_TOKEN_ENV}: the admin token must be 16 to 1024 characters")
    config = tmp_path / "b.toml"
    config.write_text('[server]\nadmin_token_file = "missing-token"\n')
    out = daemon(tmp_path / "b", "--config", str(config))
    one_line_error(out, 2, "server.admin_token_file: cannot read")
    config.write_text('[server]\nadmin_token = "in the config"\n')  # no such key: a file, or env
    out = daemon(tmp_path / "c", "--config", str(config))
    one_line_error(out, 2, f'{config}: unknown key "server.admin_token"')
    for name in "abc":
        assert os.listdir(tmp_path / name) == ["db"]


async def test_an_ingester_with_refuse_private_never_dials_a_loopback_publisher(
    tmp_path: Path,
) -> None:
    """Announces, admin syncs and polls all open the fetcher through the factory: it refuses."""
    seen: list[str] = []

    async def publisher(request: Request) -> Response:
        seen.append(request.path)
        return Response(204)

    peer = PrivateKey.generate().peer_id()
    kv = KV(tmp_path / "db")
    ingester = Ingester(kv, fetcher_factory(timeout=5, refuse_private=True), config=IngestConfig())
    try:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, publisher, "127.0.0.1", 0)
            addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            await nursery.start(ingester.run)
            ingester.request_sync(peer, [addr])
            with trio.fail_after(10):
                await ingester.wait_idle()
            error = ingester.progress[peer.raw].error or ""
            assert error.startswith("AddressRefused: ") and "127.0.0.1 is loopback" in error
            nursery.cancel_scope.cancel()
    finally:
        kv.close()
    assert seen == []
