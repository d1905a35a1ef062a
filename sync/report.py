"""Inspect one block and say what it is and whether it is valid.

Pure code for the ``indexer ad show`` command and, later, the admin API: it takes bytes and an
optional CID and returns a ``BlockReport`` whose ``to_json()`` is the CLI's ``--json`` object.

Rules: every failure is caught here as a typed ``SyncError`` and reported in the result (never
raised); fields decoded before a failure are still reported, so an operator sees what was wrong
with which field.  Bytes are shown as padded standard base64, as the IPNI find API shows them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import base58

from sync.crypto.signing import verify_advertisement
from sync.errors import SyncError
from sync.ipnisync.head import SignedHead
from sync.model.blocks import BlockKind, classify, decode_node, guess_codec
from sync.model.cid import DAG_CBOR, DAG_JSON, Link, check_block
from sync.model.metadata import decode_metadata
from sync.model.peer import PeerId
from sync.model.schema import NO_ENTRIES, Advertisement, EntryChunk

__all__ = ["BlockReport", "inspect_block"]

_CODEC_NAMES = {DAG_JSON: "dag-json", DAG_CBOR: "dag-cbor"}
_SHOWN_ENTRIES = 5


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class BlockReport:
    """What ``inspect_block`` found."""

    kind: str | None = None
    codec: str | None = None
    cid: str | None = None
    cid_checked: bool = False
    signer: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: SyncError | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "error": None
            if self.error is None
            else {"kind": self.error.kind, "message": str(self.error)},
            "kind": self.kind,
            "codec": self.codec,
            "cid": self.cid,
            "cid_checked": self.cid_checked,
            "signer": self.signer,
            "fields": self.fields,
        }


def inspect_block(raw: bytes, link: Link | None = None) -> BlockReport:
    """Check ``raw`` against ``link`` (when given), decode, classify and verify it."""
    report = BlockReport()
    try:
        _inspect(raw, link, report)
    except SyncError as exc:
        report.error = exc
    return report


def _inspect(raw: bytes, link: Link | None, report: BlockReport) -> None:
    codec = guess_codec(raw)
    if link is not None:
        report.cid = str(link)
        codec = link.codec
        check_block(link, raw)
        report.cid_checked = True
    report.codec = _CODEC_NAMES.get(codec, f"0x{codec:x}")
    node = decode_node(raw, codec)
    kind = classify(node)
    report.kind = kind.value
    if link is None:
        report.cid = str(Link.make(codec, raw))
    if kind is BlockKind.ADVERTISEMENT:
        _advertisement(Advertisement.from_node(node), report)
    elif kind is BlockKind.ENTRY_CHUNK:
        _entry_chunk(EntryChunk.from_node(node), report)
    else:
        _signed_head(SignedHead.from_node(node), report)


def _advertisement(ad: Advertisement, report: BlockReport) -> None:
    meta = decode_metadata(ad.metadata)
    report.fields = {
        "PreviousID": str(ad.previous_id) if ad.previous_id else None,
        "Provider": ad.provider,
        "Addresses": list(ad.addresses),
        "Entries": "NoEntries" if ad.entries == NO_ENTRIES else str(ad.entries),
        "ContextID": _b64(ad.context_id),
        "Metadata": _b64(ad.metadata),
        "Protocols": meta.names() + ([f"opaque ({meta.error})"] if meta.error else []),
        "IsRm": ad.is_rm,
        "SignatureBytes": len(ad.signature),
    }
    if ad.extended_provider is not None:
        report.fields["ExtendedProvider"] = {
            "Override": ad.extended_provider.override,
            "Providers": [
                {"ID": p.id, "Addresses": list(p.addresses), "Metadata": _b64(p.metadata)}
                for p in ad.extended_provider.providers
            ],
        }
    ad.validate()
    report.fields["Provider"] = str(ad.provider_id())
    verified = verify_advertisement(ad)
    report.signer = str(verified.signer)
    report.fields["SignedByProvider"] = verified.signer == ad.provider_id()
    report.fields["LegacySignature"] = verified.legacy


def _entry_chunk(chunk: EntryChunk, report: BlockReport) -> None:
    shown = [base58.b58encode(mh).decode() for mh in chunk.entries[:_SHOWN_ENTRIES]]
    report.fields = {
        "EntryCount": len(chunk.entries),
        "Entries": shown + (["..."] if len(chunk.entries) > _SHOWN_ENTRIES else []),
        "Next": str(chunk.next) if chunk.next else None,
    }
    chunk.validate()


def _signed_head(head: SignedHead, report: BlockReport) -> None:
    report.fields = {"head": str(head.head), "topic": head.topic}
    signer: PeerId = head.verify()
    report.signer = str(signer)
