"""Announce messages (go-libipni ``announce/message``), in both wire forms.

Rules this module keeps:

- The CBOR form is a tuple ``[Cid, Addrs, ExtraData]`` plus ``OrigPeer`` as a fourth element
  only when it is set (cbor-gen's layout); ``Cid`` is tag 42, ``Addrs`` are binary multiaddrs.
- The JSON form is Go's ``encoding/json`` of the struct: ``{"Cid": {"/": cid}, "Addrs":
  [padded base64 of binary multiaddrs], "ExtraData": base64 or null, "OrigPeer": ""}``.
- Decoding validates everything (CID, every multiaddr) and raises ``DecodeError`` /
  ``BadMultiaddr``; it never returns a half-checked message.  An address with a protocol code
  py-multiaddr does not know is kept in ``addrs`` (the wire bytes, re-sent as they came) but
  left out of ``addresses()`` and counted by ``unknown()``, as go-libipni's ``GetAddrs`` skips
  them: one such address does not reject the announce.  A legacy ``httpath`` component is read
  as ``http-path`` (``sync.ipnisync.maurl.known_multiaddr``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import msgspec

from sync.errors import BadCid, BadMultiaddr, BadPeerId, DecodeError
from sync.ipnisync.maurl import known_multiaddr
from sync.model import dagcbor
from sync.model.cid import Link
from sync.model.peer import PeerId

__all__ = ["ANNOUNCE_TOPIC", "Message", "multiaddr_bytes", "multiaddr_text"]

ANNOUNCE_TOPIC = "/indexer/ingest/mainnet"
"""The gossipsub topic IPNI announces travel on (go-libipni's default)."""


def multiaddr_bytes(text: str) -> bytes:
    """The binary form of a textual multiaddr."""
    import multiaddr

    try:
        return bytes(multiaddr.Multiaddr(text).to_bytes())
    except (multiaddr.exceptions.Error, ValueError) as exc:  # py-multiaddr wraps its codecs' errors
        raise BadMultiaddr(f"bad multiaddr {text!r}: {exc}") from None


def multiaddr_text(raw: bytes) -> str:
    """The textual form of a binary multiaddr."""
    import multiaddr

    try:
        return str(multiaddr.Multiaddr(raw))
    except (multiaddr.exceptions.Error, ValueError) as exc:
        raise BadMultiaddr(f"bad binary multiaddr {raw.hex()}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Message:
    """An announce: "advertisement ``cid`` is the head, fetch it from ``addrs``"."""

    cid: Link
    addrs: tuple[bytes, ...] = ()
    extra_data: bytes = b""
    orig_peer: str = ""

    @classmethod
    def create(cls, cid: Link, addrs: list[str], publisher: PeerId | None = None) -> Message:
        """A message whose addresses each end in ``/p2p/<publisher>`` when one is given."""
        out = []
        for addr in addrs:
            full = addr
            if publisher is not None and "/p2p/" not in addr:
                full = f"{addr.rstrip('/')}/p2p/{publisher}"
            out.append(multiaddr_bytes(full))
        return cls(cid=cid, addrs=tuple(out))

    def addresses(self) -> list[str]:
        """The addresses as text, those with an unknown protocol code left out."""
        known = (known_multiaddr(a) for a in self.addrs)
        return [multiaddr_text(a) for a in known if a is not None]

    def unknown(self) -> int:
        """How many addresses have a protocol code py-multiaddr does not know (skipped)."""
        return sum(known_multiaddr(a) is None for a in self.addrs)

    def publisher(self) -> PeerId | None:
        """The single ``/p2p/`` peer every address carries, or None if they carry none."""
        peers = set()
        for addr in self.addresses():
            _, sep, tail = addr.partition("/p2p/")
            peers.add(tail.split("/")[0] if sep else "")
        if not peers or peers == {""}:
            return None
        if len(peers) != 1 or "" in peers:
            raise BadMultiaddr("announce addresses name different publishers")
        try:
            return PeerId.parse(peers.pop())
        except BadPeerId as exc:
            raise BadMultiaddr(f"announce /p2p/ component: {exc}") from None

    # --- CBOR tuple form -------------------------------------------------------------------

    def to_cbor(self) -> bytes:
        items: list[Any] = [self.cid, list(self.addrs), self.extra_data]
        if self.orig_peer:
            items.append(self.orig_peer)
        return dagcbor.encode(items)

    @classmethod
    def from_cbor(cls, raw: bytes) -> Message:
        items = dagcbor.decode(raw)
        if not isinstance(items, list) or not 3 <= len(items) <= 4:
            raise DecodeError("announce CBOR must be an array of 3 or 4 fields")
        cid, addrs, extra = items[0], items[1], items[2]
        orig = items[3] if len(items) == 4 else ""
        if not isinstance(cid, Link):
            raise DecodeError("announce Cid must be a CID")
        if not isinstance(addrs, list) or not all(isinstance(a, bytes) for a in addrs):
            raise DecodeError("announce Addrs must be an array of byte strings")
        if not isinstance(extra, bytes) or not isinstance(orig, str):
            raise DecodeError("announce ExtraData must be bytes and OrigPeer a string")
        return cls._checked(cid, addrs, extra, orig)

    # --- JSON form ---------------------------------------------------------------------------

    def to_json(self) -> bytes:
        return msgspec.json.encode(
            {
                "Cid": {"/": str(self.cid)},
                "Addrs": [base64.b64encode(a).decode() for a in self.addrs],
                "ExtraData": base64.b64encode(self.extra_data).decode()
                if self.extra_data
                else None,
                "OrigPeer": self.orig_peer,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Message:
        try:
            doc = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec: bad UTF-8 in a string
            raise DecodeError(f"announce is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DecodeError("announce JSON must be an object")
        cid_obj = doc.get("Cid")
        if not isinstance(cid_obj, dict) or not isinstance(cid_obj.get("/"), str):
            raise DecodeError('announce JSON needs "Cid": {"/": "<cid>"}')
        try:
            cid = Link.parse(cid_obj["/"])
            addrs = [_b64(a) for a in doc.get("Addrs") or []]
            extra = _b64(doc["ExtraData"]) if doc.get("ExtraData") else b""
        except BadCid as exc:
            raise DecodeError(f"announce Cid: {exc}") from None
        orig = doc.get("OrigPeer") or ""
        if not isinstance(orig, str):
            raise DecodeError("announce OrigPeer must be a string")
        return cls._checked(cid, addrs, extra, orig)

    @classmethod
    def _checked(cls, cid: Link, addrs: list[bytes], extra: bytes, orig: str) -> Message:
        for a in addrs:
            if (known := known_multiaddr(a)) is not None:
                multiaddr_text(known)
        return cls(cid=cid, addrs=tuple(addrs), extra_data=extra, orig_peer=orig)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("announce JSON byte fields must be base64 strings")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"announce JSON has bad base64: {exc}") from None
