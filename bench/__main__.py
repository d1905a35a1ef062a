"""``make bench`` (or ``python -m bench [NAME ...]``): run benchmarks, print one JSON document.

Names: ``codecs``, ``ingest``, ``small_ads`` (2,000 one-multihash ads), ``store`` (bytes on
disk, lookups), ``find`` (HTTP find API beside the same server's empty endpoint), ``memory``
(slow: a 100k-ad chain), ``http`` (GETs through each layer of the HTTP client),
``cluster`` (a real Valkey cluster: the cluster store beside raw pipelined SADD and GET);
default: all.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from bench import cluster, codecs, find, http, ingest, store
from indexer.logs import configure_logging

BENCHES: dict[str, Callable[[], dict[str, Any]]] = {
    "codecs": codecs.run,
    "ingest": ingest.throughput,
    "small_ads": ingest.small_ads,
    "memory": ingest.memory,
    "store": store.run,
    "find": find.run,
    "http": http.run,
    "cluster": cluster.run,
}


def main(argv: list[str]) -> int:
    configure_logging(logging.WARNING)  # to stderr: stdout is the one JSON document
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    results = {name: BENCHES[name]() for name in names}
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
