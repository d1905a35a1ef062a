"""``indexer ad ...``: look inside advertisement-chain blocks.

``indexer ad show PATH`` reads one block (an advertisement, an entry chunk or a signed head) from
a file or stdin, checks its CID when one is given or when the file is named by it, verifies its
signatures and prints its fields.  Exit 0 only when the block is valid; 1 when it is not; 2 for
bad input (no such file, a malformed ``--cid``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from indexer.errors import CliError
from sync import BadCid, Link
from sync.report import BlockReport, inspect_block

__all__ = ["ad"]


@click.group()
def ad() -> None:
    """Inspect advertisements, entry chunks and signed heads."""


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory, not a block file") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _cid_from_name(path: str) -> Link | None:
    """The CID a file is named by (``<cid>`` or ``<cid>.<ext>``), if it is."""
    if path == "-":
        return None
    name = Path(path).name
    for candidate in (name, name.rsplit(".", 1)[0]):
        try:
            return Link.parse(candidate)
        except BadCid:
            continue
    return None


@ad.command("show")
@click.argument("path")
@click.option("--cid", "cid_text", help="The CID the block must hash to.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(path: str, cid_text: str | None, as_json: bool) -> None:
    """Decode and verify the block in PATH ('-' reads stdin)."""
    if cid_text is not None:
        try:
            link: Link | None = Link.parse(cid_text)
        except BadCid as exc:
            raise CliError(str(exc)) from None
    else:
        link = _cid_from_name(path)
    report = inspect_block(_read(path), link)
    if as_json:
        click.echo(json.dumps({"path": path, **report.to_json()}, indent=2))
    else:
        _print_table(path, report)
    sys.exit(0 if report.valid else 1)


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_value(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value, indent=1)
    if value is None:
        return "(none)"
    return str(value)


def _print_table(path: str, report: BlockReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.kind or 'block'}: {path}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("CID", f"{report.cid} ({'checked' if report.cid_checked else 'computed'})")
    table.add_row("codec", _value(report.codec))
    for name, value in report.fields.items():
        table.add_row(name, escape(_value(value)))
    table.add_row("signer", _value(report.signer))
    console = Console()
    console.print(table)
    if report.error is None:
        console.print("[green]valid[/green]")
    else:
        console.print(f"[red]INVALID[/red] ({report.error.kind}): {escape(str(report.error))}")
