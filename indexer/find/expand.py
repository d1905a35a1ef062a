"""Index values to find results, with extended providers expanded as storetheindex does.

Rules this module keeps (storetheindex ``server/find/server.go`` ``find`` and
``createExtendedProviderResult``; go-libipni ``pcache/provider_cache.go`` ``GetResults``):

- A value whose provider is not in the registry is left out (storetheindex also drops it).
- Each value gives, in order: the main provider's own result (its registry addresses, the value's
  ContextID and metadata); then the context-level extended providers of that ContextID; then,
  unless that context's ``Override`` is set, the chain-level extended providers.
- An extended-provider entry naming the main provider is skipped when its metadata is empty or
  equal to the value's (it advertises no new protocol); any other entry with empty metadata
  inherits the value's metadata.  Every expanded result carries the value's ContextID.
- A multihash with no result is left out of the response; a response with none is a 404.
- Peer IDs are printed in base58 whatever form the ad used (``bafz...`` CIDs included); an
  extended-provider ID that does not parse is skipped rather than served.
- Registry records (with their base58 IDs) are cached across requests by ``ProviderCache``
  for one ``kv.version``: any write empties it, so a find never serves a stale record.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from indexer.find.model import AddrInfo, MultihashResult, ProviderResult
from store import IndexStore, ProviderRecord, ValueRecord
from store.index import ExtendedProviderRecord
from sync import PeerId
from sync.errors import BadPeerId

__all__ = ["Finder", "ProviderCache", "context_override", "normalize_peer", "provider_results"]

_CACHE_MAX = 100_000


def normalize_peer(text: str) -> str | None:
    """The base58 form of a peer ID in either textual form; None when it does not parse."""
    try:
        return str(PeerId.parse(text))
    except BadPeerId:
        return None


def context_override(record: ProviderRecord, context_key: str) -> bool:
    """Whether the context's extended providers override the chain-level ones (its ``Override``).

    As storetheindex, the flag counts only while the context has extended providers of its own.
    """
    return record.overrides(context_key)


def _extras(
    entries: Iterable[ExtendedProviderRecord], main: str, value: ValueRecord
) -> Iterator[ProviderResult]:
    for entry in entries:
        peer = normalize_peer(entry.id)
        if peer is None:
            continue
        if peer == main and (not entry.metadata or entry.metadata == value.metadata):
            continue
        yield ProviderResult(
            value.context_id,
            entry.metadata or value.metadata,
            AddrInfo(peer, list(entry.addresses)),
        )


def provider_results(main: str, record: ProviderRecord, value: ValueRecord) -> list[ProviderResult]:
    """The results one index value expands to: the main provider, then its extended providers."""
    out = [ProviderResult(value.context_id, value.metadata, AddrInfo(main, list(record.addresses)))]
    key = base64.b64encode(value.context_id).decode()
    contextual = record.context_extended.get(key)
    if contextual:
        out.extend(_extras(contextual, main, value))
        if context_override(record, key):
            return out
    out.extend(_extras(record.extended, main, value))
    return out


Known = tuple[str, ProviderRecord] | None


@dataclass
class ProviderCache:
    """Registry records and base58 IDs read at one ``kv.version``; swapped whole, never patched."""

    index: IndexStore
    _current: tuple[int, dict[bytes, Known]] = (-1, {})

    def get(self, raw: bytes) -> Known:
        version = self.index.kv.version  # read before anything it guards
        seen, records = self._current
        if seen != version or len(records) > _CACHE_MAX:
            records = {}
            self._current = (version, records)
        if raw not in records:
            record = self.index.provider(raw)
            records[raw] = None if record is None else (str(PeerId(raw)), record)
        return records[raw]


@dataclass
class Finder:
    """Lookups: multihashes to results, registry records read through a ``ProviderCache``."""

    index: IndexStore
    cache: ProviderCache | None = None

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = ProviderCache(self.index)

    def _provider(self, raw: bytes) -> Known:
        assert self.cache is not None
        return self.cache.get(raw)

    def results(self, multihash: bytes) -> list[ProviderResult]:
        """Every provider result of one multihash, expanded; empty when none."""
        out: list[ProviderResult] = []
        for value in self.index.lookup(multihash):
            known = self._provider(value.provider)
            if known is not None:
                out.extend(provider_results(known[0], known[1], value))
        return out

    def find(self, multihashes: Sequence[bytes]) -> list[MultihashResult]:
        """The results of each multihash that has any, in request order."""
        found = []
        for mh in multihashes:
            results = self.results(mh)
            if results:
                found.append(MultihashResult(mh, results))
        return found
