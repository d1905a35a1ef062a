"""The benchmarks' one exception: ``BenchRefused``, a bench that cannot run as asked (sizes that
make no sense, too little free disk); ``python -m bench`` prints it as one line and exits 2,
before anything is written."""

from __future__ import annotations

__all__ = ["BenchRefused"]


class BenchRefused(Exception):
    """A bench cannot run as asked; the message says why and what to change."""
