"""IPIP-484 filters of delegated routing answers: ``filter-protocols`` and ``filter-addrs``.

Rules this module keeps (ipfs/specs ``src/routing/http-routing-v1.md`` and ``ipip-0484.md``;
where the spec is silent, ipni/indexstar ``filters.go``, which serves cid.contact, and ipfs/boxo
``routing/http/filters``):

- A parameter is a comma-separated list (``,`` or ``%2C``); entries are trimmed and compared
  case-insensitively; empty entries are ignored and an empty list filters nothing.  A parameter
  given twice is an error (``BadFilter``, a 400), as in indexstar.
- ``unknown`` asks for records whose list (``Protocols`` or ``Addrs``) is empty; it matches
  nothing else.  An empty list matches only ``unknown``.
- ``filter-protocols``: a record passes when one of its protocols is in the list.  Names are
  opaque: there is no negation (the spec defines ``!`` for addresses only), so ``!x`` is a name
  no record carries, as in indexstar and boxo.  A record that passes is
  returned unchanged, with all its protocols.
- ``filter-addrs``: ``!name`` drops every address that has the multiaddr protocol ``name``; plain
  names keep only addresses that have one of them.  With only ``!`` entries (``unknown`` aside)
  every other address is kept; with ``unknown`` alone none is.  A record keeps the addresses that
  pass and is dropped when none does.  (indexstar keeps every address for a lone ``unknown``;
  boxo drops every address for ``!ip6,unknown``; this keeps the spec's reading for both.)
- Both filters must pass.  An address that is not a valid multiaddr never passes a filter (the
  records module already drops such addresses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from indexer.errors import BadFilter
from indexer.routing.records import PeerRecord, addr_protocols

__all__ = ["FILTER_ADDRS", "FILTER_PROTOCOLS", "BadFilter", "Filters"]

FILTER_ADDRS = "filter-addrs"
FILTER_PROTOCOLS = "filter-protocols"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class _List:
    names: frozenset[str]
    negated: frozenset[str]
    unknown: bool


def _parse(query: Mapping[str, Sequence[str]], name: str, negation: bool) -> _List | None:
    values = query.get(name, ())
    if len(values) > 1:
        raise BadFilter(f"{name} given {len(values)} times; give one comma-separated list")
    entries = [e.strip().lower() for e in values[0].split(",")] if values else []
    entries = [e for e in entries if e]
    if not entries:
        return None
    negated = {e[1:] for e in entries if negation and e.startswith("!")}
    names = {e for e in entries if e != UNKNOWN and not (negation and e.startswith("!"))}
    return _List(frozenset(names), frozenset(negated), UNKNOWN in entries)


def _address_passes(text: str, rule: _List) -> bool:
    protocols = addr_protocols(text)
    if protocols is None or any(p in rule.negated for p in protocols):
        return False
    if rule.names:
        return any(p in rule.names for p in protocols)
    return bool(rule.negated)  # only "!" entries keep the rest; a lone "unknown" keeps none


@dataclass(frozen=True, slots=True)
class Filters:
    """The parsed ``filter-addrs`` and ``filter-protocols`` of one request (None: absent)."""

    addrs: _List | None = None
    protocols: _List | None = None

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """Parse a request's query; raises ``BadFilter``."""
        return cls(_parse(query, FILTER_ADDRS, True), _parse(query, FILTER_PROTOCOLS, False))

    def apply(self, record: PeerRecord) -> PeerRecord | None:
        """The record as the filters leave it (fewer addresses), or None when it is dropped."""
        rule = self.protocols
        if rule is not None:
            if not record.protocols:
                if not rule.unknown:
                    return None
            elif not any(p.lower() in rule.names for p in record.protocols):
                return None
        rule = self.addrs
        if rule is None:
            return record
        if not record.addrs:
            return record if rule.unknown else None
        kept = [a for a in record.addrs if _address_passes(a, rule)]
        if not kept:
            return None
        if len(kept) == len(record.addrs):
            return record
        return dataclasses.replace(record, addrs=kept)
