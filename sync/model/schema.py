"""The IPNI ingest schema: Advertisement, EntryChunk, ExtendedProvider, Provider.

Field names, optionality and limits are go-libipni's ``ingest/schema/schema.ipldsch``:

- ``PreviousID`` and ``ExtendedProvider`` are optional (absent, not null); every other field is
  required; a key the schema does not name is an error (go-ipld-prime's bindnode rejects it).
- ``ContextID`` is at most 64 bytes and ``Metadata`` at most 1024 (``Advertisement.validate``).
- ``NO_ENTRIES`` is the CIDv1 raw CID of the empty sha2-256 digest truncated to 16 bytes; an ad
  whose ``Entries`` is ``NO_ENTRIES`` carries no multihashes (a metadata update or an
  extended-provider announcement).
- An ad with entries but no metadata is malformed; an ``IsRm`` ad carries no extended providers.

Values are frozen dataclasses; ``from_node``/``to_node`` convert to and from the IPLD data model
that ``dagjson`` and ``dagcbor`` speak.  Nothing here touches the network or a database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sync.errors import BadCid, FieldTooLarge, SchemaError
from sync.model.cid import RAW, SHA2_256, Link, check_multihash
from sync.model.fields import check_keys, describe, get_field, strings
from sync.model.peer import PeerId

__all__ = [
    "MAX_CONTEXT_ID_LEN",
    "MAX_METADATA_LEN",
    "NO_ENTRIES",
    "Advertisement",
    "EntryChunk",
    "ExtendedProvider",
    "Provider",
]

MAX_CONTEXT_ID_LEN = 64
MAX_METADATA_LEN = 1024
NO_ENTRIES = Link(
    bytes([1, RAW, SHA2_256, 16]) + hashlib.sha256(b"").digest()[:16],
)


@dataclass(frozen=True, slots=True)
class Provider:
    """One extended provider: where else the ad's content can be fetched, and how."""

    id: str
    addresses: tuple[str, ...]
    metadata: bytes
    signature: bytes = b""

    @classmethod
    def from_node(cls, node: Any, what: str = "Provider") -> Provider:
        n = check_keys(node, what, {"ID", "Addresses", "Metadata", "Signature"}, set())
        return cls(
            id=get_field(n, "ID", str, what),
            addresses=strings(n, "Addresses", what),
            metadata=get_field(n, "Metadata", bytes, what),
            signature=get_field(n, "Signature", bytes, what),
        )

    def to_node(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Addresses": list(self.addresses),
            "Metadata": self.metadata,
            "Signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class ExtendedProvider:
    """The extended providers of an ad, and whether they override chain-level ones."""

    providers: tuple[Provider, ...]
    override: bool = False

    @classmethod
    def from_node(cls, node: Any) -> ExtendedProvider:
        what = "ExtendedProvider"
        n = check_keys(node, what, {"Providers", "Override"}, set())
        items = get_field(n, "Providers", list, what)
        return cls(
            providers=tuple(
                Provider.from_node(p, f"{what}.Providers[{i}]") for i, p in enumerate(items)
            ),
            override=get_field(n, "Override", bool, what),
        )

    def to_node(self) -> dict[str, Any]:
        return {"Providers": [p.to_node() for p in self.providers], "Override": self.override}


_AD_REQUIRED = {
    "Provider",
    "Addresses",
    "Signature",
    "Entries",
    "ContextID",
    "Metadata",
    "IsRm",
}
_AD_OPTIONAL = {"PreviousID", "ExtendedProvider"}


@dataclass(frozen=True, slots=True)
class Advertisement:
    """An IPNI advertisement, field for field as go-libipni's ``schema.Advertisement``."""

    provider: str
    addresses: tuple[str, ...]
    entries: Link
    context_id: bytes
    metadata: bytes
    is_rm: bool = False
    previous_id: Link | None = None
    signature: bytes = b""
    extended_provider: ExtendedProvider | None = field(default=None)

    @classmethod
    def from_node(cls, node: Any) -> Advertisement:
        what = "Advertisement"
        n = check_keys(node, what, _AD_REQUIRED, _AD_OPTIONAL)
        ep = n.get("ExtendedProvider")
        return cls(
            previous_id=get_field(n, "PreviousID", Link, what) if "PreviousID" in n else None,
            provider=get_field(n, "Provider", str, what),
            addresses=strings(n, "Addresses", what),
            signature=get_field(n, "Signature", bytes, what),
            entries=get_field(n, "Entries", Link, what),
            context_id=get_field(n, "ContextID", bytes, what),
            metadata=get_field(n, "Metadata", bytes, what),
            is_rm=get_field(n, "IsRm", bool, what),
            extended_provider=ExtendedProvider.from_node(ep) if "ExtendedProvider" in n else None,
        )

    def to_node(self) -> dict[str, Any]:
        node: dict[str, Any] = {
            "Provider": self.provider,
            "Addresses": list(self.addresses),
            "Signature": self.signature,
            "Entries": self.entries,
            "ContextID": self.context_id,
            "Metadata": self.metadata,
            "IsRm": self.is_rm,
        }
        if self.previous_id is not None:
            node["PreviousID"] = self.previous_id
        if self.extended_provider is not None:
            node["ExtendedProvider"] = self.extended_provider.to_node()
        return node

    @property
    def has_entries(self) -> bool:
        return self.entries != NO_ENTRIES

    def provider_id(self) -> PeerId:
        """The ``Provider`` field as a peer ID (``BadPeerId`` if it is not one)."""
        return PeerId.parse(self.provider)

    def validate(self) -> None:
        """The checks go-libipni and storetheindex apply beyond the schema's shape."""
        if len(self.context_id) > MAX_CONTEXT_ID_LEN:
            raise FieldTooLarge(
                f"ContextID is {len(self.context_id)} bytes (at most {MAX_CONTEXT_ID_LEN})"
            )
        if len(self.metadata) > MAX_METADATA_LEN:
            raise FieldTooLarge(
                f"Metadata is {len(self.metadata)} bytes (at most {MAX_METADATA_LEN})"
            )
        self.provider_id()
        if not self.is_rm and self.has_entries and not self.metadata:
            raise SchemaError("advertisement has entries but no metadata")
        if self.is_rm and self.extended_provider is not None:
            raise SchemaError("a removal (IsRm) advertisement cannot carry extended providers")


@dataclass(frozen=True, slots=True)
class EntryChunk:
    """One link of an entries chain: up to N multihashes and the next chunk."""

    entries: tuple[bytes, ...]
    next: Link | None = None

    @classmethod
    def from_node(cls, node: Any) -> EntryChunk:
        what = "EntryChunk"
        n = check_keys(node, what, {"Entries"}, {"Next"})
        items = get_field(n, "Entries", list, what)
        for i, item in enumerate(items):
            if type(item) is not bytes:
                raise SchemaError(f"{what}.Entries[{i}] must be bytes, got {describe(item)}")
        return cls(
            entries=tuple(items),
            next=get_field(n, "Next", Link, what) if "Next" in n else None,
        )

    def to_node(self) -> dict[str, Any]:
        node: dict[str, Any] = {"Entries": list(self.entries)}
        if self.next is not None:
            node["Next"] = self.next
        return node

    def validate(self) -> None:
        """Every entry must be one whole multihash."""
        if _all_sha256(self.entries):
            return
        for i, entry in enumerate(self.entries):
            try:
                check_multihash(entry)
            except BadCid as exc:
                raise SchemaError(f"EntryChunk.Entries[{i}] is not a multihash: {exc}") from None


def _all_sha256(entries: tuple[bytes, ...]) -> bool:
    """True when every entry is a 34-byte sha2-256 multihash, checked at C speed.

    The usual chunk holds nothing else: its entries joined, every 34th byte from 0 must be
    0x12 and from 1 must be 0x20 (the code and the length), and the total length must match.
    """
    n = len(entries)
    if n == 0 or set(map(len, entries)) != {34}:
        return False
    joined = b"".join(entries)
    return joined[0::34].count(0x12) == n and joined[1::34].count(0x20) == n
