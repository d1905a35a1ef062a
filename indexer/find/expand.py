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
- ``Finder`` reads through an ``IndexReader`` (``reader.py``): one ``lookup`` (a batch: one
  ``lookup_many``), then one ``registry`` read of the distinct providers of the values found, so
  a cluster pays a fixed number of round trips per request, not one per value.  How fresh the
  registry records are is the reader's rule (one node: never stale; a cluster: a short bound).
- A value's expanded results are reused only while the reader hands out the very same value and
  registry objects (``_Expanded``), so they are never staler than what the reader serves.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from indexer.find.model import AddrInfo, MultihashResult, ProviderResult
from indexer.find.reader import IndexReader, Known, as_reader
from store import IndexStore, ProviderRecord, ValueRecord
from store.index import ExtendedProviderRecord
from sync import PeerId
from sync.errors import BadPeerId

__all__ = ["Finder", "context_override", "normalize_peer", "provider_results"]


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


_RESULTS_MAX = 50_000  # values whose expanded results are remembered (then started afresh)


class _Expanded:
    """Each value's expanded results, remembered with the value and registry entry objects they
    came from and reused only for those very objects (the entry holds them, so their ids cannot
    be reused meanwhile): the readers hand out the same objects while nothing changed (a
    ``kv.version``, a registry ``ttl``), and new ones when anything did."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[ValueRecord, Known, tuple[ProviderResult, ...]]] = {}

    def expand(
        self, values: Iterable[ValueRecord], registry: Mapping[bytes, Known]
    ) -> list[ProviderResult]:
        entries = self.entries
        out: list[ProviderResult] = []
        for value in values:
            known = registry[value.provider]
            if known is None:
                continue
            entry = entries.get(id(value))
            if entry is None or entry[0] is not value or entry[1] is not known:
                if len(entries) >= _RESULTS_MAX:
                    entries.clear()
                results = tuple(provider_results(known[0], known[1], value))
                entry = entries[id(value)] = (value, known, results)
            out.extend(entry[2])
        return out


@dataclass
class Finder:
    """Lookups: multihashes to results, read through an ``IndexReader``.

    ``index`` may be an ``IndexStore`` (wrapped in a ``StoreReader``) or any reader.
    """

    index: IndexStore | IndexReader
    reader: IndexReader = field(init=False)
    _expanded: _Expanded = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = as_reader(self.index)
        self._expanded = _Expanded()

    async def results(self, multihash: bytes) -> list[ProviderResult]:
        """Every provider result of one multihash, expanded; empty when none."""
        values = await self.reader.lookup(multihash)
        if not values:
            return []
        providers = {values[0].provider} if len(values) == 1 else {v.provider for v in values}
        return self._expanded.expand(values, await self.reader.registry(providers))

    async def find(self, multihashes: Sequence[bytes]) -> list[MultihashResult]:
        """The results of each multihash that has any, in request order."""
        found = await self.reader.lookup_many(multihashes)
        registry = await self.reader.registry({v.provider for vs in found for v in vs})
        out = []
        expand = self._expanded.expand
        for mh, values in zip(multihashes, found, strict=True):
            results = expand(values, registry)
            if results:
                out.append(MultihashResult(mh, results))
        return out
