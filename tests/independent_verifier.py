"""An independent verifier of IPNI advertisement chains, written from go-libipni's rules.

Deliberately independent of the project's code: it imports nothing from `sync`, `store`,
`staging`, `indexer`, `tests/builders.py` or `tests/strategies.py`, only the reference
`dag_json`/`dag_cbor` codecs, `multiformats`, `hashlib` and py-libp2p, so that tests can
cross-check the project's data model against a second implementation.

Rules (go-libipni `ingest/schema/{envelope,types}.go`, `dagsync/ipnisync/head/signedhead.go`):

- A block fetched as CID c is hashed as received with c's hash (sha2-256 or blake2b-256) and
  compared with c's digest, never re-encoded; it is decoded as c's codec (dag-json, dag-cbor).
- SignedHead: `sig` is `pubkey`'s plain signature over head-CID bytes + topic (if present).
- Ad `Signature`: a libp2p envelope (domain "indexer", type "/indexer/ingest/adSignature")
  whose payload is the sha2-256 multihash of PreviousID + Entries + Provider + Addresses +
  Metadata + IsRm byte; a payload that is not 34 bytes is the
  legacy `0x12 uvarint(len) fields` form. ContextID is not signed.
- ExtendedProvider: each provider's envelope ("/indexer/ingest/extendedProviderSignature")
  signs the sha2-256 multihash of PreviousID + Entries + Provider + ContextID + p.ID +
  p.Addresses + p.Metadata + Override byte. As in go-libipni, the envelope key is not
  compared with p.ID; a non-empty Providers list must contain the ad's Provider, and forbids IsRm.
- Struct fields are exactly the schema's: unknown keys are rejected, as bindnode does.
- Entry chunks are walked through Next, except for NoEntries ads and removals (IsRm).

verify_chain walks PreviousID until an ad has none, or stops before a CID in `stop_at` (blocks
the caller already holds, like go-libipni sync's stop CID); `entries=False` skips entry chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import dag_cbor
import dag_json
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.envelope import unmarshal_envelope
from libp2p.peer.id import ID
from multiformats import CID, varint

AD_SIG_TYPE = b"/indexer/ingest/adSignature"
EP_SIG_TYPE = b"/indexer/ingest/extendedProviderSignature"
DOMAIN = "indexer"
NO_ENTRIES = CID.decode(b"\x01\x55\x12\x10" + hashlib.sha256(b"").digest()[:16])
MAX_CONTEXT_ID, MAX_METADATA = 64, 1024
_HASHES: dict[int, Callable[[bytes], Any]] = {
    0x12: hashlib.sha256,
    0xB220: lambda b: hashlib.blake2b(b, digest_size=32),
}
_CODECS = {0x0129: dag_json.decode, 0x71: dag_cbor.decode}
_AD_FIELDS = {"PreviousID", "Provider", "Addresses", "Signature", "Entries", "ContextID"}
_AD_FIELDS |= {"Metadata", "IsRm", "ExtendedProvider"}


class VerificationError(Exception):
    """Any rule of the chain was broken; the message names what failed."""


@dataclass
class VerifiedAd:
    """One verified ad; `signer`/`provider` are base58 peer IDs, `entries_cid` None if empty."""

    cid: str
    signer: str
    provider: str
    is_rm: bool
    context_id: bytes
    entries_cid: str | None
    multihashes: list[bytes] = field(default_factory=list)


def cid_str(c: CID) -> str:
    """Canonical string form: base32 for CIDv1, base58btc for CIDv0."""
    return str(c.set(base="base32")) if c.version == 1 else str(c)


def verify_block(cid: str | CID, raw: bytes) -> Any:
    """Check that `raw` hashes to `cid` and decode it with the codec `cid` names."""
    c = CID.decode(cid) if isinstance(cid, str) else cid
    hasher = _HASHES.get(c.hashfun.code)
    if hasher is None:
        raise VerificationError(f"{c}: unsupported multihash function {c.hashfun.name}")
    if hasher(raw).digest() != bytes(c.raw_digest):
        raise VerificationError(f"{c}: block bytes do not hash to the CID's digest")
    if c.codec.code not in _CODECS:
        raise VerificationError(f"{c}: unsupported codec {c.codec.name}")
    try:
        return _CODECS[c.codec.code](raw)
    except Exception as exc:
        raise VerificationError(f"{c}: cannot decode block: {exc}") from exc


def _get(node: Any, key: str, kind: type, what: str, optional: bool = False, of: Any = None) -> Any:
    """node[key], checked to be a `kind` (a list of `of` if given); None if optional and absent."""
    if not isinstance(node, dict):
        raise VerificationError(f"{what}: not a map")
    if key not in node:
        if optional:
            return None
        raise VerificationError(f"{what}: missing field {key}")
    value = node[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise VerificationError(f"{what}: field {key} has wrong type {type(value).__name__}")
    if of is not None and not all(isinstance(v, of) for v in node[key]):
        raise VerificationError(f"{what}: {key} must be a list of {of.__name__}")
    return value


def _only(node: dict[str, Any], allowed: set[str], what: str) -> None:
    if extra := set(node) - allowed:
        raise VerificationError(f"{what}: unknown fields {sorted(extra)}")


def _check_multihash(mh: Any, what: str) -> None:
    try:
        _code, n1, _ = varint.decode_raw(mh)
        length, n2, _ = varint.decode_raw(mh[n1:])
        ok = len(mh) == n1 + n2 + length
    except (ValueError, TypeError, IndexError):  # not bytes, or a truncated varint
        ok = False
    if not ok:
        raise VerificationError(f"{what}: malformed multihash {mh!r}")


def peer_id_to_base58(text: str) -> str:
    """Parse a peer ID in base58 (Qm.../1...) or CIDv1 libp2p-key form; return base58."""
    try:
        if text.startswith(("Qm", "1")):
            mh = ID.from_base58(text).to_bytes()
        else:
            c = CID.decode(text)
            if c.codec.code != 0x72:
                raise ValueError(f"CID codec is {c.codec.name}, not libp2p-key")
            mh = bytes(c.digest)
        _check_multihash(mh, "peer ID")
    except Exception as exc:
        raise VerificationError(f"invalid peer ID {text!r}: {exc}") from exc
    return ID(mh).to_base58()


def _open_envelope(data: bytes, payload_type: bytes, what: str) -> tuple[str, bytes]:
    """Verify a signed envelope in the "indexer" domain; return (signer, payload)."""
    try:
        env = unmarshal_envelope(data)
    except Exception as exc:
        raise VerificationError(f"{what}: bad envelope or unsupported key: {exc}") from exc
    if env.payload_type != payload_type:
        raise VerificationError(f"{what}: envelope payload type {env.payload_type!r}")
    try:
        env.validate(DOMAIN)
    except Exception as exc:
        raise VerificationError(f"{what}: envelope signature invalid: {exc}") from exc
    return ID.from_pubkey(env.public_key).to_base58(), env.raw_payload


def verify_head(raw: bytes) -> tuple[str, str]:
    """Verify a dag-json SignedHead; return (head CID string, signer peer ID in base58)."""
    try:
        node = dag_json.decode(raw)
    except Exception as exc:
        raise VerificationError(f"head: cannot decode dag-json: {exc}") from exc
    head = _get(node, "head", CID, "head")
    topic = _get(node, "topic", str, "head", optional=True)
    pubkey, sig = _get(node, "pubkey", bytes, "head"), _get(node, "sig", bytes, "head")
    _only(node, {"head", "topic", "pubkey", "sig"}, "head")
    if not pubkey or not sig:
        raise VerificationError("head: missing public key or signature")
    try:
        key = deserialize_public_key(pubkey)
    except Exception as exc:
        raise VerificationError(f"head: unsupported or malformed public key: {exc}") from exc
    if not key.verify(bytes(head) + (topic or "").encode(), sig):
        raise VerificationError("head: signature invalid")
    return cid_str(head), ID.from_pubkey(key).to_base58()


def _sig_fields(ad: dict[str, Any], previous: CID | None, entries: CID) -> bytes:
    return (bytes(previous) if previous else b"") + bytes(entries) + str(ad["Provider"]).encode()


def verify_ad_node(ad: Any) -> str:
    """Check a decoded advertisement's schema and signatures; return the signer (base58)."""
    what = "advertisement"
    previous = _get(ad, "PreviousID", CID, what, optional=True)
    provider = _get(ad, "Provider", str, what)
    addresses = _get(ad, "Addresses", list, what, of=str)
    signature = _get(ad, "Signature", bytes, what)
    entries = _get(ad, "Entries", CID, what)
    context_id, metadata = _get(ad, "ContextID", bytes, what), _get(ad, "Metadata", bytes, what)
    is_rm = _get(ad, "IsRm", bool, what)
    extended = _get(ad, "ExtendedProvider", dict, what, optional=True)
    _only(ad, _AD_FIELDS, what)
    if len(context_id) > MAX_CONTEXT_ID or len(metadata) > MAX_METADATA:
        raise VerificationError(f"{what}: ContextID or Metadata too long")
    buf = _sig_fields(ad, previous, entries) + "".join(addresses).encode() + metadata
    buf += b"\x01" if is_rm else b"\x00"
    signer, payload = _open_envelope(signature, AD_SIG_TYPE, f"{what} Signature")
    if len(payload) == 34:
        expected = b"\x12\x20" + hashlib.sha256(buf).digest()
    else:
        expected = b"\x12" + varint.encode(len(buf)) + buf  # legacy, unhashed payload
    if payload != expected:
        raise VerificationError(f"{what}: signed payload does not match the ad's fields")
    if extended is not None:
        _only(extended, {"Providers", "Override"}, "ExtendedProvider")
        providers = _get(extended, "Providers", list, "ExtendedProvider")
        override = _get(extended, "Override", bool, "ExtendedProvider")
        if providers and is_rm:
            raise VerificationError(f"{what}: IsRm ads cannot carry extended providers")
        seen_provider = False
        for p in providers:
            pw = "extended provider"
            p_id, p_addrs = _get(p, "ID", str, pw), _get(p, "Addresses", list, pw, of=str)
            p_meta, p_sig = _get(p, "Metadata", bytes, pw), _get(p, "Signature", bytes, pw)
            _only(p, {"ID", "Addresses", "Metadata", "Signature"}, pw)
            ep = _sig_fields(ad, previous, entries) + context_id + p_id.encode()
            ep += "".join(p_addrs).encode() + p_meta + (b"\x01" if override else b"\x00")
            _, p_payload = _open_envelope(p_sig, EP_SIG_TYPE, f"{pw} {p_id} Signature")
            if p_payload != b"\x12\x20" + hashlib.sha256(ep).digest():
                raise VerificationError(f"{pw} {p_id}: signed payload does not match")
            seen_provider |= p_id == provider
        if providers and not seen_provider:
            raise VerificationError(f"{what}: extended providers must include the ad's Provider")
    return signer


def _fetch(fetch: Callable[[str], bytes], c: CID) -> Any:
    try:
        return verify_block(c, fetch(cid_str(c)))
    except VerificationError:
        raise
    except Exception as exc:
        raise VerificationError(f"{cid_str(c)}: fetch failed: {exc!r}") from exc


def _walk_entries(fetch: Callable[[str], bytes], first: CID) -> list[bytes]:
    out: list[bytes] = []
    nxt: CID | None = first
    while nxt is not None:  # hash links cannot form a cycle
        chunk, what = _fetch(fetch, nxt), f"entry chunk {cid_str(nxt)}"
        mhs = _get(chunk, "Entries", list, what)
        nxt = _get(chunk, "Next", CID, what, optional=True)
        _only(chunk, {"Entries", "Next"}, what)
        for mh in mhs:
            _check_multihash(mh, what)
        out.extend(mhs)
    return out


def verify_chain(
    fetch: Callable[[str], bytes],
    head_raw: bytes,
    max_ads: int = 10_000,
    *,
    stop_at: Collection[str] | None = None,
    entries: bool = True,
) -> list[VerifiedAd]:
    """Verify the head, then every ad back to the start (or `stop_at`); newest first."""
    head, _signer = verify_head(head_raw)
    stop = {cid_str(CID.decode(s)) for s in stop_at or ()}
    result: list[VerifiedAd] = []
    nxt: CID | None = CID.decode(head)
    while nxt is not None and cid_str(nxt) not in stop:
        if len(result) >= max_ads:
            raise VerificationError(f"chain longer than max_ads={max_ads}")
        ad = _fetch(fetch, nxt)
        try:
            signer = verify_ad_node(ad)
        except VerificationError as exc:
            raise VerificationError(f"{cid_str(nxt)}: {exc}") from exc
        provider, is_rm, first = peer_id_to_base58(ad["Provider"]), ad["IsRm"], ad["Entries"]
        empty = first == NO_ENTRIES
        mhs = _walk_entries(fetch, first) if entries and not empty and not is_rm else []
        entries_cid = None if empty else cid_str(first)
        result.append(
            VerifiedAd(cid_str(nxt), signer, provider, is_rm, ad["ContextID"], entries_cid, mhs)
        )
        nxt = ad.get("PreviousID")
    return result
