"""Advertisement metadata: the transport protocols a provider serves content over.

The byte layout is go-libipni's ``metadata`` package: a sequence of protocols, each starting with
the uvarint of its multicodec code:

- ``transport-bitswap`` 0x0900: the code alone.
- ``transport-graphsync-filecoinv1`` 0x0910: the code, then one DAG-CBOR map
  ``{PieceCID: Link, VerifiedDeal: Bool, FastRetrieval: Bool}``.
- ``transport-ipfs-gateway-http`` 0x0920 and ``transport-filecoin-piece-http`` 0x0930: the code
  and a zero-length payload (``uvarint(0)``).
- any other code: the code, ``uvarint(len)``, then ``len`` opaque bytes.

Decoding is for reporting: it never raises.  What it cannot parse is kept as opaque bytes with
the reason, so an unknown or malformed metadata never loses information or fails an ad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync.errors import ModelError
from sync.model import dagcbor
from sync.model.cid import Link, decode_uvarint, encode_uvarint

__all__ = [
    "BITSWAP",
    "FILECOIN_PIECE_HTTP",
    "GRAPHSYNC_FILECOINV1",
    "IPFS_GATEWAY_HTTP",
    "Metadata",
    "Transport",
    "bitswap",
    "decode_metadata",
    "graphsync_filecoinv1",
    "ipfs_gateway_http",
]

BITSWAP = 0x0900
GRAPHSYNC_FILECOINV1 = 0x0910
IPFS_GATEWAY_HTTP = 0x0920
FILECOIN_PIECE_HTTP = 0x0930

NAMES = {
    BITSWAP: "transport-bitswap",
    GRAPHSYNC_FILECOINV1: "transport-graphsync-filecoinv1",
    IPFS_GATEWAY_HTTP: "transport-ipfs-gateway-http",
    FILECOIN_PIECE_HTTP: "transport-filecoin-piece-http",
}
_EMPTY_PAYLOAD = {IPFS_GATEWAY_HTTP, FILECOIN_PIECE_HTTP}


@dataclass(frozen=True, slots=True)
class Transport:
    """One protocol entry of a metadata value."""

    code: int
    raw: bytes
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return NAMES.get(self.code, f"0x{self.code:x}")


@dataclass(frozen=True, slots=True)
class Metadata:
    """A decoded metadata value: its protocols, plus what could not be parsed."""

    transports: tuple[Transport, ...]
    opaque: bytes = b""
    error: str | None = None

    def names(self) -> list[str]:
        return [t.name for t in self.transports]


def bitswap() -> bytes:
    return encode_uvarint(BITSWAP)


def ipfs_gateway_http() -> bytes:
    return encode_uvarint(IPFS_GATEWAY_HTTP) + encode_uvarint(0)


def graphsync_filecoinv1(piece_cid: Link, verified_deal: bool, fast_retrieval: bool) -> bytes:
    body = {"PieceCID": piece_cid, "VerifiedDeal": verified_deal, "FastRetrieval": fast_retrieval}
    return encode_uvarint(GRAPHSYNC_FILECOINV1) + dagcbor.encode(body)


def decode_metadata(raw: bytes) -> Metadata:
    """Decode every protocol in ``raw``; keep any undecodable tail as opaque bytes."""
    transports: list[Transport] = []
    pos = 0
    while pos < len(raw):
        try:
            transport, pos = _decode_one(raw, pos)
        except (ModelError, ValueError, IndexError) as exc:
            return Metadata(tuple(transports), opaque=raw[pos:], error=str(exc))
        transports.append(transport)
    return Metadata(tuple(transports))


def _decode_one(raw: bytes, start: int) -> tuple[Transport, int]:
    code, pos = decode_uvarint(raw, start)
    if code == BITSWAP:
        return Transport(code, raw[start:pos]), pos
    if code in _EMPTY_PAYLOAD:
        size, end = decode_uvarint(raw, pos)
        if size != 0:
            raise ValueError(f"{NAMES[code]} must have an empty payload")
        return Transport(code, raw[start:end]), end
    if code == GRAPHSYNC_FILECOINV1:
        end = pos + _cbor_item_length(raw, pos)
        body = dagcbor.decode(raw[pos:end])
        if not isinstance(body, dict) or not isinstance(body.get("PieceCID"), Link):
            raise ValueError("graphsync-filecoinv1 payload lacks its PieceCID link")
        fields = {
            "PieceCID": str(body["PieceCID"]),
            "VerifiedDeal": bool(body.get("VerifiedDeal")),
            "FastRetrieval": bool(body.get("FastRetrieval")),
        }
        return Transport(code, raw[start:end], fields), end
    size, pos = decode_uvarint(raw, pos)
    end = pos + size
    if end > len(raw):
        raise ValueError(f"protocol 0x{code:x} payload truncated")
    return Transport(code, raw[start:end], {"payload": raw[pos:end].hex()}), end


def _cbor_item_length(raw: bytes, start: int) -> int:
    """The byte length of the one CBOR item at ``start`` (definite lengths only)."""
    pos = start
    pending = 1
    while pending:
        pending -= 1
        head = raw[pos]
        major, info = head >> 5, head & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > len(raw):
                raise ValueError("truncated CBOR")
            arg = int.from_bytes(raw[pos : pos + width], "big")
            pos += width
        else:
            raise ValueError("indefinite-length CBOR is not DAG-CBOR")
        if major in (2, 3):
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
        if pos > len(raw):
            raise ValueError("truncated CBOR")
    return pos - start
