"""Ad and extended-provider signatures, by go-libipni's rules."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given

from sync import (
    NO_ENTRIES,
    Advertisement,
    BadEnvelope,
    KeyType,
    PeerId,
    SchemaError,
    SignatureError,
    verify_advertisement,
)
from sync.crypto.envelope import AD_SIGNATURE_TYPE, EP_SIGNATURE_TYPE, seal
from sync.crypto.signing import ad_signature_payload, ep_signature_payload
from tests.builders import key, link, make_ad, varint
from tests.strategies import advertisements


def test_payload_layout_is_go_libipnis() -> None:
    signer = key(0)
    prev, entries = link(1), link(2)
    ad = make_ad(signer, previous=prev, entries=entries, addresses=("/a", "/b"), metadata=b"M")
    fields = prev.raw + entries.raw + ad.provider.encode() + b"/a/b" + b"M" + b"\x00"
    assert ad_signature_payload(ad) == b"\x12\x20" + hashlib.sha256(fields).digest()
    assert ad_signature_payload(ad, legacy=True) == b"\x12" + varint(len(fields)) + fields
    # No previous ad: cid.Undef's bytes are empty.
    first = replace(ad, previous_id=None)
    assert ad_signature_payload(first, legacy=True).endswith(
        entries.raw + ad.provider.encode() + b"/a/bM\x00"
    )


def test_context_id_is_not_covered_by_the_ad_signature() -> None:
    ad = make_ad(key(0), context_id=b"one")
    verify_advertisement(replace(ad, context_id=b"two"))


def test_legacy_signature_payload_is_accepted_and_reported() -> None:
    signer = key(0)
    ad = make_ad(signer)
    legacy = replace(ad, signature=seal(signer, AD_SIGNATURE_TYPE, ad_signature_payload(ad, True)))
    result = verify_advertisement(legacy)
    assert result.legacy and result.signer == signer.peer_id()
    assert not verify_advertisement(ad).legacy


def test_signer_may_differ_from_provider() -> None:
    publisher, provider = key(0), key(1)
    ad = make_ad(publisher, provider=str(provider.peer_id()))
    assert verify_advertisement(ad).signer == publisher.peer_id()
    assert ad.provider_id() == provider.peer_id()


def test_wrong_payload_type_is_a_bad_envelope() -> None:
    signer = key(0)
    ad = make_ad(signer)
    wrong = replace(ad, signature=seal(signer, EP_SIGNATURE_TYPE, ad_signature_payload(ad)))
    with pytest.raises(BadEnvelope):
        verify_advertisement(wrong)
    with pytest.raises(BadEnvelope):
        verify_advertisement(replace(ad, signature=b""))


def _ep_ad() -> Advertisement:
    main, other = key(0), key(1, KeyType.SECP256K1)
    return make_ad(
        main,
        context_id=b"ctx",
        extended=[
            (main, ("/ip4/1.1.1.1/tcp/1",), b"\x80\x12"),
            (other, ("/ip4/2.2.2.2/tcp/2/http",), b"\xa0\x12\x00"),
        ],
        override=True,
    )


def test_extended_providers_sign_and_verify() -> None:
    ad = _ep_ad()
    assert verify_advertisement(ad).signer == key(0).peer_id()
    assert ad.extended_provider is not None and len(ad.extended_provider.providers) == 2


def test_ep_payload_layout() -> None:
    ad = _ep_ad()
    assert ad.extended_provider is not None
    p = ad.extended_provider.providers[1]
    fields = (
        ad.entries.raw
        + ad.provider.encode()
        + b"ctx"
        + p.id.encode()
        + b"/ip4/2.2.2.2/tcp/2/http"
        + p.metadata
        + b"\x01"
    )
    assert ep_signature_payload(ad, p) == b"\x12\x20" + hashlib.sha256(fields).digest()


@pytest.mark.parametrize("what", ["context", "override", "addresses", "metadata", "id", "entries"])
def test_changing_an_ep_covered_field_fails(what: str) -> None:
    ad = _ep_ad()
    ep = ad.extended_provider
    assert ep is not None
    p = ep.providers[1]
    if what == "context":
        bad = replace(ad, context_id=b"other")
    elif what == "override":
        bad = replace(ad, extended_provider=replace(ep, override=False))
    elif what == "entries":
        bad = replace(ad, entries=link(9))
    else:
        changed = {
            "addresses": replace(p, addresses=("/ip4/6.6.6.6/tcp/6",)),
            "metadata": replace(p, metadata=b"\x80\x12"),
            "id": replace(p, id=str(key(2).peer_id())),
        }[what]
        bad = replace(ad, extended_provider=replace(ep, providers=(ep.providers[0], changed)))
    with pytest.raises(SignatureError):
        verify_advertisement(bad)


def test_main_provider_must_be_among_extended_providers() -> None:
    main, other = key(0), key(1)
    with pytest.raises(SchemaError):
        make_ad(main, extended=[(other, (), b"")])
    ad = _ep_ad()
    assert ad.extended_provider is not None
    only_other = replace(ad.extended_provider, providers=ad.extended_provider.providers[1:])
    with pytest.raises(SignatureError, match="provider"):
        verify_advertisement(replace(ad, extended_provider=only_other))


def test_ep_envelope_must_be_signed_by_its_own_id() -> None:
    """Stricter than go-libipni: a valid envelope from the wrong key is refused."""
    ad = _ep_ad()
    ep = ad.extended_provider
    assert ep is not None
    p = ep.providers[1]
    forged = replace(p, signature=seal(key(0), EP_SIGNATURE_TYPE, ep_signature_payload(ad, p)))
    bad = replace(ad, extended_provider=replace(ep, providers=(ep.providers[0], forged)))
    with pytest.raises(SignatureError, match="own ID"):
        verify_advertisement(bad)


def test_removal_ads_carry_no_extended_providers() -> None:
    ad = _ep_ad()
    with pytest.raises(SchemaError):
        replace(ad, is_rm=True).validate()
    with pytest.raises(SchemaError):
        make_ad(key(0), is_rm=True, extended=[(key(0), (), b"")])
    # A validly signed removal with extended providers attached afterwards.
    removal = make_ad(key(0), is_rm=True)
    with pytest.raises(SchemaError):
        verify_advertisement(replace(removal, extended_provider=ad.extended_provider))


@given(advertisements())
def test_generated_ads_verify(ad: Advertisement) -> None:
    signer = verify_advertisement(ad).signer
    assert signer == PeerId.parse(ad.provider)
    assert ad.entries == NO_ENTRIES or ad.has_entries
