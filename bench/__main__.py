"""``make bench`` (or ``python -m bench [NAME ...]``): run benchmarks, print one JSON document.

Names: ``codecs``, ``ingest``, ``small_ads`` (2,000 one-multihash ads), ``store`` (bytes on
disk, lookups), ``find`` (HTTP find API beside the same server's empty endpoint), ``memory``
(slow: a 100k-ad chain), ``http`` (GETs through each layer of the HTTP client),
``cluster`` (a real Valkey cluster: the cluster store beside raw pipelined SADD and GET, then
whole daemons on it, 1 to 3 in cluster mode beside one embedded, ingesting and serving finds),
``growth`` (ingest and lookups at 1M, 10M and 50M multihashes), ``recovery`` (a restarted
daemon's first index write); default: all.  The document also goes to ``bench/results.json``,
merged by bench name with what earlier runs wrote there (each bench's newest figures, with when
they were measured and the machine's cores), and a ``summary`` built from all of them: one row
per headline figure (``HEADLINES``: where it is in its bench's figures, its raw limit, its
target), so a bench's own keys stay its own and the summary is one table here.
``docs/performance.md`` explains each figure.  A bench that cannot run as asked
(``BenchRefused``: too little disk, say) is one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import json
import logging
import operator
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchRefused
from indexer.logs import configure_logging

__all__ = ["BENCHES", "HEADLINES", "Headline", "main", "summary"]

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
    "growth": ("bench.growth", "run"),
    "recovery": ("bench.recovery", "run"),
}

KeyPath = tuple[str | int, ...]  # keys and list indexes into a bench's figures


@dataclass(frozen=True)
class Headline:
    """One summary row: ``value`` beside the raw limit ``raw`` (both paths into the bench's
    figures); the target applies to ``ratio`` (``value / raw``, or the bench's own ``ratio``
    path when it has one) or, when ``on`` is ``"value"``, to the value itself."""

    bench: str
    figure: str
    unit: str
    value: KeyPath
    raw_limit: str
    raw: KeyPath | None = None
    ratio: KeyPath | None = None
    op: str = ">="
    target: float | None = None
    on: str = "ratio"


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt,
}  # fmt: skip
MPS = "multihashes/s"

HEADLINES: list[Headline] = [
    Headline("ingest", "ingest / raw LevelDB puts", MPS, ("ingest_multihashes_per_s",),
             "raw plyvel WriteBatch puts of the same entries",
             ("raw_plyvel_writebatch_puts_per_s",), ("ratio_to_raw",), target=0.6),
    Headline("small_ads", "small ads (1 multihash each)", "ads/s", ("ads_per_s",),
             "sequential block GETs through one fetcher (a walk waits one per ad)",
             ("sequential_block_requests_per_s",), target=2000, on="value"),
    Headline("find", "HTTP find / the same server's /health", "requests/s",
             ("find", "requests_per_s"), "GET /health on the same server",
             ("empty", "requests_per_s"), ("find", "ratio_to_empty"), target=0.8),
    Headline("find", "HTTP find p99 latency while the server ingests", "ms",
             ("find_during_ingest", "p99_ms"), "p99 of the quiet find rounds",
             ("find_during_ingest", "quiet_p99_ms"), op="<="),
    Headline("find", "batch find / in-process lookups", MPS, ("batch", "multihashes_per_s"),
             "Finder.find + JSON encoding in-process on the same batches",
             ("batch", "in_process_multihashes_per_s"), ("batch", "ratio_to_in_process"),
             target=0.7),
    Headline("store", "in-process lookups / raw gets (small ads)", "lookups/s",
             ("small_ads", "lookups_per_s"), "raw plyvel get of the same keys",
             ("small_ads", "raw_plyvel_gets_per_s"), ("small_ads", "ratio_to_raw"), target=0.8),
    Headline("store", "in-process lookups / raw gets (big ads)", "lookups/s",
             ("big_ads", "lookups_per_s"), "raw plyvel get of the same keys",
             ("big_ads", "raw_plyvel_gets_per_s"), ("big_ads", "ratio_to_raw"), target=0.8),
    Headline("memory", "peak RSS, 100k-ad / 1k-ad chain", "MiB", ("peak_rss_mib", 1),
             "the 1k-ad chain's peak RSS", ("peak_rss_mib", 0), ("rss_ratio",), "<=", 1.5),
    Headline("growth", "ingest at the largest size / the smallest", MPS,
             ("checkpoints", -1, "ingest_multihashes_per_s"), "ingest at the smallest size",
             ("checkpoints", 0, "ingest_multihashes_per_s"), ("ingest_ratio",), target=0.7),
    Headline("growth", "lookups at the largest size / the smallest", "lookups/s",
             ("checkpoints", -1, "lookups_per_s"), "lookups at the smallest size",
             ("checkpoints", 0, "lookups_per_s"), ("lookup_ratio",), target=0.7),
    Headline("growth", "ingest CPU per multihash, the smallest size / the largest", "us",
             ("checkpoints", -1, "ingest_cpu_us_per_multihash"),
             "ingest CPU per multihash at the smallest size",
             ("checkpoints", 0, "ingest_cpu_us_per_multihash"), ("ingest_cpu_ratio",),
             target=0.7),
    Headline("growth", "lookups per CPU second at the largest size / the smallest",
             "lookups/cpu-s", ("checkpoints", -1, "lookups_per_cpu_s"),
             "lookups per CPU second at the smallest size",
             ("checkpoints", 0, "lookups_per_cpu_s"), ("lookup_cpu_ratio",), target=0.7),
    Headline("recovery", "start to first index write (worst case's median)", "s",
             ("seconds",), "a bare interpreter importing the daemon's module",
             ("python_import_daemon_s",), op="<", target=2.0, on="value"),
]  # fmt: skip


def _at(figures: Any, path: Sequence[str | int]) -> Any:
    """The figure at ``path``, or None when any step is missing."""
    for step in path:
        try:
            figures = figures[step]
        except (KeyError, IndexError, TypeError):
            return None
    return figures


def _row(h: Headline, figures: Mapping[str, Any] | None) -> dict[str, Any]:
    value = raw = ratio = None
    if figures is not None:
        value = _at(figures, h.value)
        raw = None if h.raw is None else _at(figures, h.raw)
        ratio = _at(figures, h.ratio) if h.ratio is not None else None
        if ratio is None and isinstance(value, int | float) and isinstance(raw, int | float):
            ratio = round(value / raw, 3) if raw else None
    checked = ratio if h.on == "ratio" else value
    meets = None
    if h.target is not None and isinstance(checked, int | float):
        meets = _OPS[h.op](checked, h.target)
    return {
        "bench": h.bench,
        "figure": h.figure,
        "value": value if value is not None else "not measured yet",
        "unit": h.unit,
        "raw_limit": h.raw_limit,
        "raw": raw,
        "ratio": ratio,
        "target": None if h.target is None else f"{h.on} {h.op} {h.target:g}",
        "meets": meets,
        "measured_at": None if figures is None else figures.get("measured_at"),
    }


def summary(
    results: Mapping[str, Any], headlines: Sequence[Headline] = HEADLINES
) -> list[dict[str, Any]]:
    """One row per headline figure, from each bench's own figures in ``results``."""
    return [_row(h, results.get(h.bench)) for h in headlines]


def _run(name: str) -> dict[str, Any]:
    module, function = BENCHES[name]
    bench: Callable[[], dict[str, Any]] = getattr(importlib.import_module(module), function)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"measured_at": at, "cores": os.cpu_count(), **bench()}


def main(argv: list[str], results_file: Path = RESULTS) -> int:
    configure_logging(logging.WARNING)  # to stderr: stdout is the one JSON document
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    try:
        for name in names:
            results[name] = _run(name)
    except BenchRefused as exc:
        print(f"bench {name}: {exc}", file=sys.stderr)
        return 2
    finally:
        if results:
            _record(results, results_file)
    rows = [row for row in summary(results) if row["bench"] in results]
    json.dump({**results, "summary": rows}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _record(results: dict[str, Any], path: Path) -> None:
    """Merge ``results`` into ``path`` (``bench/results.json``; a damaged file is started
    afresh) and rebuild its summary from every bench's newest figures."""
    try:
        kept = json.loads(path.read_text())
        if not isinstance(kept, dict):
            kept = {}
    except (OSError, ValueError):
        kept = {}
    kept.update(results)
    benches = {name: figures for name, figures in kept.items() if name in BENCHES}
    kept["summary"] = summary(benches)
    kept["summary_built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(kept, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
