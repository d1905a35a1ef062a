"""``indexer ingest``: sync publishers into a data directory once, index everything, exit.

The daemon (``indexer daemon``) does the same continuously; this one-shot form is for scripts,
tests and recovery.  It first resumes whatever a previous run left staged (a crash or a kill is
safe at any moment), then syncs every ``--publisher`` and waits until nothing is left to index.
A publisher whose sync failed (unreachable, refused, a broken chain) ends it with one line on
stderr naming it and why, exit 1, after whatever the others gave was indexed (the ingester's
own "sync failed" log line is not written: it would say the same).  Ctrl-C (or
SIGTERM) stops it in one line, exit 130; a second Ctrl-C changes nothing.  LevelDB is opened
with the ``[store]`` settings of the config file, as the daemon opens it (``--config``, else
``<data-dir>/config.toml`` if present); a bad file is one line naming it and the key, exit 2,
before the data directory is touched.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click
import trio

from indexer.cli.find import one_line
from indexer.config import CONFIG_FILE, DB_DIR, ConfigError, load_config
from indexer.errors import CliError, CommandFailed
from indexer.ingest.engine import Ingester
from indexer.ingest.offload import open_offload
from indexer.logs import configure_logging
from store import KV, Tuning
from sync import BadMultiaddr, PeerId
from sync.ipnisync.fetch import fetcher_factory

__all__ = ["ingest"]


def split_publisher(addr: str) -> tuple[PeerId, str]:
    """``/.../p2p/<peer>`` -> (peer, the address without it)."""
    head, sep, peer = addr.rpartition("/p2p/")
    if not sep or not head or "/" in peer:
        raise CliError(f"--publisher must end in /p2p/<peer ID>: {addr!r}")
    try:
        return PeerId.parse(peer), head
    except BadMultiaddr as exc:
        raise CliError(str(exc)) from None


def store_tuning(data_dir: Path, config_path: Path | None) -> Tuning:
    """The LevelDB options of the config's ``[store]`` section, found as the daemon finds it
    (``config_path``, which must exist, else ``<data_dir>/config.toml`` if present)."""
    try:
        config = load_config(config_path or data_dir / CONFIG_FILE, required=bool(config_path))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return config.store.tuning()


http_fetcher = fetcher_factory()


@click.command("ingest")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default="data",
              show_default=True, help="The indexer's data directory.")  # fmt: skip
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file whose [store] section opens LevelDB (default: "
                   "<data-dir>/config.toml if present).")  # fmt: skip
@click.option("--publisher", "publishers", multiple=True,
              help="A publisher's multiaddr ending in /p2p/<peer ID> (repeat).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def ingest(
    data_dir: Path, config_path: Path | None, publishers: tuple[str, ...], as_json: bool
) -> None:
    """Sync the given publishers once, index everything staged, and exit."""
    targets = [split_publisher(p) for p in publishers]
    tuning = store_tuning(data_dir, config_path)  # [store], as the daemon opens LevelDB
    configure_logging(reported=frozenset({"sync failed"}))  # said once, in the last line
    data_dir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C is the signal receiver's inside trio.run, ignored outside it: it never lands in
    # trio's own start-up or teardown, nor half-way through closing LevelDB.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with KV(data_dir / DB_DIR, tuning=tuning) as kv:
        ingester = Ingester(kv, http_fetcher)
        if trio.run(_run, ingester, targets):
            click.echo(
                "interrupted: what was staged is indexed by the next `indexer ingest` (or the "
                "daemon) on this data directory",
                err=True,
            )
            raise click.exceptions.Exit(130)
        synced = [
            {"publisher": str(r.publisher), "head": str(r.head), "walked": r.walked}
            for r in ingester.results
        ]
        keys = ingester.index.count_keys()
        failed = _failures(ingester, targets)
    if failed:
        more = f" (and {len(failed) - 1} more publishers)" if len(failed) > 1 else ""
        raise CommandFailed(failed[0] + more)
    if as_json:
        click.echo(json.dumps({"synced": synced, "indexed_multihash_keys": keys}, indent=2))
        return
    for s in synced:
        click.echo(f"synced {s['publisher']}: {s['walked']} new ads")
    click.echo(f"the index holds {keys} multihash keys")


def _failures(ingester: Ingester, targets: list[tuple[PeerId, str]]) -> list[str]:
    """One line per publisher whose sync failed (no result, an error recorded)."""
    synced = {r.publisher.raw for r in ingester.results}
    failed = []
    for peer, addr in targets:
        progress = ingester.progress.get(peer.raw)
        if peer.raw not in synced and progress is not None and progress.error:
            failed.append(f"sync of {peer} at {addr} failed: {one_line(progress.error)}")
    return failed


async def _run(ingester: Ingester, targets: list[tuple[PeerId, str]]) -> bool:
    """Sync and index until idle; True when SIGINT or SIGTERM ended it first."""
    interrupted = False
    config = ingester.config
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_offload(config.decode_processes, config.decode_min_bytes) as ingester.offload,
            trio.open_nursery() as nursery,
        ):

            async def stop_on_signal() -> None:
                nonlocal interrupted
                await signals.__anext__()  # a second one is read by nobody: nothing happens
                interrupted = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await nursery.start(ingester.run)
            for peer, addr in targets:
                ingester.request_sync(peer, [addr])
            await ingester.wait_idle()
            nursery.cancel_scope.cancel()
    return interrupted
