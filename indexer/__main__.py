"""``python -m indexer`` runs the command line."""

from indexer.cli.main import main

main()
