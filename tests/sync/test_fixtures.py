"""Every conformance vector in ../shared/fixtures parses and verifies; any flipped byte fails."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sync import (
    Advertisement,
    HashMismatch,
    Link,
    ModelError,
    PeerId,
    SignatureError,
    SignedHead,
    SyncError,
    decode_metadata,
    load_advertisement,
    verify_advertisement,
)
from sync.announce.message import multiaddr_bytes
from sync.model import dagjson
from tests.vectors import DOC_AD, DOC_HEAD, NFT_AD, NFT_HEAD, PCACHE_INFO, PCACHE_RESULTS


def test_every_fixture_is_covered(fixtures_dir: Path) -> None:
    """A new vector in shared/ must get a test here; none may be silently skipped."""
    found = {str(p.relative_to(fixtures_dir)) for p in fixtures_dir.rglob("*") if p.is_file()}
    found.discard("README.md")
    assert found == {NFT_AD, NFT_HEAD, DOC_AD, DOC_HEAD, PCACHE_INFO, PCACHE_RESULTS}


def test_production_ad_hashes_and_verifies(fixtures_dir: Path) -> None:
    path = fixtures_dir / NFT_AD
    raw = path.read_bytes()
    ad = load_advertisement(Link.parse(path.name), raw)
    signed = verify_advertisement(ad)
    assert signed.signer == ad.provider_id()
    assert str(signed.signer) == "QmQzqxhK82kAmKvARFZSkUVS6fo9sySaiogAnx5EnZ6ZmC"
    assert not signed.legacy
    # Provider is written in CIDv1 libp2p-key form and normalizes to base58.
    assert ad.provider.startswith("bafz")
    assert ad.provider_id().to_cid() == ad.provider
    # Padded base64 in ContextID: accepted, and it is not what we would re-encode.
    assert b'cQ=="' in raw
    assert dagjson.encode(ad.to_node()) != raw
    assert decode_metadata(ad.metadata).names() == ["transport-bitswap"]


def test_production_head_verifies_and_points_at_the_ad(fixtures_dir: Path) -> None:
    head = SignedHead.decode((fixtures_dir / NFT_HEAD).read_bytes())
    assert head.topic is None
    assert str(head.head) == Path(NFT_AD).name
    assert str(head.verify()) == "QmQzqxhK82kAmKvARFZSkUVS6fo9sySaiogAnx5EnZ6ZmC"


def test_doc_ad_signature_verifies(fixtures_dir: Path) -> None:
    ad = Advertisement.from_node(dagjson.decode((fixtures_dir / DOC_AD).read_bytes()))
    ad.validate()
    signed = verify_advertisement(ad)
    assert str(signed.signer) == "12D3KooWGVwcVphAgpXjJWHoWyKZUrZsXyc34jeuUmG5nSRZyuQq"
    assert signed.signer == ad.provider_id()
    # Its metadata uses a code we do not know: kept as opaque bytes, never an exception.
    meta = decode_metadata(ad.metadata)
    assert meta.opaque == ad.metadata and meta.error


def test_doc_head_with_topic_verifies(fixtures_dir: Path) -> None:
    head = SignedHead.decode((fixtures_dir / DOC_HEAD).read_bytes())
    assert head.topic == "/indexer/ingest/testnet"
    signer = head.verify()
    assert signer.inline_public_key() == head.pubkey
    # The topic is signed: dropping or changing it breaks the signature.
    with pytest.raises(SignatureError):
        replace(head, topic=None).verify()
    with pytest.raises(SignatureError):
        replace(head, topic="/indexer/ingest/mainnet").verify()


def test_pcache_find_shapes_parse(fixtures_dir: Path) -> None:
    info = json.loads((fixtures_dir / PCACHE_INFO).read_text())
    PeerId.parse(info["AddrInfo"]["ID"])
    PeerId.parse(info["Publisher"]["ID"])
    Link.parse(info["LastAdvertisement"]["/"])
    for p in info["ExtendedProviders"]["Providers"]:
        PeerId.parse(p["ID"])
        for a in p["Addrs"]:
            multiaddr_bytes(a)
    names = [
        decode_metadata(base64.b64decode(m)).names() for m in info["ExtendedProviders"]["Metadatas"]
    ]
    assert names == [["transport-bitswap"], ["transport-ipfs-gateway-http"]]
    results = json.loads((fixtures_dir / PCACHE_RESULTS).read_text())
    for r in results:
        PeerId.parse(r["Provider"]["ID"])
        base64.b64decode(r["ContextID"], validate=True)
        decode_metadata(base64.b64decode(r["Metadata"], validate=True))


def _flips(data: bytes) -> list[bytes]:
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(len(data))]


def test_flipping_any_byte_of_the_block_fails_the_cid_check(fixtures_dir: Path) -> None:
    path = fixtures_dir / NFT_AD
    raw, link = path.read_bytes(), Link.parse(path.name)
    for flipped in _flips(raw):
        with pytest.raises(HashMismatch):
            load_advertisement(link, flipped)


@pytest.mark.parametrize("name", [NFT_AD, DOC_AD])
def test_flipping_any_signed_field_fails(fixtures_dir: Path, name: str) -> None:
    ad = Advertisement.from_node(dagjson.decode((fixtures_dir / name).read_bytes()))
    verify_advertisement(ad)
    prev = ad.previous_id or Link.parse(Path(NFT_AD).name)
    variants = [
        replace(ad, previous_id=Link(prev.raw[:-1] + bytes([prev.raw[-1] ^ 1]))),
        replace(ad, previous_id=None) if ad.previous_id else replace(ad, previous_id=prev),
        replace(ad, entries=Link(ad.entries.raw[:-1] + bytes([ad.entries.raw[-1] ^ 1]))),
        replace(ad, provider=ad.provider[:-1] + ("a" if ad.provider[-1] != "a" else "b")),
        replace(ad, addresses=(*ad.addresses, "/ip4/1.2.3.4/tcp/1")),
        replace(ad, addresses=()),
        replace(ad, is_rm=not ad.is_rm),
    ]
    variants += [replace(ad, metadata=m) for m in _flips(ad.metadata)]
    first = ad.addresses[0]
    variants += [
        replace(ad, addresses=(first[:i] + chr(ord(first[i]) ^ 1) + first[i + 1 :],))
        for i in range(len(first))
    ]
    for variant in variants:
        with pytest.raises(SignatureError):
            verify_advertisement(variant)


@pytest.mark.parametrize("name", [NFT_AD, DOC_AD])
def test_flipping_any_byte_of_the_signature_fails_typed(fixtures_dir: Path, name: str) -> None:
    ad = Advertisement.from_node(dagjson.decode((fixtures_dir / name).read_bytes()))
    for sig in _flips(ad.signature):
        with pytest.raises(ModelError):
            verify_advertisement(replace(ad, signature=sig))


@pytest.mark.parametrize("name", [NFT_HEAD, DOC_HEAD])
def test_flipping_any_byte_of_a_signed_head_fails_typed(fixtures_dir: Path, name: str) -> None:
    head = SignedHead.decode((fixtures_dir / name).read_bytes())
    variants = [replace(head, sig=s) for s in _flips(head.sig)]
    variants += [replace(head, pubkey=p) for p in _flips(head.pubkey)]
    variants += [replace(head, head=Link(h)) for h in _flips(head.head.raw)[2:]]
    for variant in variants:
        with pytest.raises(SyncError) as info:
            variant.verify()
        assert info.value.permanent
