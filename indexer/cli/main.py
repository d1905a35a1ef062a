"""The ``indexer`` command line: the entry point and its command groups.

Rules: heavy imports (libp2p, trio servers) happen inside the commands that need them, so
``indexer --help`` and ``indexer ad show`` start fast; every error a user can cause is printed as
one line on stderr with a non-zero exit, never a traceback; every command that prints data has
``--json`` for scripts.
"""

from __future__ import annotations

import sys

import click

from indexer import __version__
from indexer.cli.ad import ad
from indexer.cli.admin import admin
from indexer.cli.daemon import daemon, init
from indexer.cli.find import find, providers
from indexer.cli.ingest import ingest
from indexer.cli.publisher import publisher
from indexer.cli.serve import serve
from indexer.errors import CliError, CommandFailed
from store import StoreError
from sync import SyncError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="indexer")
def cli() -> None:
    """ipni-indexer: a crash-safe InterPlanetary Network Indexer."""


cli.add_command(ad)
cli.add_command(publisher)
cli.add_command(ingest)
cli.add_command(init)
cli.add_command(daemon)
cli.add_command(admin)
cli.add_command(providers)
cli.add_command(find)
assert serve.name in publisher.commands  # registered on import


def main() -> None:
    """Console-script entry point."""
    try:
        code = cli.main(standalone_mode=False)  # a command's click Exit(N) is returned as N
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CliError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except CommandFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (SyncError, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
