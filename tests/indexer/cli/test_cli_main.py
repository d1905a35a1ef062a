"""The ``indexer`` entry point: commands load lazily, and their listed help is their own."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from indexer.cli.main import COMMANDS, cli

HEAVY = ("libp2p", "coredis", "indexer.daemon", "indexer.ingest.engine")


def test_each_listed_help_line_is_the_commands_own() -> None:
    for name, (module, attribute, listed) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        assert command.get_short_help_str(limit=200) == listed, name
        assert cli.get_command(click.Context(cli), name) is command


def loaded_after(*argv: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``indexer *argv``."""
    script = (
        "import sys\n"
        f"sys.argv = ['indexer', *{list(argv)!r}]\n"
        "from indexer.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split("\n")[-2].split()


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["--help"], []),
        (["admin", "status", "--admin-url", "http://127.0.0.1:9"], []),
        (["find", "--help"], []),
        (["publisher", "--help"], []),
    ],
)
def test_light_commands_import_no_engine(argv: list[str], needs: list[str]) -> None:
    assert loaded_after(*argv) == needs


def test_the_daemon_command_does_load_the_engine() -> None:  # the check above can fail
    assert "indexer.daemon" in loaded_after("daemon", "--help")
