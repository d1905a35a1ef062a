"""Delegated routing peer records of a multihash: expanded, decoded, one record per peer.

Rules this module keeps (storetheindex ``server/find/server.go`` ``find`` for the expansion,
ipni/indexstar ``delegated_translator.go`` ``drProvFromResult`` for the record):

- Every live (provider, context) value of the multihash is read; a value whose provider has no
  registry record is left out (storetheindex: the provider was removed).  Reads go through an
  ``indexer.find.reader.IndexReader`` (one node's ``IndexStore`` or a cluster's backend): one
  ``lookup``, then one ``registry`` read of the values' distinct providers.
- A value gives its provider (registry addresses, the value's metadata), then the extended
  providers of its context, then, unless that context overrides them, the chain-level ones.  An
  extended-provider entry naming the main provider is skipped when its metadata is empty or equal
  to the value's (it says nothing new); any other entry with empty metadata takes the value's.
  An entry whose peer ID does not parse is skipped.
- Metadata becomes ``Protocols`` plus one field per protocol, named as the protocol and holding
  its bytes as go-libipni marshals them (code included) in padded standard base64: bitswap is
  ``"transport-bitswap": "gBI="``.  Names are go-multicodec's (``transport-bitswap``,
  ``transport-graphsync-filecoinv1``, ``transport-ipfs-gateway-http``,
  ``transport-filecoin-piece-http``; a code outside the table is ``Code(<decimal>)``).  Metadata
  that does not decode whole gives no protocols at all, as indexstar (IPIP-484's ``unknown``).
- Records are merged per peer across values and contexts, in first-seen order: addresses and
  protocols are unions in first-seen order, and a protocol's field keeps its first value.
  (indexstar drops only byte-identical records, so a peer can appear once per metadata there.)
- Addresses that are not valid multiaddrs are dropped: a client parses every one it gets.
- Peer IDs print as base58btc (``12D3KooW...``), whatever form the ad used.
- ``legacy_json`` is the same peer as boxo's deprecated ``bitswap`` schema record
  (``{"Schema": "bitswap", "Protocol": "transport-bitswap", "ID", "Addrs"}``), for a peer whose
  protocols include bitswap only: clients older than IPIP-417 read nothing else.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import multiaddr

from indexer.find.reader import IndexReader
from store import IndexStore, ProviderRecord, ValueRecord
from sync import PeerId, decode_metadata
from sync.errors import BadPeerId
from sync.model.metadata import (
    BITSWAP,
    FILECOIN_PIECE_HTTP,
    GRAPHSYNC_FILECOINV1,
    IPFS_GATEWAY_HTTP,
    Transport,
)

__all__ = [
    "BITSWAP_NAME",
    "Index",
    "PeerRecord",
    "addr_protocols",
    "find_records",
    "protocol_fields",
]

_KNOWN = frozenset({BITSWAP, GRAPHSYNC_FILECOINV1, IPFS_GATEWAY_HTTP, FILECOIN_PIECE_HTTP})
BITSWAP_NAME = "transport-bitswap"


Index = IndexStore | IndexReader  # what ``routing_handler`` serves: wrapped by ``as_reader``


@dataclass(slots=True)
class PeerRecord:
    """One ``peer`` schema record: ``fields`` maps each protocol to its base64 metadata."""

    id: str
    addrs: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Schema": "peer", "ID": self.id, "Addrs": self.addrs}
        if self.protocols:
            out["Protocols"] = self.protocols
        for name, value in self.fields.items():
            out.setdefault(name, value)
        return out

    def legacy_json(self) -> dict[str, Any] | None:
        """The pre-IPIP-417 ``bitswap`` schema record of a bitswap peer (boxo's deprecated
        ``BitswapRecord``: ``Schema``, ``Protocol``, ``ID``, ``Addrs``); None for any other."""
        if BITSWAP_NAME not in self.fields:
            return None
        return {"Schema": "bitswap", "Protocol": BITSWAP_NAME, "ID": self.id, "Addrs": self.addrs}


@lru_cache(maxsize=65536)
def addr_protocols(text: str) -> tuple[str, ...] | None:
    """The lower-case protocol names of a textual multiaddr; None when it is not one."""
    try:
        return tuple(p.name.lower() for p in multiaddr.Multiaddr(text).protocols())
    except (
        multiaddr.exceptions.Error,
        ValueError,
    ):  # py-multiaddr wraps its codecs' errors in its own
        return None


@lru_cache(maxsize=256)
def _protocol_name(code: int) -> str:
    if code in _KNOWN:
        return Transport(code, b"").name
    from multiformats import multicodec  # 40 ms to import: only for codes outside the four

    if multicodec.exists(code=code):
        return str(multicodec.get(code=code).name)
    return f"Code({code})"  # go-multicodec's String() for an unregistered code


@lru_cache(maxsize=4096)
def protocol_fields(metadata: bytes) -> tuple[tuple[str, str], ...]:
    """(protocol name, base64 of its bytes) for each protocol of ``metadata``; () if malformed."""
    decoded = decode_metadata(metadata)
    if decoded.error is not None or decoded.opaque:
        return ()
    return tuple(
        (_protocol_name(t.code), base64.b64encode(t.raw).decode()) for t in decoded.transports
    )


def _peer(text: str) -> bytes | None:
    try:
        return PeerId.parse(text).raw
    except BadPeerId:
        return None


def _expand(value: ValueRecord, record: ProviderRecord) -> Iterator[tuple[bytes, list[str], bytes]]:
    """(peer, addresses, metadata) for the value's provider, then its extended providers."""
    yield value.provider, record.addresses, value.metadata
    key = base64.b64encode(value.context_id).decode()
    entries = list(record.context_extended.get(key, ()))
    if not record.overrides(key):
        entries += record.extended
    for entry in entries:
        peer = _peer(entry.id)
        if peer is None:
            continue
        if peer == value.provider and entry.metadata in (b"", value.metadata):
            continue
        yield peer, entry.addresses, entry.metadata or value.metadata


async def find_records(reader: IndexReader, multihash: bytes) -> list[PeerRecord]:
    """The merged peer records of one multihash, in first-seen order; empty when none."""
    values = await reader.lookup(multihash)
    if not values:
        return []
    registry = await reader.registry({value.provider for value in values})
    merged: dict[bytes, PeerRecord] = {}
    for value in values:
        known = registry[value.provider]
        if known is None:
            continue
        record = known[1]
        for peer, addrs, metadata in _expand(value, record):
            out = merged.get(peer)
            if out is None:
                out = merged[peer] = PeerRecord(str(PeerId(peer)))
            for addr in addrs:
                if addr not in out.addrs and addr_protocols(addr) is not None:
                    out.addrs.append(addr)
            for name, encoded in protocol_fields(metadata):
                if name not in out.fields:
                    out.protocols.append(name)
                    out.fields[name] = encoded
    return list(merged.values())
