"""The independent verifier accepts the real go-produced vectors and rejects any tampering.

Chains built here use only the reference codecs, multiformats and py-libp2p (never the project's
packages or tests/builders.py), so the verifier stays a second, independent implementation.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dag_cbor
import dag_json
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.envelope import Envelope, make_unsigned
from libp2p.peer.id import ID
from multiformats import CID, varint

from tests.independent_verifier import (
    AD_SIG_TYPE,
    EP_SIG_TYPE,
    NO_ENTRIES,
    VerificationError,
    VerifiedAd,
    verify_ad_node,
    verify_block,
    verify_chain,
    verify_head,
)

NFT_AD = "baguqeeranpqrweyey2zsab2mmt33ixc3jkg27p5ri3abr5di2pbbsbaig74q"
NFT_PREV = "baguqeeramj6uf7ie5brhk5ivzi7e4mccndzke6fizc4qaie6t73xrvspkxrq"
NFT_ENTRIES = "baguqeeraumjlc724azqnrdb5xwt2wmgq2fx7ikwcz2lm4xe5dtulx4r3zd2q"
NFT_SIGNER = "QmQzqxhK82kAmKvARFZSkUVS6fo9sySaiogAnx5EnZ6ZmC"
DOC_AD = "ad-bafy2bzaceaceibjf5pottpm4ghfnu7jo7sjcqjom4vhzm5jmq7domxun5vor4.dagjson.json"
DOC_AD_SIGNER = "12D3KooWGVwcVphAgpXjJWHoWyKZUrZsXyc34jeuUmG5nSRZyuQq"
DOC_HEAD_CID = "baguqeerar6uhbs23pfhmtgspgbxk6k6vwu5ccvvudw22ikzh63beqwzuemyq"
DOC_HEAD_SIGNER = "12D3KooWQ9j3Ur5V9U63Vi6ved72TcA3sv34k74W3wpW5rwNvDc3"


def flip(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- real vectors ------------------------------------------------------------------------------


@pytest.fixture
def nft(fixtures_dir: Path) -> tuple[bytes, bytes]:
    """(raw ad block, raw signed head) of the RSA-signed production ad."""
    ad = (fixtures_dir / "go-libipni" / NFT_AD).read_bytes()
    return ad, (fixtures_dir / "go-libipni" / "nftstorage-signed-head.json").read_bytes()


def only(blocks: dict[str, bytes]) -> Callable[[str], bytes]:
    def fetch(cid: str) -> bytes:
        if cid not in blocks:
            raise LookupError(f"no block {cid}")
        return blocks[cid]

    return fetch


def test_production_head_points_to_the_rsa_ad(nft: tuple[bytes, bytes]) -> None:
    assert verify_head(nft[1]) == (NFT_AD, NFT_SIGNER)


def test_production_ad_verifies_from_the_bytes_received(nft: tuple[bytes, bytes]) -> None:
    raw, head = nft
    node = verify_block(NFT_AD, raw)
    assert dag_json.encode(node) != raw  # padded base64: re-encoding would change the CID
    assert verify_ad_node(node) == NFT_SIGNER
    [ad] = verify_chain(only({NFT_AD: raw}), head, stop_at={NFT_PREV}, entries=False)
    assert ad == VerifiedAd(
        cid=NFT_AD,
        signer=NFT_SIGNER,
        provider=NFT_SIGNER,  # written as a CIDv1 libp2p-key, normalized to base58
        is_rm=False,
        context_id=NFT_ENTRIES.encode(),
        entries_cid=NFT_ENTRIES,
        multihashes=[],
    )


def test_production_chain_without_its_previous_ad_fails(nft: tuple[bytes, bytes]) -> None:
    with pytest.raises(VerificationError, match=f"{NFT_PREV}: fetch failed"):
        verify_chain(only({NFT_AD: nft[0]}), nft[1], entries=False)
    with pytest.raises(VerificationError, match=f"{NFT_ENTRIES}: fetch failed"):
        verify_chain(only({NFT_AD: nft[0]}), nft[1], stop_at={NFT_PREV})


def test_doc_head_and_ed25519_ad_verify(fixtures_dir: Path) -> None:
    doc = fixtures_dir / "storetheindex-doc"
    assert verify_head((doc / "signed-head.json").read_bytes()) == (DOC_HEAD_CID, DOC_HEAD_SIGNER)
    assert verify_ad_node(dag_json.decode((doc / DOC_AD).read_bytes())) == DOC_AD_SIGNER


@pytest.mark.parametrize("index", [0, 100, 1000, -3])
def test_any_flipped_block_byte_fails_the_hash(nft: tuple[bytes, bytes], index: int) -> None:
    with pytest.raises(VerificationError, match="do not hash"):
        verify_block(NFT_AD, flip(nft[0], index))


@pytest.mark.parametrize("index", [10, 300, 330, -1])
def test_flipped_signature_byte_fails(nft: tuple[bytes, bytes], index: int) -> None:
    node = dag_json.decode(nft[0])
    node["Signature"] = flip(node["Signature"], index)  # key, type, payload, signature
    with pytest.raises(VerificationError, match="Signature"):
        verify_ad_node(node)


PREV = CID.decode(NFT_PREV)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PreviousID", None),
        ("PreviousID", CID.decode(NFT_ENTRIES)),
        ("Entries", PREV),
        ("Provider", NFT_SIGNER),  # the same peer, written differently: still a different ad
        ("Addresses", ["/dns4/elastic.dag.house/tcp/443/ws"]),
        ("Addresses", []),
        ("Metadata", b"\x80\x13"),
        ("IsRm", True),
    ],
)
def test_changing_a_signed_field_fails(nft: tuple[bytes, bytes], name: str, value: Any) -> None:
    node = dag_json.decode(nft[0])
    if value is None:
        del node[name]
    else:
        node[name] = value
    with pytest.raises(VerificationError, match="signed payload does not match"):
        verify_ad_node(node)


def test_context_id_is_not_signed_but_is_bounded(nft: tuple[bytes, bytes]) -> None:
    node = dag_json.decode(nft[0])
    node["ContextID"] = b"another context"
    assert verify_ad_node(node) == NFT_SIGNER
    node["ContextID"] = bytes(65)
    with pytest.raises(VerificationError, match="too long"):
        verify_ad_node(node)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda n: n.update(sig=flip(n["sig"], 5)), "signature invalid"),
        (lambda n: n.update(topic="/indexer/ingest/mainnet"), "signature invalid"),
        (lambda n: n.update(head=CID.decode(NFT_AD)), "signature invalid"),
        (lambda n: n.pop("topic"), "signature invalid"),
        (lambda n: n.update(pubkey=flip(n["pubkey"], 10)), "head:"),
        (lambda n: n.update(sig=b""), "missing public key or signature"),
        (lambda n: n.update(pubkey=b"\x08\x03\x12\x02ab"), "unsupported or malformed public key"),
        (lambda n: n.update(extra=1), "unknown fields"),
        (lambda n: n.update(topic=None), "wrong type"),
    ],
)
def test_tampered_head_fails(
    fixtures_dir: Path, change: Callable[[dict[str, Any]], Any], match: str
) -> None:
    node = dag_json.decode((fixtures_dir / "storetheindex-doc" / "signed-head.json").read_bytes())
    change(node)
    with pytest.raises(VerificationError, match=match):
        verify_head(dag_json.encode(node))


# --- chains built by hand ----------------------------------------------------------------------


def envelope(keys: KeyPair, payload_type: bytes, payload: bytes) -> bytes:
    signature = keys.private_key.sign(make_unsigned("indexer", payload_type, payload))
    return Envelope(keys.public_key, payload_type, payload, signature).marshal_envelope()


def peer(keys: KeyPair) -> str:
    return ID.from_pubkey(keys.public_key).to_base58()


def sha256_mh(data: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


def sign_ad(ad: dict[str, Any], keys: KeyPair, legacy: bool = False) -> dict[str, Any]:
    prev = bytes(ad["PreviousID"]) if "PreviousID" in ad else b""
    buf = prev + bytes(ad["Entries"]) + ad["Provider"].encode() + "".join(ad["Addresses"]).encode()
    buf += ad["Metadata"] + (b"\x01" if ad["IsRm"] else b"\x00")
    payload = b"\x12" + varint.encode(len(buf)) + buf if legacy else sha256_mh(buf)
    return {**ad, "Signature": envelope(keys, AD_SIG_TYPE, payload)}


class Store:
    """A content-addressed block store; `fetch` is what verify_chain is given."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.fetched: list[str] = []

    def put(self, node: Any, cbor: bool = False) -> CID:
        if cbor:  # dag-cbor + blake2b-256, as some go publishers write
            raw = dag_cbor.encode(node)
            digest = hashlib.blake2b(raw, digest_size=32).digest()
            cid = CID("base32", 1, "dag-cbor", varint.encode(0xB220) + b"\x20" + digest)
        else:
            raw = dag_json.encode(node)
            cid = CID("base32", 1, "dag-json", sha256_mh(raw))
        self.blocks[str(cid)] = raw
        return cid

    def fetch(self, cid: str) -> bytes:
        self.fetched.append(cid)
        if cid not in self.blocks:
            raise LookupError(cid)
        return self.blocks[cid]


def signed_head(keys: KeyPair, head: CID, topic: str | None = "/indexer/ingest/mainnet") -> bytes:
    message = bytes(head) + (topic or "").encode()
    node = {"head": head, "pubkey": keys.public_key.serialize()}
    node |= {"sig": keys.private_key.sign(message)} | ({"topic": topic} if topic else {})
    raw: bytes = dag_json.encode(node)
    return raw


MHS = [sha256_mh(bytes([i])) for i in range(5)]


def new_ad(
    keys: KeyPair, entries: CID, previous: CID | None = None, **fields: Any
) -> dict[str, Any]:
    ad = {"Provider": peer(keys), "Addresses": ["/ip4/127.0.0.1/tcp/3104"], "Entries": entries}
    ad |= {"ContextID": b"ctx", "Metadata": b"\x80\x12", "IsRm": False}
    return ad | ({"PreviousID": previous} if previous else {}) | fields


@pytest.fixture
def chain() -> tuple[Store, KeyPair, list[CID]]:
    """ad1 (two dag-json chunks) <- ad2 (one dag-cbor/blake2b chunk, CID-form Provider)."""
    keys, store = create_new_key_pair(), Store()
    second = store.put({"Entries": MHS[2:]})
    first = store.put({"Entries": MHS[:2], "Next": second})
    ad1 = store.put(sign_ad(new_ad(keys, first), keys))
    chunk = store.put({"Entries": [MHS[0]]}, cbor=True)
    provider = str(CID("base32", 1, "libp2p-key", ID.from_base58(peer(keys)).to_bytes()))
    ad2 = store.put(sign_ad(new_ad(keys, chunk, ad1, Provider=provider, ContextID=b"2"), keys))
    return store, keys, [ad1, ad2, first, second, chunk]


def test_hand_built_chain_verifies_end_to_end(chain: tuple[Store, KeyPair, list[CID]]) -> None:
    store, keys, [ad1, ad2, first, _second, chunk] = chain
    ads = verify_chain(store.fetch, signed_head(keys, ad2))
    me = peer(keys)
    assert ads == [
        VerifiedAd(str(ad2), me, me, False, b"2", str(chunk), [MHS[0]]),
        VerifiedAd(str(ad1), me, me, False, b"ctx", str(first), MHS),
    ]
    assert verify_chain(store.fetch, signed_head(keys, ad2, topic=None), stop_at={str(ad1)}) == [
        ads[0]
    ]
    assert len(verify_chain(store.fetch, signed_head(keys, ad2), stop_at={str(ad2)})) == 0
    with pytest.raises(VerificationError, match="max_ads=1"):
        verify_chain(store.fetch, signed_head(keys, ad2), max_ads=1)


def test_hand_built_chain_rejects_tampered_or_missing_blocks(
    chain: tuple[Store, KeyPair, list[CID]],
) -> None:
    store, keys, [ad1, ad2, _first, second, chunk] = chain
    head = signed_head(keys, ad2)
    for cid in (ad1, second, chunk):
        raw = store.blocks[str(cid)]
        store.blocks[str(cid)] = flip(raw, len(raw) // 2)
        with pytest.raises(VerificationError, match=f"{cid}: block bytes do not hash"):
            verify_chain(store.fetch, head)
        del store.blocks[str(cid)]
        with pytest.raises(VerificationError, match=f"{cid}: fetch failed"):
            verify_chain(store.fetch, head)
        store.blocks[str(cid)] = raw
    assert len(verify_chain(store.fetch, head)) == 2


def test_a_key_other_than_the_signer_cannot_sign_the_head(
    chain: tuple[Store, KeyPair, list[CID]],
) -> None:
    store, keys, [_ad1, ad2, *_] = chain
    node = dag_json.decode(signed_head(keys, ad2))
    node["pubkey"] = create_new_key_pair().public_key.serialize()
    with pytest.raises(VerificationError, match="head: signature invalid"):
        verify_chain(store.fetch, dag_json.encode(node))


def test_no_entries_and_removal_ads_walk_no_chunks() -> None:
    keys, store = create_new_key_pair(), Store()
    ad1 = store.put(sign_ad(new_ad(keys, NO_ENTRIES), keys))
    unfetchable = CID("base32", 1, "dag-json", sha256_mh(b"gone"))
    ad2 = store.put(sign_ad(new_ad(keys, unfetchable, ad1, IsRm=True, Metadata=b""), keys))
    ads = verify_chain(store.fetch, signed_head(keys, ad2))
    assert [(a.is_rm, a.entries_cid, a.multihashes) for a in ads] == [
        (True, str(unfetchable), []),
        (False, None, []),
    ]
    assert store.fetched == [str(ad2), str(ad1)]


def test_legacy_unhashed_signature_payload_verifies() -> None:
    keys = create_new_key_pair()
    ad = sign_ad(new_ad(keys, NO_ENTRIES), keys, legacy=True)
    assert verify_ad_node(ad) == peer(keys)
    ad["Metadata"] = b"changed"
    with pytest.raises(VerificationError, match="signed payload does not match"):
        verify_ad_node(ad)


def test_fields_outside_go_libipnis_schema_are_rejected() -> None:
    keys = create_new_key_pair()
    ad = sign_ad(new_ad(keys, NO_ENTRIES), keys)
    with pytest.raises(VerificationError):
        verify_ad_node(ad | {"SeqNum": 301})


def test_signer_may_differ_from_provider_and_is_reported() -> None:
    provider, publisher = create_new_key_pair(), create_new_key_pair()
    ad = sign_ad(new_ad(provider, NO_ENTRIES), publisher)
    assert verify_ad_node(ad) == peer(publisher)


def with_extended(
    ad: dict[str, Any], signers: list[KeyPair], main: KeyPair, override: bool
) -> dict[str, Any]:
    previous = bytes(ad["PreviousID"]) if "PreviousID" in ad else b""
    providers = []
    for keys in signers:
        p: dict[str, Any] = {
            "ID": peer(keys),
            "Addresses": ["/ip4/10.0.0.1/tcp/1"],
            "Metadata": b"\x90\x12",
        }
        buf = previous + bytes(ad["Entries"]) + ad["Provider"].encode() + ad["ContextID"]
        buf += p["ID"].encode() + "".join(p["Addresses"]).encode() + p["Metadata"]
        buf += b"\x01" if override else b"\x00"
        providers.append(p | {"Signature": envelope(keys, EP_SIG_TYPE, sha256_mh(buf))})
    ad = {**ad, "ExtendedProvider": {"Providers": providers, "Override": override}}
    return sign_ad(ad, main)


def test_extended_provider_signatures() -> None:
    main, other = create_new_key_pair(), create_new_key_pair()
    ad = with_extended(new_ad(main, NO_ENTRIES), [main, other], main, override=True)
    assert verify_ad_node(ad) == peer(main)
    ad["ExtendedProvider"]["Override"] = False
    with pytest.raises(VerificationError, match=f"extended provider {peer(main)}: signed"):
        verify_ad_node(ad)
    without_main = with_extended(new_ad(main, NO_ENTRIES), [other], main, override=False)
    with pytest.raises(VerificationError, match="must include the ad's Provider"):
        verify_ad_node(without_main)
    removal = with_extended(new_ad(main, NO_ENTRIES, IsRm=True), [main], main, override=False)
    with pytest.raises(VerificationError, match="IsRm ads cannot carry extended providers"):
        verify_ad_node(removal)
    wrong_type = with_extended(new_ad(main, NO_ENTRIES), [main], main, override=False)
    p = wrong_type["ExtendedProvider"]["Providers"][0]
    p["Signature"] = envelope(main, AD_SIG_TYPE, b"\x12\x20" + bytes(32))
    with pytest.raises(VerificationError, match="envelope payload type"):
        verify_ad_node(wrong_type)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"Surprise": 1}, "unknown fields"),
        ({"IsRm": 0}, "field IsRm has wrong type"),
        ({"Addresses": [b"/ip4/1.2.3.4"]}, "list of str"),
        ({"Metadata": bytes(1025)}, "too long"),
    ],
)
def test_schema_violations_fail(fields: dict[str, Any], match: str) -> None:
    keys = create_new_key_pair()
    with pytest.raises(VerificationError, match=match):
        verify_ad_node(sign_ad(new_ad(keys, NO_ENTRIES), keys) | fields)


def test_missing_field_and_bad_signature_envelope_fail() -> None:
    keys = create_new_key_pair()
    ad = sign_ad(new_ad(keys, NO_ENTRIES), keys)
    with pytest.raises(VerificationError, match="bad envelope"):
        verify_ad_node({**ad, "Signature": b"\xff\xff"})
    del ad["Entries"]
    with pytest.raises(VerificationError, match="missing field Entries"):
        verify_ad_node(ad)


def test_unsupported_codec_or_hash_and_bad_multihash_fail() -> None:
    raw = b"{}"
    with pytest.raises(VerificationError, match="unsupported codec"):
        verify_block(CID("base32", 1, "raw", sha256_mh(raw)), raw)
    identity = CID("base32", 1, "dag-json", b"\x00\x02" + raw)
    with pytest.raises(VerificationError, match="unsupported multihash"):
        verify_block(identity, raw)
    keys, store = create_new_key_pair(), Store()
    chunk = store.put({"Entries": [b"\x12\x20short"]})
    ad = store.put(sign_ad(new_ad(keys, chunk), keys))
    with pytest.raises(VerificationError, match="malformed multihash"):
        verify_chain(store.fetch, signed_head(keys, ad))


def test_the_verifier_imports_nothing_from_the_project() -> None:
    source = Path(__file__).resolve().parent.parent / "independent_verifier.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports (tests/builders.py, strategies.py)"
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"sync", "store", "staging", "indexer", "tests"}
    allowed = {"__future__", "hashlib", "collections", "dataclasses", "typing", "dag_cbor"}
    assert imported <= allowed | {"dag_json", "libp2p", "multiformats"}
