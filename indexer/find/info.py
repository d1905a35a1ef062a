"""Registry records to ``ProviderInfo``, and the cached ``/stats`` numbers.

Rules this module keeps (storetheindex ``internal/registry/apiconv.go`` ``RegToApiProviderInfo``,
``registry.go`` ``Update``, ``server/find/cached_stats.go``):

- ``AddrInfo`` is the provider's registry addresses.  ``LastAdvertisement`` is the last ad's CID
  (``null`` before any) and ``LastAdvertisementTime`` is set only with it, RFC 3339 in UTC
  seconds.  ``FrozenAt`` is the record's ad at the freeze (``null`` when not frozen, or frozen
  before any ad) and ``FrozenAtTime`` its time (left out when not frozen), as storetheindex's
  ``RegToApiProviderInfo``: a provider frozen before any ad has a ``FrozenAtTime`` alone.
- ``Publisher`` holds one address, as the Go registry keeps one: the first publisher address,
  else the provider's first address when the publisher is the provider; with neither it is
  left out.
- ``ExtendedProviders`` appears when the provider has chain-level or context-level extended
  providers.  ``Providers`` and ``Metadatas`` are parallel lists (``null`` for an entry with no
  metadata of its own); each ``Contextual`` item has ``Override``, ``ContextID`` (the raw bytes as
  a Go string, not base64), ``Providers`` and ``Metadatas``, ordered by ContextID bytes.
- ``LastError`` is the last ingest error and ``LastErrorTime`` when it was recorded (RFC 3339;
  absent for records written before the time was kept).  ``Inactive`` is the record's flag.
  ``Lag`` is how many of the provider's ads are staged and not yet applied (storetheindex: the
  ads left in the sync when the last one was applied); 0 is left out, as Go's ``omitempty``.
- ``/stats`` is the reader's ``stats`` (``reader.py``): on one node ``EntriesCount`` counts
  multihash keys and ``EntriesEstimate`` is the database's size on disk over 40, as storetheindex
  estimates, computed in a worker thread; on a cluster both are -1 (unknown).  It is computed at
  most once per ``ttl`` seconds, one computation at a time.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from indexer.find.expand import context_override, normalize_peer
from indexer.find.model import (
    AddrInfo,
    CidLink,
    ContextualExtendedProviders,
    ExtendedProviders,
    ProviderInfo,
    Stats,
    go_string,
)
from indexer.find.reader import IndexReader
from store import ProviderRecord
from store.index import ExtendedProviderRecord
from sync import Link, PeerId

__all__ = ["StatsCache", "provider_info", "rfc3339"]


def rfc3339(timestamp: float) -> str:
    """Go's ``time.Format(time.RFC3339)`` of a UTC time (seconds, truncated)."""
    return datetime.fromtimestamp(math.floor(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _extras(entries: Sequence[ExtendedProviderRecord]) -> tuple[list[AddrInfo], list[bytes | None]]:
    providers: list[AddrInfo] = []
    metadatas: list[bytes | None] = []
    for entry in entries:
        peer = normalize_peer(entry.id)
        if peer is not None:
            providers.append(AddrInfo(peer, list(entry.addresses)))
            metadatas.append(entry.metadata or None)
    return providers, metadatas


def _extended(record: ProviderRecord) -> ExtendedProviders | None:
    providers, metadatas = _extras(record.extended)
    contextual = []
    for key in sorted(record.context_extended, key=base64.b64decode):
        ctx_providers, ctx_metadatas = _extras(record.context_extended[key])
        if ctx_providers:
            contextual.append(
                ContextualExtendedProviders(
                    override=context_override(record, key),
                    context_id=go_string(base64.b64decode(key)),
                    providers=ctx_providers,
                    metadatas=ctx_metadatas,
                )
            )
    if not providers and not contextual:
        return None
    return ExtendedProviders(providers, contextual, metadatas)


def _publisher(provider: str, record: ProviderRecord) -> AddrInfo | None:
    if record.publisher is None:
        return None
    publisher = str(PeerId(record.publisher))
    if record.publisher_addrs:
        return AddrInfo(publisher, [record.publisher_addrs[0]])
    if publisher == provider and record.addresses:
        return AddrInfo(publisher, [record.addresses[0]])
    return None


def provider_info(peer: bytes, record: ProviderRecord, lag: int = 0) -> ProviderInfo:
    """The ``ProviderInfo`` of one registry record; ``lag``: its ads staged, not yet applied."""
    provider = str(PeerId(peer))
    last_ad = None if record.last_ad is None else CidLink(str(Link(record.last_ad)))
    last_time = ""
    if last_ad is not None and record.last_ad_time:
        last_time = rfc3339(record.last_ad_time)
    return ProviderInfo(
        addr_info=AddrInfo(provider, list(record.addresses)),
        last_advertisement=last_ad,
        last_advertisement_time=last_time,
        publisher=_publisher(provider, record),
        extended_providers=_extended(record),
        frozen_at=None if record.frozen_at is None else CidLink(str(Link(record.frozen_at))),
        frozen_at_time="" if record.frozen_at_time is None else rfc3339(record.frozen_at_time),
        inactive=record.inactive,
        last_error=record.last_error or "",
        last_error_time=rfc3339(record.last_error_time)
        if record.last_error and record.last_error_time
        else "",
        lag=max(0, lag),
    )


@dataclass
class StatsCache:
    """``/stats``: the reader's ``stats``, reused for ``ttl`` seconds."""

    reader: IndexReader
    ttl: float = 60.0
    _value: Stats | None = None
    _at: float = 0.0  # time.monotonic() of the last computation
    _lock: trio.Lock = field(default_factory=trio.Lock)

    async def get(self) -> Stats:
        async with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._at >= self.ttl:
                self._value = await self.reader.stats()
                self._at = now
            return self._value
