"""Advertisement and extended-provider signatures (go-libipni ``ingest/schema/envelope.go``).

Rules this module keeps:

- The ad payload is the sha2-256 multihash of ``PreviousID bytes (empty when absent) || Entries
  bytes || Provider || each Address || Metadata || IsRm byte``, sealed in an envelope of type
  ``/indexer/ingest/adSignature``.  ContextID is not covered (as in Go).
- A payload that is not 34 bytes is the legacy form ``0x12 || uvarint(len) || buf`` (the field
  bytes, unhashed); it is accepted, and reported as legacy, as go-libipni does.
- The extended-provider payload is the sha2-256 multihash of ``PreviousID || Entries ||
  ad.Provider || ad.ContextID || p.ID || p.Addresses || p.Metadata || Override byte``, type
  ``/indexer/ingest/extendedProviderSignature``.  The main provider must be among the extended
  providers, an IsRm ad carries none, and (stricter than go-libipni) each extended provider's
  envelope must be signed by the key of its own ``ID``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sync.crypto.envelope import AD_SIGNATURE_TYPE, EP_SIGNATURE_TYPE, open_envelope, seal
from sync.crypto.keys import PrivateKey
from sync.errors import BadPeerId, SchemaError, SignatureError
from sync.model.cid import SHA2_256, encode_uvarint
from sync.model.peer import PeerId
from sync.model.schema import Advertisement, Provider

__all__ = [
    "AdSignature",
    "ad_signature_payload",
    "ep_signature_payload",
    "sign_advertisement",
    "verify_advertisement",
]

_PAYLOAD_SIZE = 34


@dataclass(frozen=True, slots=True)
class AdSignature:
    """The outcome of a successful verification."""

    signer: PeerId
    legacy: bool = False


def _ad_fields(ad: Advertisement) -> bytes:
    buf = bytearray()
    if ad.previous_id is not None:
        buf += ad.previous_id.raw
    buf += ad.entries.raw
    buf += ad.provider.encode()
    for addr in ad.addresses:
        buf += addr.encode()
    buf += ad.metadata
    buf.append(1 if ad.is_rm else 0)
    return bytes(buf)


def ad_signature_payload(ad: Advertisement, legacy: bool = False) -> bytes:
    """The bytes an ad's envelope signs (the current form, or the legacy one)."""
    fields = _ad_fields(ad)
    if legacy:
        return bytes([SHA2_256]) + encode_uvarint(len(fields)) + fields
    return bytes([SHA2_256, 32]) + hashlib.sha256(fields).digest()


def ep_signature_payload(ad: Advertisement, provider: Provider) -> bytes:
    """The bytes one extended provider's envelope signs."""
    if ad.is_rm:
        raise SchemaError("a removal (IsRm) advertisement cannot carry extended providers")
    override = ad.extended_provider is not None and ad.extended_provider.override
    buf = bytearray()
    if ad.previous_id is not None:
        buf += ad.previous_id.raw
    buf += ad.entries.raw
    buf += ad.provider.encode()
    buf += ad.context_id
    buf += provider.id.encode()
    for addr in provider.addresses:
        buf += addr.encode()
    buf += provider.metadata
    buf.append(1 if override else 0)
    return bytes([SHA2_256, 32]) + hashlib.sha256(bytes(buf)).digest()


def sign_advertisement(
    ad: Advertisement,
    key: PrivateKey,
    ep_keys: Mapping[str, PrivateKey] | None = None,
) -> Advertisement:
    """Return ``ad`` signed by ``key`` and, for its extended providers, by ``ep_keys[p.ID]``."""
    signed = replace(ad, signature=seal(key, AD_SIGNATURE_TYPE, ad_signature_payload(ad)))
    ep = ad.extended_provider
    if ep is None:
        return signed
    if ep.providers and all(p.id != ad.provider for p in ep.providers):
        raise SchemaError("extended providers must include the advertisement's own provider")
    providers = []
    for p in ep.providers:
        p_key = key if p.id == ad.provider else (ep_keys or {}).get(p.id)
        if p_key is None:
            raise SignatureError(f"no key to sign for extended provider {p.id}")
        sig = seal(p_key, EP_SIGNATURE_TYPE, ep_signature_payload(ad, p))
        providers.append(replace(p, signature=sig))
    return replace(signed, extended_provider=replace(ep, providers=tuple(providers)))


def verify_advertisement(ad: Advertisement) -> AdSignature:
    """Verify the ad's signature and its extended providers'; return who signed it."""
    envelope = open_envelope(ad.signature, AD_SIGNATURE_TYPE)
    legacy = len(envelope.payload) != _PAYLOAD_SIZE
    if envelope.payload != ad_signature_payload(ad, legacy):
        raise SignatureError("advertisement signature does not match its fields")
    signer = envelope.public_key.peer_id()
    ep = ad.extended_provider
    if ep is not None:
        for i, p in enumerate(ep.providers):
            p_env = open_envelope(p.signature, EP_SIGNATURE_TYPE)
            if p_env.payload != ep_signature_payload(ad, p):
                raise SignatureError(f"extended provider {i} signature does not match its fields")
            try:
                claimed = PeerId.parse(p.id)
            except BadPeerId as exc:
                raise SignatureError(f"extended provider {i} ID: {exc}") from None
            if p_env.public_key.peer_id() != claimed:
                raise SignatureError(f"extended provider {i} is not signed by its own ID {p.id}")
        if ep.providers and all(p.id != ad.provider for p in ep.providers):
            raise SignatureError("extended providers must include the advertisement's provider")
    return AdSignature(signer=signer, legacy=legacy)
