"""One conformance suite for every ``IndexBackend`` operation, run on LevelDB and on a real Valkey
cluster (``backend`` is parametrized over both): the rules of ``store/cluster/protocol.py``."""

from __future__ import annotations

import pytest
import trio

from store import AdOutOfOrder, ProviderRecord, StoreFenced, ValueRecord
from store.cluster import AdCommit, Announce, DoneMark, IndexBackend, PutValue, RemoveValue
from tests.store.cluster.conftest import Names


async def test_allocate_is_stable_and_distinct(backend: IndexBackend, names: Names) -> None:
    p, q = names.provider(0), names.provider(1)
    assert await backend.allocated(p, b"ctx") is None
    vk = await backend.allocate(p, b"ctx")
    assert len(vk) == 8
    assert await backend.allocate(p, b"ctx") == vk
    assert await backend.allocated(p, b"ctx") == vk
    others = {await backend.allocate(p, b"other"), await backend.allocate(q, b"ctx")}
    assert vk not in others and len(others) == 2


async def test_allocations_in_parallel_never_share_a_key(
    backend: IndexBackend, names: Names
) -> None:
    got: dict[tuple[int, int], bytes] = {}

    async def allocate(p: int, c: int) -> None:
        got[p, c] = await backend.allocate(names.provider(p), b"c%d" % c)

    async with trio.open_nursery() as nursery:
        for p in range(3):
            for c in range(5):
                nursery.start_soon(allocate, p, c)
    assert len(set(got.values())) == 15
    for (p, c), vk in got.items():
        assert await backend.allocated(names.provider(p), b"c%d" % c) == vk


async def test_a_removed_context_gets_a_fresh_key(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    vk = await backend.allocate(p, b"ctx")
    await backend.put_value(vk, p, b"ctx", b"meta")
    await backend.remove_value(vk, p, b"ctx")
    assert await backend.allocated(p, b"ctx") is None
    assert await backend.value(vk) is None
    fresh = await backend.allocate(p, b"ctx")
    assert fresh != vk


async def test_lookup_returns_live_records_in_value_key_order(
    backend: IndexBackend, names: Names
) -> None:
    p, q = names.provider(0), names.provider(1)
    a = await backend.allocate(p, b"a")
    b = await backend.allocate(q, b"b")
    await backend.put_value(a, p, b"a", b"meta-a")
    await backend.put_value(b, q, b"b", b"meta-b")
    mhs = [names.mh(i) for i in range(50)]
    await backend.add_multihashes(a, mhs)
    await backend.add_multihashes(a, mhs[:10])  # idempotent
    await backend.add_multihashes(b, mhs[:5])  # add-only: a stays
    ra, rb = ValueRecord(p, b"a", b"meta-a"), ValueRecord(q, b"b", b"meta-b")
    both = [ra, rb] if a < b else [rb, ra]
    assert await backend.lookup(mhs[0]) == both
    assert await backend.lookup(mhs[7]) == [ra]
    assert await backend.lookup(names.mh(999)) == []
    found = await backend.lookup_many([mhs[1], names.mh(999), mhs[20]])
    assert found == [both, [], [ra]]
    assert await backend.lookup_many([]) == []
    await backend.add_multihashes(a, [])  # nothing to add: no error
    assert await backend.lookup(names.mh(999)) == []


async def test_a_removed_value_is_skipped_at_lookup(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    a = await backend.allocate(p, b"a")
    b = await backend.allocate(p, b"b")
    await backend.put_value(a, p, b"a", b"m")
    await backend.put_value(b, p, b"b", b"m")
    await backend.add_multihashes(a, [names.mh(0)])
    await backend.add_multihashes(b, [names.mh(0)])
    assert len(await backend.lookup(names.mh(0))) == 2
    await backend.remove_value(a, p, b"a")
    assert await backend.lookup(names.mh(0)) == [ValueRecord(p, b"b", b"m")]
    assert await backend.lookup_many([names.mh(0)]) == [[ValueRecord(p, b"b", b"m")]]
    await backend.put_value(b, p, b"b", b"new")  # re-described: one record changes
    assert await backend.lookup(names.mh(0)) == [ValueRecord(p, b"b", b"new")]


async def test_concurrent_chunks_never_lose_each_others_keys(
    backend: IndexBackend, names: Names
) -> None:
    p = names.provider()
    vks = [await backend.allocate(p, b"c%d" % i) for i in range(4)]
    for i, vk in enumerate(vks):
        await backend.put_value(vk, p, b"c%d" % i, b"m")
    mhs = [names.mh(i) for i in range(300)]
    async with trio.open_nursery() as nursery:
        for vk in vks:
            nursery.start_soon(backend.add_multihashes, vk, mhs)
    found = await backend.lookup_many(mhs)
    assert all(len(records) == 4 for records in found)


async def test_provider_records(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    assert await backend.provider(p) is None
    record = ProviderRecord(addresses=["/ip4/127.0.0.1/tcp/1"], last_ad=b"ad")
    await backend.put_provider(p, record)
    assert await backend.provider(p) == record
    await backend.put_provider(p, ProviderRecord(last_error="boom"))
    assert await backend.provider(p) == ProviderRecord(last_error="boom")


async def test_epoch_only_moves_forward(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    assert await backend.epoch(p) == 0
    await backend.set_epoch(p, 7)
    await backend.set_epoch(p, 7)  # the same token again: a no-op
    assert await backend.epoch(p) == 7
    with pytest.raises(StoreFenced) as refused:
        await backend.set_epoch(p, 6)
    assert (refused.value.token, refused.value.epoch) == (6, 7)
    await backend.set_epoch(p, 2**62)  # exact, whatever the size of the token
    assert await backend.epoch(p) == 2**62
    with pytest.raises(StoreFenced):
        await backend.set_epoch(p, 2**62 - 1)


async def test_fenced_writes_need_the_epoch(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    vk = await backend.allocate(p, b"ctx")
    await backend.put_value(vk, p, b"ctx", b"v0", token=0)  # a provider never fenced: epoch 0
    await backend.set_epoch(p, 3)
    with pytest.raises(StoreFenced):
        await backend.put_value(vk, p, b"ctx", b"stale", token=2)
    with pytest.raises(StoreFenced):
        await backend.put_provider(p, ProviderRecord(last_error="stale"), token=4)
    with pytest.raises(StoreFenced):
        await backend.remove_value(vk, p, b"ctx", token=0)
    assert await backend.value(vk) == ValueRecord(p, b"ctx", b"v0")
    assert await backend.provider(p) is None
    await backend.put_value(vk, p, b"ctx", b"v3", token=3)
    assert await backend.value(vk) == ValueRecord(p, b"ctx", b"v3")
    await backend.put_value(vk, p, b"ctx", b"free")  # unfenced (tools): no token
    assert await backend.value(vk) == ValueRecord(p, b"ctx", b"free")


async def test_commit_ad_applies_once_and_in_order(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    await backend.set_epoch(p, 5)
    a = await backend.allocate(p, b"a")
    old = await backend.allocate(p, b"old")
    await backend.put_value(old, p, b"old", b"m", token=5)
    first = AdCommit(
        p,
        names.ad(1),
        None,
        ProviderRecord(last_ad=names.ad(1)),
        values=[PutValue(a, b"a", b"meta"), RemoveValue(old, b"old")],
    )
    assert await backend.done(p, names.ad(1)) is None
    assert await backend.latest(p) is None
    assert await backend.commit_ad(first, 5) == "applied"
    assert await backend.done(p, names.ad(1)) == DoneMark()
    assert await backend.latest(p) == names.ad(1)
    assert await backend.value(a) == ValueRecord(p, b"a", b"meta")
    assert await backend.value(old) is None and await backend.allocated(p, b"old") is None
    assert await backend.provider(p) == ProviderRecord(last_ad=names.ad(1))

    # A replay changes nothing, whatever it carries.
    replay = AdCommit(p, names.ad(1), None, ProviderRecord(last_error="replayed"))
    assert await backend.commit_ad(replay, 5) == "already"
    assert await backend.provider(p) == ProviderRecord(last_ad=names.ad(1))

    # Out of order: ad 3 before ad 2 is done.
    third = AdCommit(p, names.ad(3), names.ad(2), ProviderRecord(last_ad=names.ad(3)))
    with pytest.raises(AdOutOfOrder):
        await backend.commit_ad(third, 5)
    assert await backend.done(p, names.ad(3)) is None
    assert await backend.provider(p) == ProviderRecord(last_ad=names.ad(1))

    second = AdCommit(
        p, names.ad(2), names.ad(1), None, done=DoneMark(ok=False, error="bad signature")
    )
    assert await backend.commit_ad(second, 5) == "applied"
    assert await backend.done(p, names.ad(2)) == DoneMark(ok=False, error="bad signature")
    assert await backend.provider(p) == ProviderRecord(last_ad=names.ad(1))  # None: unchanged
    assert await backend.commit_ad(third, 5) == "applied"
    assert await backend.latest(p) == names.ad(3)
    assert await backend.provider(p) == ProviderRecord(last_ad=names.ad(3))


async def test_commit_ad_refuses_a_stale_token(backend: IndexBackend, names: Names) -> None:
    p = names.provider()
    vk = await backend.allocate(p, b"ctx")
    await backend.set_epoch(p, 10)
    stale = AdCommit(
        p, names.ad(1), None, ProviderRecord(last_ad=b"zombie"), [PutValue(vk, b"ctx", b"z")]
    )
    for token in (9, 11):
        with pytest.raises(StoreFenced) as refused:
            await backend.commit_ad(stale, token)
        assert refused.value.epoch == 10
    assert await backend.done(p, names.ad(1)) is None
    assert await backend.latest(p) is None
    assert await backend.provider(p) is None
    assert await backend.value(vk) is None
    # The check comes first: a stale owner is refused even for an ad that is done.
    assert await backend.commit_ad(AdCommit(p, names.ad(1), None, None), 10) == "applied"
    with pytest.raises(StoreFenced):
        await backend.commit_ad(AdCommit(p, names.ad(1), None, None), 9)


async def test_providers_are_fenced_apart(backend: IndexBackend, names: Names) -> None:
    p, q = names.provider(0), names.provider(1)
    await backend.set_epoch(p, 4)
    assert await backend.epoch(q) == 0
    assert await backend.commit_ad(AdCommit(q, names.ad(1), None, None), 0) == "applied"
    assert await backend.done(p, names.ad(1)) is None
    with pytest.raises(StoreFenced):
        await backend.commit_ad(AdCommit(p, names.ad(1), None, None), 0)


async def test_providers_lists_every_registered_provider_once(
    backend: IndexBackend, names: Names
) -> None:
    ps = [names.provider(n) for n in range(30)]
    records = {p: ProviderRecord(addresses=[f"/ip4/127.0.0.1/tcp/{n}"]) for n, p in enumerate(ps)}
    for p, record in records.items():
        await backend.put_provider(p, record)
    records[ps[0]] = ProviderRecord(last_error="rewritten")  # rewritten: still listed once
    await backend.put_provider(ps[0], records[ps[0]])
    # A provider with values, an allocation and a done marker but no registry record is not
    # listed, though some of its keys end in "}r" like a registry key does.
    q = names.provider(99)
    vk = await backend.allocate(q, b"ctx}r")
    await backend.put_value(vk, q, b"ctx}r", b"m")
    assert await backend.commit_ad(AdCommit(q, names.ad(1) + b"}r", None, None), 0) == "applied"
    mine = [(p, r) for p, r in await backend.providers() if names.salt in p]
    assert mine == sorted(records.items())
    listed = [p for p, _ in await backend.providers()]
    assert listed == sorted(set(listed))  # every provider once, in byte order


async def test_publisher_state_round_trips(backend: IndexBackend, names: Names) -> None:
    pub, other = names.provider(0), names.provider(1)
    assert await backend.cursor(pub) is None
    assert await backend.announce(pub) is None
    assert await backend.publisher_epoch(pub) == 0
    await backend.put_cursor(pub, names.ad(1), token=0)  # a publisher never fenced: epoch 0
    first = Announce(names.ad(2), ("/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"))
    await backend.put_announce(pub, first)  # unfenced: announce intake on any node
    assert await backend.cursor(pub) == names.ad(1)
    assert await backend.announce(pub) == first
    newer = Announce(names.ad(3))
    await backend.put_announce(pub, newer, token=0)
    await backend.put_cursor(pub, names.ad(3))
    assert await backend.announce(pub) == newer
    assert await backend.cursor(pub) == names.ad(3)
    assert await backend.cursor(other) is None and await backend.announce(other) is None


async def test_publishers_are_listed_by_their_announce_records(
    backend: IndexBackend, names: Names
) -> None:
    pubs = [names.provider(i) for i in range(5)]
    for pub in reversed(pubs):
        await backend.put_announce(pub, Announce(names.ad(1)))
        await backend.put_announce(pub, Announce(names.ad(2)))  # twice: still listed once
    await backend.put_cursor(names.provider(9), names.ad(1))  # a cursor alone lists nothing
    mine = [p for p in await backend.publishers() if names.salt in p]
    assert mine == sorted(pubs)
    listed = await backend.publishers()
    assert listed == sorted(set(listed))


async def test_publisher_epoch_only_moves_forward(backend: IndexBackend, names: Names) -> None:
    pub = names.provider()
    await backend.set_publisher_epoch(pub, 7)
    await backend.set_publisher_epoch(pub, 7)  # the same token again: a no-op
    assert await backend.publisher_epoch(pub) == 7
    with pytest.raises(StoreFenced) as refused:
        await backend.set_publisher_epoch(pub, 6)
    assert (refused.value.token, refused.value.epoch) == (6, 7)
    await backend.set_publisher_epoch(pub, 2**62)
    assert await backend.publisher_epoch(pub) == 2**62
    with pytest.raises(StoreFenced):
        await backend.set_publisher_epoch(pub, 2**62 - 1)


async def test_publisher_writes_need_the_publisher_epoch(
    backend: IndexBackend, names: Names
) -> None:
    pub = names.provider()
    await backend.put_cursor(pub, names.ad(1), token=0)
    await backend.put_announce(pub, Announce(names.ad(1), ("/a",)), token=0)
    await backend.set_publisher_epoch(pub, 3)
    for token in (0, 2, 4):
        with pytest.raises(StoreFenced) as refused:
            await backend.put_cursor(pub, names.ad(9), token=token)
        assert (refused.value.token, refused.value.epoch) == (token, 3)
        with pytest.raises(StoreFenced):
            await backend.put_announce(pub, Announce(names.ad(9)), token=token)
    assert await backend.cursor(pub) == names.ad(1)  # a stale owner wrote nothing
    assert await backend.announce(pub) == Announce(names.ad(1), ("/a",))
    await backend.put_cursor(pub, names.ad(2), token=3)
    await backend.put_announce(pub, Announce(names.ad(2)), token=3)
    assert await backend.cursor(pub) == names.ad(2)
    assert await backend.announce(pub) == Announce(names.ad(2))


async def test_publisher_and_provider_epochs_are_apart(backend: IndexBackend, names: Names) -> None:
    peer = names.provider()  # one peer ID, publisher of its own ads
    await backend.set_publisher_epoch(peer, 5)
    assert await backend.epoch(peer) == 0
    assert await backend.commit_ad(AdCommit(peer, names.ad(1), None, None), 0) == "applied"
    with pytest.raises(StoreFenced):
        await backend.commit_ad(AdCommit(peer, names.ad(2), names.ad(1), None), 5)
    await backend.set_epoch(peer, 9)
    assert await backend.publisher_epoch(peer) == 5
    await backend.put_cursor(peer, names.ad(1), token=5)
    with pytest.raises(StoreFenced):
        await backend.put_cursor(peer, names.ad(2), token=9)
    assert await backend.cursor(peer) == names.ad(1)
    assert await backend.latest(peer) == names.ad(1)
