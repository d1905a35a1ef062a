"""Indexer: the node daemon, its services and the ``indexer`` command line.

The top of the dependency direction ``store <- staging <- sync <- indexer``: it may import every
other package; none of them imports it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
