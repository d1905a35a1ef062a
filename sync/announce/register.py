"""Provider registration (``POST /register``): go-libipni's RegisterRequest, read and made.

A RegisterRequest is a libp2p signed envelope (domain ``libp2p-peer-record``, payload type the
multicodec ``0x0301``) around a libp2p ``PeerRecord``: ``{1: bytes peer_id, 2: uint64 seq,
3: repeated AddressInfo {1: bytes multiaddr}}``.  Rules this module keeps:

- ``read_register_request`` verifies before it returns: the envelope's signature, and that the
  signer IS the record's peer (go-libipni: "request not signed by provider").  It raises
  ``BadEnvelope``, ``SignatureError`` or ``DecodeError``/``BadPeerId``/``BadMultiaddr`` (all
  ``SyncError``); it never returns an unverified record.
- At least one address; each a valid binary multiaddr, returned in text form.
- ``seq`` is returned as sent: the caller refuses one not newer than the last it accepted from
  the same peer (storetheindex's ``CheckSequence``), so a captured request cannot be replayed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sync.announce.message import multiaddr_bytes, multiaddr_text
from sync.crypto.envelope import PEER_RECORD_DOMAIN, PEER_RECORD_TYPE, open_envelope, seal
from sync.crypto.keys import PrivateKey
from sync.crypto.protobuf import encode_fields, parse_fields
from sync.errors import DecodeError, SignatureError
from sync.model.peer import PeerId

__all__ = ["PeerRecord", "make_register_request", "read_register_request"]


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A verified registration: the provider, its sequence number and its addresses."""

    peer: PeerId
    seq: int
    addrs: tuple[str, ...]


def make_register_request(key: PrivateKey, addrs: list[str], seq: int | None = None) -> bytes:
    """The signed RegisterRequest of ``key``'s peer at ``addrs`` (``seq``: now, in ns)."""
    if not addrs:
        raise ValueError("missing address")
    fields: list[tuple[int, int | bytes]] = [(1, key.peer_id().raw)]
    fields.append((2, time.time_ns() if seq is None else seq))
    fields += [(3, encode_fields([(1, multiaddr_bytes(a))])) for a in addrs]
    return seal(key, PEER_RECORD_TYPE, encode_fields(fields), domain=PEER_RECORD_DOMAIN)


def read_register_request(raw: bytes) -> PeerRecord:
    """The verified ``PeerRecord`` of a RegisterRequest (see the rules)."""
    envelope = open_envelope(raw, PEER_RECORD_TYPE, domain=PEER_RECORD_DOMAIN)
    fields = parse_fields(envelope.payload)
    peer_raw = fields.get(1, [b""])[-1]
    seq = fields.get(2, [0])[-1]
    if not isinstance(peer_raw, bytes) or not isinstance(seq, int):
        raise DecodeError("peer record: peer_id or seq has the wrong wire type")
    peer = PeerId.from_bytes(peer_raw)
    if envelope.public_key.peer_id() != peer:
        raise SignatureError(f"register request for {peer} not signed by that provider")
    addrs = []
    for info in fields.get(3, []):
        if not isinstance(info, bytes):
            raise DecodeError("peer record: an address has the wrong wire type")
        addr = parse_fields(info).get(1, [b""])[-1]
        if not isinstance(addr, bytes) or not addr:
            raise DecodeError("peer record: an address is empty")
        addrs.append(multiaddr_text(addr))
    if not addrs:
        raise DecodeError("register request has no address")
    return PeerRecord(peer, seq, tuple(addrs))
