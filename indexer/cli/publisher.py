"""``indexer publisher ...``: build, sign, serve and announce an advertisement chain.

Rules: input is validated completely before anything is published (a bad multihash line, an
unknown context, an empty list all leave the chain as it was); when a ``publisher serve`` holds
the database, ``add``/``remove``/``ls`` go through its unix socket instead (see
``indexer.publisher.ops``);
every command prints a table, or one JSON document with ``--json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from indexer.cli.mhfile import read_multihashes
from indexer.errors import CliError
from indexer.publisher.chain import Published, Publisher
from indexer.publisher.node import socket_path
from indexer.publisher.ops import PublishRequest, apply, error_from_json
from indexer.publisher.store import ChainRecord
from store import StoreLocked
from sync import BadCid, Link
from sync.model.metadata import bitswap, graphsync_filecoinv1, ipfs_gateway_http

__all__ = ["publisher"]

T = TypeVar("T")


class ChainListing(msgspec.Struct, frozen=True):
    peer_id: str
    ads: list[ChainRecord]


DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="The publisher's directory (identity key and chain).",
)  # fmt: skip
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
_SHOWN_BAD_LINES = 5


@click.group()
def publisher() -> None:
    """Publish an advertisement chain that IPNI indexers can sync."""


def _emit(as_json: bool, doc: dict[str, Any], title: str) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in doc.items():
        table.add_row(key, "\n".join(map(str, value)) if isinstance(value, list) else str(value))
    Console().print(table)


def _result_doc(result: Published) -> dict[str, Any]:
    doc = msgspec.to_builtins(result)
    doc["context_id"] = result.context_id.decode(errors="replace")
    return dict(doc)


@publisher.command("init")
@DATA_DIR
@click.option("--addr", "addrs", multiple=True, help="A provider retrieval multiaddr (repeat).")
@click.option(
    "--codec", type=click.Choice(["dag-json", "dag-cbor"]), default="dag-json",
    show_default=True, help="How ads and entry chunks are encoded.",
)  # fmt: skip
@AS_JSON
def init(data_dir: Path, addrs: tuple[str, ...], codec: str, as_json: bool) -> None:
    """Create the publisher's identity key and empty chain; print its peer ID."""
    from sync.announce.message import multiaddr_bytes

    for addr in addrs:
        multiaddr_bytes(addr)
    pub = Publisher.init(data_dir, addrs, codec)
    doc = {"peer_id": str(pub.peer_id), "data_dir": str(data_dir), "addresses": list(addrs)}
    doc["codec"] = codec
    pub.close()
    _emit(as_json, doc, "publisher created")


def _metadata(kind: str, piece_cid: str | None) -> bytes:
    if kind == "bitswap":
        return bitswap()
    if kind == "http":
        return ipfs_gateway_http()
    if piece_cid is None:
        raise CliError("--metadata graphsync needs --piece-cid")
    try:
        return graphsync_filecoinv1(Link.parse(piece_cid), True, True)
    except BadCid as exc:
        raise CliError(f"--piece-cid: {exc}") from None


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def _submit(data_dir: Path, request: PublishRequest, show_progress: bool) -> Published:
    """Apply locally, or through the running ``publisher serve`` when it holds the database."""
    try:
        pub = Publisher.open(data_dir)
    except StoreLocked:
        return _via_socket(data_dir, "POST", "/publish", msgspec.json.encode(request), Published)
    try:
        if not (show_progress and request.op == "add" and sys.stderr.isatty()):
            return apply(pub, request)
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("publishing multihashes", total=len(request.multihashes))
            return apply(pub, request, progress=lambda n: bar.advance(task, n))
    finally:
        pub.close()


def _via_socket(data_dir: Path, method: str, path: str, body: bytes, kind: type[T]) -> T:
    import httpx

    sock = socket_path(data_dir)
    if not sock.exists():
        raise CliError(f"{data_dir} is in use by another process that is not a publisher serve")
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, timeout=600) as client:
        try:
            reply = client.request(method, f"http://publisher{path}", content=body)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the serving publisher at {sock}: {exc}") from None
    if reply.status_code != 200:
        raise error_from_json(reply.content)
    return msgspec.json.decode(reply.content, type=kind)


@publisher.command("add")
@DATA_DIR
@click.option("--context-id", required=True, help="The context ID (its UTF-8 bytes, max 64).")
@click.option(
    "--metadata", "kind", type=click.Choice(["bitswap", "http", "graphsync"]),
    default="bitswap", show_default=True, help="How the content is retrieved.",
)  # fmt: skip
@click.option("--piece-cid", help="The piece CID (for --metadata graphsync).")
@click.option("--multihashes", "source", required=True, help="File of multihashes/CIDs; - = stdin.")
@click.option("--addr", "addrs", multiple=True, help="Override the provider addresses (repeat).")
@AS_JSON
def add(
    data_dir: Path,
    context_id: str,
    kind: str,
    piece_cid: str | None,
    source: str,
    addrs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Publish an advertisement for every multihash in the file."""
    metadata = _metadata(kind, piece_cid)
    multihashes, bad = read_multihashes(_read_lines(source))
    if bad:
        shown = "; ".join(f"line {b.number} {b.text!r}: {b.reason}" for b in bad[:_SHOWN_BAD_LINES])
        more = f" (and {len(bad) - _SHOWN_BAD_LINES} more)" if len(bad) > _SHOWN_BAD_LINES else ""
        raise CliError(f"{len(bad)} bad line(s) in {source}, nothing published: {shown}{more}")
    if not multihashes:
        raise CliError(f"{source} lists no multihashes, nothing published")
    request = PublishRequest(
        op="add",
        context_id=context_id.encode(),
        multihashes=multihashes,
        metadata=metadata,
        addresses=list(addrs) if addrs else None,
    )
    result = _submit(data_dir, request, show_progress=not as_json)
    _emit(as_json, _result_doc(result), "published")


@publisher.command("remove")
@DATA_DIR
@click.option("--context-id", required=True, help="The context ID to remove.")
@AS_JSON
def remove(data_dir: Path, context_id: str, as_json: bool) -> None:
    """Publish the removal of a context ID."""
    request = PublishRequest(op="remove", context_id=context_id.encode())
    _emit(as_json, _result_doc(_submit(data_dir, request, False)), "removed")


@publisher.command("ls")
@DATA_DIR
@click.option("--limit", default=50, show_default=True, help="Newest N ads (0 = all).")
@AS_JSON
def ls(data_dir: Path, limit: int, as_json: bool) -> None:
    """List the chain, newest first."""
    try:
        pub = Publisher.open(data_dir)
    except StoreLocked:
        listing = _via_socket(data_dir, "GET", f"/chain?limit={limit}", b"", ChainListing)
        records, peer = listing.ads, listing.peer_id
    else:
        records, peer = pub.chain(limit), str(pub.peer_id)
        pub.close()
    if as_json:
        click.echo(json.dumps({"peer_id": peer, "ads": msgspec.to_builtins(records)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("seq", "cid", "kind", "context id", "multihashes", title=f"chain of {peer}")
    table.columns[1].overflow = "fold"
    for r in records:
        ctx = msgspec.json.decode(f'"{r.context_id}"'.encode(), type=bytes)
        table.add_row(str(r.seq), r.cid, r.kind, ctx.decode(errors="replace"), str(r.count))
    Console().print(table)
