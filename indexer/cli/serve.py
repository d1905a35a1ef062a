"""``indexer publisher serve``: run a ``PublisherNode`` until SIGINT or SIGTERM.

On start it prints where it serves (URL, peer ID, multiaddrs): a table, or one JSON line with
``--json`` so scripts and tests can read it; logs go to stderr as structured lines.  A port it
cannot listen on (``--listen``, or ``--p2p-listen``: taken even by a host that would share it
through ``SO_REUSEPORT``) is one line naming it, exit 2.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click
import msgspec
import trio

from indexer.cli.publisher import AS_JSON, DATA_DIR, publisher
from indexer.errors import CliError
from indexer.logs import configure_logging
from indexer.publisher.chain import Publisher
from indexer.publisher.node import NodeConfig, NodeInfo, PublisherNode

__all__ = ["serve"]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


@publisher.command("serve")
@DATA_DIR
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT for HTTP.")
@click.option("--announce", "urls", multiple=True, help="Indexer URL to announce to (repeat).")
@click.option("--announce-json", is_flag=True, help="Send JSON announces, not CBOR.")
@click.option("--p2p-listen", "p2p", multiple=True, help="libp2p listen multiaddr (repeat).")
@AS_JSON
def serve(
    data_dir: Path,
    listen: str,
    urls: tuple[str, ...],
    announce_json: bool,
    p2p: tuple[str, ...],
    as_json: bool,
) -> None:
    """Serve the chain over ipnisync and announce its head."""
    from sync.announce.sender import announce_url

    host, port = parse_listen(listen)
    for url in urls:
        try:
            announce_url(url)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    configure_logging()
    pub = Publisher.open(data_dir)
    config = NodeConfig(host, port, urls, announce_json, p2p)
    try:
        trio.run(_main, PublisherNode(pub, config), as_json)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:  # a port in use (HTTP or libp2p): one line, exit 2
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, OSError):
            raise CliError(" ".join(str(leaf).split())) from None
        raise
    finally:
        pub.close()


async def _main(node: PublisherNode, as_json: bool) -> None:
    async with trio.open_nursery() as nursery:
        info: NodeInfo = await nursery.start(node.run)
        _print_info(info, as_json)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def _print_info(info: NodeInfo, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(info)), nl=True)
        return
    click.echo(f"serving {info.url}")
    click.echo(f"peer ID {info.peer_id}")
    for addr in [info.http_multiaddr, *info.p2p_multiaddrs]:
        click.echo(f"multiaddr {addr}")
    click.echo(f"head {info.head or '(nothing published yet)'}")
