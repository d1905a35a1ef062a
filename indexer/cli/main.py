"""The ``indexer`` command line: the entry point and its command groups.

Rules: heavy imports (libp2p, trio servers) happen inside the commands that need them, so
``indexer --help`` and ``indexer ad show`` start fast; every error a user can cause is printed as
one line on stderr with a non-zero exit, never a traceback; every command that prints data has
``--json`` for scripts.
"""

from __future__ import annotations

import importlib
import sys

import click

from indexer import __version__
from indexer.errors import CliError, CommandFailed

__all__ = ["COMMANDS", "cli", "main"]

# name -> (module, attribute, one-line help).  A command's module is imported only when that
# command runs (``indexer admin status`` imports neither the daemon, libp2p nor the cluster
# client); the help lines live here so ``indexer --help`` imports nothing (a test keeps them
# equal to each command's own short help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ad": ("indexer.cli.ad", "ad", "Inspect advertisements, entry chunks and signed heads."),
    "admin": (
        "indexer.cli.admin",
        "admin",
        "Ask a running daemon to sync, and look at its staging area and publishers.",
    ),
    "daemon": ("indexer.cli.daemon", "daemon", "Run the indexer node until SIGINT or SIGTERM."),
    "find": ("indexer.cli.find", "find", "Who provides a multihash (base58 or hex) or a CID."),
    "ingest": (
        "indexer.cli.ingest",
        "ingest",
        "Sync the given publishers once, index everything staged, and exit.",
    ),
    "init": ("indexer.cli.daemon", "init", "Write a commented config file and an identity key."),
    "providers": (
        "indexer.cli.find",
        "providers",
        "Every provider the daemon has indexed (the find API's GET /providers).",
    ),
    "publisher": (
        "indexer.cli.publisher",
        "publisher",
        "Publish an advertisement chain that IPNI indexers can sync.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), (module, attribute)
        if cmd_name == "publisher":  # ``publisher serve`` registers itself on import
            importlib.import_module("indexer.cli.serve")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="indexer")
def cli() -> None:
    """ipni-indexer: a crash-safe InterPlanetary Network Indexer."""


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
    except Exception as exc:
        # sync's and store's errors (a corrupt block, a locked database) are a failed command;
        # anything else is a bug and keeps its traceback.  The classes are looked up here, not
        # imported at the top, so a light command does not pay for them.
        from store import StoreError
        from sync import SyncError

        if not isinstance(exc, SyncError | StoreError):
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
