"""``make bench`` (or ``python -m bench [NAME ...]``): run benchmarks, print one JSON document.

Names: ``codecs``, ``ingest``, ``small_ads`` (2,000 one-multihash ads), ``store`` (bytes on
disk, lookups), ``find`` (HTTP find API beside the same server's empty endpoint), ``memory``
(slow: a 100k-ad chain), ``http`` (GETs through each layer of the HTTP client),
``cluster`` (a real Valkey cluster: the cluster store beside raw pipelined SADD and GET, then
whole daemons on it, 1 to 3 in cluster mode beside one embedded, ingesting and serving finds);
default: all.  The document also goes to ``bench/results.json``, merged by bench name with what
earlier runs wrote there (each bench's newest figures, with when they were measured).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.logs import configure_logging

RESULTS = Path(__file__).with_name("results.json")

# name -> (module, function): a bench's module is imported only when it runs, so one bench's
# imports (coredis and the cluster harness, say) cannot change another's process.
BENCHES: dict[str, tuple[str, str]] = {
    "codecs": ("bench.codecs", "run"),
    "ingest": ("bench.ingest", "throughput"),
    "small_ads": ("bench.ingest", "small_ads"),
    "memory": ("bench.ingest", "memory"),
    "store": ("bench.store", "run"),
    "find": ("bench.find", "run"),
    "http": ("bench.http", "run"),
    "cluster": ("bench.cluster", "run"),
}


def _run(name: str) -> dict[str, Any]:
    module, function = BENCHES[name]
    bench: Callable[[], dict[str, Any]] = getattr(importlib.import_module(module), function)
    return bench()


def main(argv: list[str]) -> int:
    configure_logging(logging.WARNING)  # to stderr: stdout is the one JSON document
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    results = {name: _run(name) for name in names}
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    _record(results)
    return 0


def _record(results: dict[str, Any]) -> None:
    """Merge ``results`` into ``bench/results.json`` (a damaged file is started afresh)."""
    try:
        kept = json.loads(RESULTS.read_text())
        if not isinstance(kept, dict):
            kept = {}
    except (OSError, ValueError):
        kept = {}
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kept.update({name: {"measured_at": at, **figures} for name, figures in results.items()})
    RESULTS.write_text(json.dumps(kept, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
