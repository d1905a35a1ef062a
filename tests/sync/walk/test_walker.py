"""The sans-I/O chain walker, driven synchronously over an in-memory block map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Unpack

import pytest

from sync import HashMismatch, Link, PeerId, PrivateKey, encode_block
from sync.model.schema import Advertisement
from sync.walk.chain import ChainWalk, StopReason, WalkedAd
from tests.builders import AdOptions, key, link, make_ad


@dataclass
class Allow:
    pairs: set[tuple[PeerId, PeerId]]

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        return (publisher, provider) in self.pairs


NOBODY = Allow(set())


class Chain:
    """A chain being built oldest first; ``blocks`` is what a publisher would serve."""

    def __init__(self) -> None:
        self.blocks: dict[Link, bytes] = {}
        self.head: Link | None = None
        self.order: list[Link] = []  # oldest first

    def add(self, ad: Advertisement) -> Link:
        cid, raw = encode_block(ad.to_node())
        self.blocks[cid], self.head = raw, cid
        self.order.append(cid)
        return cid

    def ad(self, signer: PrivateKey, **kw: Unpack[AdOptions]) -> Link:
        return self.add(make_ad(signer, previous=self.head, **kw))


def nothing_known(_: Link) -> bool:
    return False


def walk(
    chain: Chain,
    publisher: PrivateKey,
    policy: Allow = NOBODY,
    *,
    is_known: Callable[[Link], bool] = nothing_known,
    latest: Link | None = None,
    depth_limit: int = 0,
) -> tuple[list[WalkedAd], ChainWalk]:
    assert chain.head is not None
    walker = ChainWalk(
        chain.head,
        publisher.peer_id(),
        is_known=is_known,
        policy=policy,
        latest=latest,
        depth_limit=depth_limit,
    )
    out = []
    while (need := walker.next_block()) is not None:
        walked = walker.feed(need, chain.blocks[need])
        if walked is not None:
            out.append(walked)
    return out, walker


def test_walks_newest_first_to_genesis() -> None:
    chain, pub = Chain(), key(0)
    for i in range(5):
        chain.ad(pub, entries=link(i))
    ads, walker = walk(chain, pub)
    assert [a.cid for a in ads] == list(reversed(chain.order))
    assert walker.stop_reason is StopReason.GENESIS and walker.count == 5
    assert all(a.provider == pub.peer_id() and a.error is None for a in ads)


def test_stops_at_known_latest_and_depth() -> None:
    chain, pub = Chain(), key(0)
    for i in range(6):
        chain.ad(pub, entries=link(i))
    known = set(chain.order[:2])
    ads, walker = walk(chain, pub, is_known=known.__contains__)
    assert len(ads) == 4 and walker.stop_reason is StopReason.KNOWN
    ads, walker = walk(chain, pub, latest=chain.order[3])
    assert len(ads) == 2 and walker.stop_reason is StopReason.LATEST_SYNC
    ads, walker = walk(chain, pub, depth_limit=3)
    assert len(ads) == 3 and walker.stop_reason is StopReason.DEPTH_LIMIT


def test_a_chain_that_switches_providers_yields_each_ad_to_its_provider() -> None:
    chain, pub, a, b = Chain(), key(0), key(1), key(2)
    chain.ad(a)
    chain.ad(b)
    chain.ad(pub)
    chain.ad(a)
    policy = Allow({(pub.peer_id(), a.peer_id()), (pub.peer_id(), b.peer_id())})
    ads, walker = walk(chain, pub, policy)
    assert [x.provider for x in ads] == [a.peer_id(), pub.peer_id(), b.peer_id(), a.peer_id()]
    assert walker.stop_reason is StopReason.GENESIS


def test_a_publisher_may_sign_for_a_provider_only_when_allowed() -> None:
    chain, pub, prov = Chain(), key(0), key(1)
    chain.ad(pub, provider=str(prov.peer_id()))  # signed by the publisher on prov's behalf
    ads, walker = walk(chain, pub)
    assert ads == [] and walker.stop_reason is StopReason.NOT_ALLOWED
    ads, walker = walk(chain, pub, Allow({(pub.peer_id(), prov.peer_id())}))
    assert len(ads) == 1 and ads[0].provider == prov.peer_id() and ads[0].error is None


def test_malicious_chain_pointing_into_another_providers_chain_is_not_followed() -> None:
    victim, evil = key(1), key(2)
    chain = Chain()
    chain.ad(victim, entries=link(1))  # the victim's real, signed ads
    chain.ad(victim, entries=link(2))
    chain.ad(evil, entries=link(3))  # the attacker's ads link into them
    chain.ad(evil, entries=link(4))
    ads, walker = walk(chain, evil)
    assert [x.provider for x in ads] == [evil.peer_id()] * 2
    assert walker.stop_reason is StopReason.NOT_ALLOWED


def test_invalid_ads_are_returned_with_their_error_and_the_walk_goes_on() -> None:
    chain, pub, stranger = Chain(), key(0), key(3)
    chain.ad(pub)
    good = make_ad(pub, previous=chain.head)
    chain.add(replace(good, metadata=b"\x80\x12tampered"))  # signature no longer matches
    chain.ad(stranger, provider=str(pub.peer_id()))  # signed by neither provider nor publisher
    chain.ad(pub)
    ads, walker = walk(chain, pub)
    assert [x.error is not None for x in ads] == [False, True, True, False]
    assert "SignatureError" in (ads[2].error or "") and "neither" in (ads[1].error or "")
    assert walker.stop_reason is StopReason.GENESIS


def test_broken_blocks_end_the_walk_and_bad_bytes_raise() -> None:
    chain, pub = Chain(), key(0)
    chain.ad(pub)
    cid, raw = encode_block({"not": "an ad"})
    chain.blocks[cid], chain.head = raw, cid
    ads, walker = walk(chain, pub)
    assert ads == [] and walker.stop_reason is StopReason.BROKEN
    good = Chain()
    good.ad(pub)
    assert good.head is not None
    walker = ChainWalk(good.head, pub.peer_id(), is_known=lambda _: False, policy=NOBODY)
    need = walker.next_block()
    assert need is not None
    with pytest.raises(HashMismatch):
        walker.feed(need, good.blocks[need] + b" ")
    with pytest.raises(ValueError):
        walker.feed(link(99), b"{}")


def test_skip_entries_when_a_newer_ad_removes_the_same_provider_and_context() -> None:
    chain, pub, other = Chain(), key(0), key(1)
    chain.ad(pub, context_id=b"C", entries=link(1))  # 0: removed later -> skip
    chain.ad(other, context_id=b"C", entries=link(2))  # 1: other provider's C -> keep
    chain.ad(pub, context_id=b"D", entries=link(3))  # 2: other context -> keep
    chain.ad(pub, context_id=b"C", is_rm=True)  # 3: the removal
    chain.ad(pub, context_id=b"C", entries=link(4))  # 4: re-added after -> keep
    ads, _ = walk(chain, pub, Allow({(pub.peer_id(), other.peer_id())}))
    skips = {a.cid: a.skip_entries for a in ads}
    assert [skips[c] for c in chain.order] == [True, False, False, False, False]
