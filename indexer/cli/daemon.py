"""``indexer init`` and ``indexer daemon``: set up a data directory, run the node.

Rules: ``init`` never overwrites (a second run says what exists); ``daemon`` works with no config
file at all (defaults; but a file named by ``--config`` must exist), initialising the data
directory on first run; command-line addresses override the file's ``[server]`` keys;
SIGINT/SIGTERM stop it cleanly, a second signal exits at once (staging makes that safe).  Before
anything is logged, written or bound, the config is loaded and checked (``indexer.config``,
``indexer.security``, ``indexer.cli.startup``): a bad file or setting (named: file and key), a
bad ``--*-addr`` or ``--p2p-addr``, an unusable admin token, an admin address beyond loopback
with no token, a port in use (the libp2p one included: no silent sharing), a data directory that
cannot be made or written, or one whose database another daemon holds, is one line on stderr and
exit 2, with the data directory untouched.  A port or the database taken after those checks,
while the daemon starts, is also exit 2 (after its first log lines).  A daemon that cannot reach
its cluster store or etcd, or fails once running, says so in one line and exits 1.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import click
import msgspec
import structlog
import trio

from indexer.cli.startup import (
    check_data_dir,
    check_data_dir_path,
    check_http_addr,
    check_not_in_use,
    check_p2p_addr,
    check_ports,
)
from indexer.config import CONFIG_FILE, DB_DIR, TEMPLATE, ConfigError, Server, load_config
from indexer.daemon import Daemon, DaemonInfo
from indexer.errors import CliError, ClusterError, CommandFailed
from indexer.logs import configure_logging
from indexer.security import admin_token, check_exposure
from store import StoreError, StoreLocked
from sync import PrivateKey, SyncError

__all__ = ["daemon", "init"]

KEY_FILE = "identity.key"
DATA_DIR = click.option(
    "--data-dir", type=click.Path(path_type=Path), default="data",
    show_default=True, help="The indexer's data directory.",
)  # fmt: skip


def _init(data_dir: Path) -> tuple[bool, PrivateKey]:
    """Create the key and config if missing; return (created?, key)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / KEY_FILE
    if key_path.exists():
        return False, PrivateKey.unmarshal(key_path.read_bytes())
    key = PrivateKey.generate()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.marshal())
    config = data_dir / CONFIG_FILE
    if not config.exists():
        config.write_text(TEMPLATE)
    return True, key


@click.command("init")
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def init(data_dir: Path, as_json: bool) -> None:
    """Write a commented config file and an identity key."""
    check_data_dir(data_dir, key_file=KEY_FILE)
    created, key = _init(data_dir)
    if not created:
        raise CliError(f"{data_dir} is already initialised ({KEY_FILE} exists)")
    doc = {"peer_id": str(key.peer_id()), "config": str(data_dir / CONFIG_FILE)}
    click.echo(json.dumps(doc) if as_json else f"initialised {data_dir}: peer ID {doc['peer_id']}")


_SERVER = Server()  # the defaults the flags' help names


@click.command("daemon")
@DATA_DIR
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (default: <data-dir>/config.toml if present).")  # fmt: skip
@click.option("--find-addr", help=f"HOST:PORT of the find API (default {_SERVER.find_addr}).")
@click.option("--ingest-addr", help=f"HOST:PORT of the ingest API (default {_SERVER.ingest_addr}).")
@click.option("--admin-addr", help=f"HOST:PORT of the admin API (default {_SERVER.admin_addr}).")
@click.option("--p2p-addr", help=f"libp2p listen multiaddr (default {_SERVER.p2p_addr}).")
@click.option("--no-p2p", is_flag=True, help="Run without libp2p (no gossipsub announces).")
@click.option("--cluster-store", help='Run as a cluster node on this store ("redis://h:p,h:p").')
@click.option("--cluster-etcd", help='etcd of the cluster ("http://h:p,http://h:p").')
@click.option("--node-name", help="This node's name in the cluster (default: its peer ID).")
@click.option("--lease-ttl", type=click.IntRange(min=1), help="Cluster lease TTL, seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the start-up line as JSON.")
def daemon(
    data_dir: Path,
    config_path: Path | None,
    find_addr: str | None,
    ingest_addr: str | None,
    admin_addr: str | None,
    p2p_addr: str | None,
    no_p2p: bool,
    cluster_store: str | None,
    cluster_etcd: str | None,
    node_name: str | None,
    lease_ttl: int | None,
    as_json: bool,
) -> None:
    """Run the indexer node until SIGINT or SIGTERM.

    The admin API needs a bearer token (env INDEXER_ADMIN_TOKEN, or [server] admin_token_file)
    whenever --admin-addr is not a loopback address.
    """
    check_data_dir_path(data_dir)
    try:
        # --config names a file that must exist; <data-dir>/config.toml may be absent.
        config_file = config_path or data_dir / CONFIG_FILE
        config = load_config(config_file, required=bool(config_path))
        server = config.server
        config = msgspec.structs.replace(
            config,
            server=msgspec.structs.replace(
                server,
                find_addr=find_addr or server.find_addr,
                ingest_addr=ingest_addr or server.ingest_addr,
                admin_addr=admin_addr or server.admin_addr,
                p2p_addr="" if no_p2p else (p2p_addr or server.p2p_addr),
            ),
            cluster=msgspec.structs.replace(
                config.cluster,
                store=config.cluster.store if cluster_store is None else cluster_store,
                etcd=config.cluster.etcd if cluster_etcd is None else cluster_etcd,
                node=node_name or config.cluster.node,
                lease_ttl=lease_ttl or config.cluster.lease_ttl,
            ),
        )
        try:
            config.cluster.checked()
        except ValueError as exc:
            raise ConfigError(f"--cluster-*: {exc}") from None
        flags = {"find": find_addr, "ingest": ingest_addr, "admin": admin_addr, "p2p": p2p_addr}
        listen = _listen_addrs(config.server, flags, config_file)  # before any log line
        configure_logging()  # a token file's permission warning is a log line
        token = admin_token(config, os.environ, data_dir)
        check_exposure(config, token)  # refused here, before the data directory is touched
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    check_not_in_use(data_dir, db_dir=DB_DIR)  # `make run` twice: this, not a port in use
    check_ports(listen)
    check_data_dir(data_dir, key_file=KEY_FILE)
    try:
        _, key = _init(data_dir)
    except (OSError, ValueError, SyncError) as exc:  # an unreadable or corrupt identity.key
        raise CliError(
            f"cannot use {data_dir / KEY_FILE}: {_one_line(exc)} (restore it, or move it away "
            "for a new identity)"
        ) from None
    run = _Run(Daemon(data_dir, config, key, admin_token=token, config_path=config_path), as_json)
    # SIGINT is the signal receiver's inside _Run.main, ignored outside it: a Ctrl-C never lands
    # in trio's own start-up or teardown (a TrioInternalError), nor in LevelDB's close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trio.run(run.main)
    except BaseExceptionGroup as group:
        raise _start_failure(group, run.started, data_dir) from None
    except (ClusterError, OSError) as exc:
        raise CommandFailed(_one_line(exc)) from None


def _listen_addrs(
    server: Server, flags: dict[str, str | None], config_file: Path
) -> dict[str, tuple[str, str, int]]:
    """Each server's address, checked: server -> (as given, host, port); p2p only when on."""
    addrs = {"find": server.find_addr, "ingest": server.ingest_addr, "admin": server.admin_addr}
    out: dict[str, tuple[str, str, int]] = {}
    for name, addr in [*addrs.items(), ("p2p", server.p2p_addr)]:
        if name == "p2p" and not addr:
            continue
        where = f"--{name}-addr" if flags[name] else f"server.{name}_addr in {config_file}"
        check = check_p2p_addr if name == "p2p" else check_http_addr
        out[name] = (addr, *check(where, addr))
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, StoreError):
        return f"cluster store: {text}"
    return text if isinstance(exc, ClusterError | OSError) else f"{type(exc).__name__}: {text}"


def _start_failure(
    group: BaseExceptionGroup[BaseException], started: bool, data_dir: Path
) -> BaseException:
    """The one failure in the nursery's group as one line: a start-up mistake (a port or the
    database taken after the checks) is a ``CliError`` (exit 2), a store or etcd it cannot reach
    (or any failure once running) a ``CommandFailed`` (exit 1); anything else unchanged."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    if not started and isinstance(leaf, StoreLocked):
        return CliError(
            f"another indexer daemon is using {data_dir} (stop it, or give --data-dir another "
            "directory)"
        )
    if not started and isinstance(leaf, OSError):
        return CliError(_one_line(leaf))
    if isinstance(leaf, StoreError | ClusterError | OSError):
        return CommandFailed(_one_line(leaf))
    return group


@dataclass
class _Run:
    """The daemon under the signal handlers; ``started`` once every server listens."""

    node: Daemon
    as_json: bool
    started: bool = False

    async def main(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                info: DaemonInfo = await nursery.start(self.node.run)
                self.started = True
                line = msgspec.json.encode(info).decode()
                p2p = " ".join(info.p2p_addrs) or "off"
                text = (
                    f"indexer {info.peer_id}: find {info.find_url}, ingest {info.ingest_url}, "
                    f"admin {info.admin_url}, p2p {p2p}"
                )
                click.echo(line if self.as_json else text)
                await signals.__anext__()
                nursery.cancel_scope.cancel()  # stop accepting; the with-blocks close LevelDB

                async def second_signal_exits_at_once() -> None:
                    await signals.__anext__()
                    os._exit(130)  # staging makes an abrupt exit safe

                trio.lowlevel.spawn_system_task(second_signal_exits_at_once)
        structlog.get_logger("daemon").info("indexer daemon stopped; LevelDB closed")
