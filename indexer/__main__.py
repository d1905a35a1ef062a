"""``python -m indexer`` runs the command line."""

from .cli import main

main()
