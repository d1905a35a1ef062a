"""libp2p signed envelopes (go-libp2p ``core/record``), as IPNI uses them.

Rules this module keeps:

- The signature covers ``uvarint(len(domain)) || domain || uvarint(len(type)) || type ||
  uvarint(len(payload)) || payload``.
- IPNI's domain is ``indexer``; ad signatures carry payload type ``/indexer/ingest/adSignature``,
  extended-provider signatures ``/indexer/ingest/extendedProviderSignature``.  A provider's
  registration (``POST /register``) is libp2p's own peer record: domain ``libp2p-peer-record``,
  payload type the multicodec ``0x0301`` (``PEER_RECORD_DOMAIN``, ``PEER_RECORD_TYPE``).
- ``open_envelope`` checks the payload type before the signature, and raises ``BadEnvelope`` /
  ``SignatureError``; it never returns an unverified payload.  The last 256 public keys parsed
  are remembered (a frozen value, by its exact bytes; a key that fails to parse is not), never
  a verification.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sync.crypto.keys import PrivateKey, PublicKey
from sync.crypto.protobuf import Fields, encode_fields, parse_fields
from sync.errors import BadEnvelope, BadPeerId, DecodeError, SignatureError
from sync.model.cid import encode_uvarint

__all__ = [
    "AD_SIGNATURE_TYPE",
    "EP_SIGNATURE_TYPE",
    "INDEXER_DOMAIN",
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_TYPE",
    "Envelope",
    "open_envelope",
    "seal",
]

INDEXER_DOMAIN = "indexer"
AD_SIGNATURE_TYPE = b"/indexer/ingest/adSignature"
EP_SIGNATURE_TYPE = b"/indexer/ingest/extendedProviderSignature"
PEER_RECORD_DOMAIN = "libp2p-peer-record"
PEER_RECORD_TYPE = b"\x03\x01"  # the multicodec libp2p-peer-record, as a uvarint


@dataclass(frozen=True)
class Envelope:
    """A verified envelope: who signed which payload."""

    public_key: PublicKey
    payload_type: bytes
    payload: bytes


def _unsigned(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    out = bytearray()
    for part in (domain.encode(), payload_type, payload):
        out += encode_uvarint(len(part)) + part
    return bytes(out)


def seal(
    key: PrivateKey, payload_type: bytes, payload: bytes, *, domain: str = INDEXER_DOMAIN
) -> bytes:
    """Sign ``payload`` and return the marshalled envelope."""
    signature = key.sign(_unsigned(domain, payload_type, payload))
    return encode_fields(
        [
            (1, key.public_key().marshal()),
            (2, payload_type),
            (3, payload),
            (5, signature),
        ]
    )


def _bytes_field(fields: Fields, number: int) -> bytes:
    value = fields.get(number, [b""])[-1]
    if not isinstance(value, bytes):
        raise BadEnvelope(f"signed envelope field {number} has the wrong wire type")
    return value


@functools.lru_cache(maxsize=256)
def _public_key(marshalled: bytes) -> PublicKey:
    """``PublicKey.unmarshal``, remembered: a chain's ads are signed by one key or two, and
    parsing it costs about a quarter of the signature check."""
    return PublicKey.unmarshal(marshalled)


def open_envelope(raw: bytes, payload_type: bytes, *, domain: str = INDEXER_DOMAIN) -> Envelope:
    """Parse and verify a marshalled envelope of the given payload type."""
    if not raw:
        raise BadEnvelope("missing signature")
    try:
        fields = parse_fields(raw)
    except DecodeError as exc:
        raise BadEnvelope(f"signature is not a signed envelope: {exc}") from None
    key_bytes, got_type, payload, signature = (_bytes_field(fields, n) for n in (1, 2, 3, 5))
    if got_type != payload_type:
        raise BadEnvelope(
            f"envelope payload type is {got_type!r}, expected {payload_type.decode()!r}"
        )
    try:
        public_key = _public_key(key_bytes)
    except BadPeerId as exc:
        raise BadEnvelope(f"envelope public key: {exc}") from None
    if not public_key.verify(_unsigned(domain, got_type, payload), signature):
        raise SignatureError("envelope signature does not verify")
    return Envelope(public_key, got_type, payload)
