"""Prometheus metrics of an indexer node, served at ``GET /metrics`` on the admin server.

Rules this module keeps:

- One ``CollectorRegistry`` per daemon (never the process-global one), so two daemons in one
  process (tests) never share or clash on counters.
- Counters move from the ingester's events (``IngestObserver``); gauges of staging depth are
  read from the staging area when scraped, so they can never drift from what is stored.
- ``IngestRates`` keeps, per provider, storetheindex's ingest rate (``rate.Rate``): multihashes
  indexed, time taken, ads sampled, summed since the rate was last read; a read marks it
  observed and the next ad starts it afresh (storetheindex's ``rate.Map``).  In memory only, at
  most ``RATES_LIMIT`` providers (the one updated least recently goes first).
- Names follow Prometheus conventions under the ``ipni_`` prefix; provider and publisher labels
  are peer IDs (bounded by the staging area, which only holds work in flight).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from indexer.ingest.progress import SyncProgress
from staging import StagingArea
from sync import PeerId

__all__ = ["CONTENT_TYPE", "IngestRate", "IngestRates", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RATES_LIMIT = 100_000  # providers whose ingest rate is kept


class IngestRate(msgspec.Struct, frozen=True):
    """storetheindex's ``rate.Rate`` on the wire: ``Elapsed`` in nanoseconds (a Go Duration)."""

    count: int = msgspec.field(name="Count")
    elapsed: int = msgspec.field(name="Elapsed")
    samples: int = msgspec.field(name="Samples")


class IngestRates:
    """Per provider (peer ID bytes): the rate since it was last read (see the module's rules)."""

    def __init__(self, limit: int = RATES_LIMIT) -> None:
        self.limit = limit
        self._rates: OrderedDict[bytes, tuple[IngestRate, bool]] = OrderedDict()

    def update(self, provider: bytes, count: int, seconds: float) -> None:
        if count <= 0 or seconds <= 0:
            return  # as storetheindex: nothing indexed, or no time taken, is no sample
        rate, observed = self._rates.pop(provider, (IngestRate(0, 0, 0), False))
        if observed:
            rate = IngestRate(0, 0, 0)
        nanos = round(seconds * 1e9)
        self._rates[provider] = (
            IngestRate(rate.count + count, rate.elapsed + nanos, rate.samples + 1),
            False,
        )
        while len(self._rates) > self.limit:
            self._rates.popitem(last=False)

    def get(self, provider: bytes) -> IngestRate | None:
        found = self._rates.get(provider)
        if found is None:
            return None
        self._rates[provider] = (found[0], True)
        return found[0]

    def all(self) -> dict[bytes, IngestRate]:
        out = {}
        for provider, (rate, _) in self._rates.items():
            self._rates[provider] = (rate, True)
            out[provider] = rate
        return out


class _StagingCollector(Collector):
    def __init__(self, staging: StagingArea, syncing: Callable[[], Collection[bytes]]) -> None:
        self.staging, self.syncing = staging, syncing

    def collect(self) -> Iterator[Metric]:
        ads = GaugeMetricFamily(
            "ipni_staging_ads",
            "Ads staged and not yet processed, per provider.",
            labels=["provider"],
        )
        stacks = GaugeMetricFamily(
            "ipni_staging_stacks", "Stacks staged, per provider.", labels=["provider"]
        )
        for provider in self.staging.providers():
            rows = self.staging.stacks(provider)
            name = str(PeerId(provider))
            ads.add_metric([name], sum(stack.count for _, stack in rows))
            stacks.add_metric([name], len(rows))
        yield ads
        yield stacks
        yield GaugeMetricFamily(
            "ipni_publishers_syncing", "Publishers with a sync running or waiting.",
            value=len(self.syncing()),
        )  # fmt: skip


class Metrics:
    """The node's metrics; an ``IngestObserver`` for the ingester."""

    def __init__(self, staging: StagingArea, syncing: Callable[[], Collection[bytes]]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry()
        r = self.registry
        self.syncs = Counter("ipni_syncs", "Syncs finished, by result.", ["result"], registry=r)
        self.walked = Counter("ipni_ads_walked", "Ads walked by syncs.", registry=r)
        self.staged = Counter("ipni_ads_staged", "Ads staged by syncs (new ads).", registry=r)
        self.processed = Counter(
            "ipni_ads_processed", "Ads processed by workers, by result.", ["result"], registry=r
        )
        self.indexed = Counter(
            "ipni_multihashes_indexed", "Multihashes written to the index.", registry=r
        )
        self.sync_seconds = Histogram(
            "ipni_sync_duration_seconds", "Time from the start of a sync to its commit.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800), registry=r,
        )  # fmt: skip
        r.register(_StagingCollector(staging, syncing))
        self.rates = IngestRates()

    def sync_finished(self, progress: SyncProgress, ok: bool) -> None:
        self.syncs.labels("ok" if ok else "error").inc()
        self.walked.inc(progress.walked)
        self.staged.inc(progress.staged)
        if progress.started is not None and progress.finished is not None:
            self.sync_seconds.observe(max(0.0, progress.finished - progress.started))

    def ad_processed(self, ok: bool) -> None:
        self.processed.labels("ok" if ok else "error").inc()

    def multihashes_indexed(self, count: int) -> None:
        self.indexed.inc(count)

    def ad_ingested(self, provider: bytes, multihashes: int, seconds: float) -> None:
        self.rates.update(provider, multihashes, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
