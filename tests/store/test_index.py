"""``IndexStore`` on both backends: write plans, lookups, removal, the registry."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from store import KV, IndexStore, KVStore, ProviderRecord, StoreClosed, ValueRecord, value_key
from store.index import ExtendedProviderRecord
from tests.builders import multihash

P1, P2 = b"\x00\x24provider-one", b"\x00\x24provider-two"


def index_with(kv: KVStore, *contexts: tuple[bytes, bytes, list[bytes]]) -> IndexStore[KVStore]:
    """An index holding each (provider, context, multihashes), metadata ``m:<context>``."""
    for provider, ctx, mhs in contexts:
        kv.write_batch(
            [
                *IndexStore.put_value(provider, ctx, b"m:" + ctx),
                *IndexStore.put_multihashes(value_key(provider, ctx), mhs),
            ]
        )
    return IndexStore(kv)


def contexts(index: IndexStore[KVStore], mh: bytes) -> list[bytes]:
    return sorted(r.context_id for r in index.lookup(mh))


def test_put_multihashes_and_lookup(kv: KVStore) -> None:
    a, b, c = multihash(1), multihash(2), multihash(3)
    index = index_with(kv, (P1, b"A", [a, b]), (P1, b"B", [b]), (P2, b"A", [b, c]))
    assert index.lookup(a) == [ValueRecord(P1, b"A", b"m:A")]
    records = index.lookup(b)
    assert {(r.provider, r.context_id) for r in records} == {(P1, b"A"), (P1, b"B"), (P2, b"A")}
    vks = [value_key(r.provider, r.context_id) for r in records]
    assert vks == sorted(vks)  # in value-key order
    assert index.lookup(multihash(4)) == []
    assert index.lookup(b[:-1]) == [] and index.lookup(b + b"\x00") == []  # exact keys only
    assert index.count_keys() == 5


def test_writes_are_idempotent(kv: KVStore) -> None:
    mhs = [multihash(i) for i in range(5)]
    index_with(kv, (P1, b"A", mhs))
    before = list(kv.scan(b""))
    index_with(kv, (P1, b"A", mhs), (P1, b"A", mhs[:2]))  # a replayed batch, a partial one
    assert list(kv.scan(b"")) == before


def test_put_value_redescribes_a_whole_context(kv: KVStore) -> None:
    index = index_with(kv, (P1, b"A", [multihash(1), multihash(2)]))
    assert index.lookup(multihash(2))[0].metadata == b"m:A"  # cached now
    kv.write_batch(IndexStore.put_value(P1, b"A", b"new"))
    assert [r.metadata for r in index.lookup(multihash(1))] == [b"new"]
    assert [r.metadata for r in index.lookup(multihash(2))] == [b"new"]


def test_remove_context_skips_its_keys_at_once(kv: KVStore) -> None:
    shared = multihash(9)
    index = index_with(kv, (P1, b"A", [multihash(1), shared]), (P2, b"B", [shared]))
    assert contexts(index, shared) == [b"A", b"B"]  # both records cached
    kv.write_batch(IndexStore.remove_context(P1, b"A"))
    assert index.lookup(multihash(1)) == []  # dangling: skipped
    assert contexts(index, shared) == [b"B"]
    assert index.value(value_key(P1, b"A")) is None
    assert index.count_keys() == 3  # the dangling keys stay until compaction
    kv.write_batch(IndexStore.put_value(P1, b"A", b"again"))  # re-adding revives the old keys
    assert contexts(index, multihash(1)) == [b"A"]


def test_provider_registry_round_trip(kv: KVStore) -> None:
    index = IndexStore(kv)
    assert index.provider(P1) is None and list(index.providers()) == []
    ep = ExtendedProviderRecord("12D3KooW", ["/ip4/1.2.3.4/tcp/1"], b"\x80\x12")
    one = ProviderRecord(addresses=["/ip4/10.0.0.1/tcp/1"], last_ad=b"cid", last_ad_time=1.5)
    two = ProviderRecord(extended=[ep], context_extended={"QQ==": [ep]}, last_error="boom")
    kv.write_batch([*IndexStore.put_provider(P2, two), *IndexStore.put_provider(P1, one)])
    assert index.provider(P1) == one and index.provider(P2) == two
    assert list(index.providers()) == [(P1, one), (P2, two)]
    kv.write_batch(IndexStore.put_provider(P1, ProviderRecord()))
    assert index.provider(P1) == ProviderRecord()


def test_the_value_cache_is_bounded(kv: KVStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("store.index.CACHE_LIMIT", 3)
    mhs = [multihash(i) for i in range(10)]
    index = index_with(kv, *[(P1, b"c%d" % i, [mh]) for i, mh in enumerate(mhs)])
    for i, mh in enumerate(mhs):
        assert contexts(index, mh) == [b"c%d" % i]
    assert len(index._cache.records) <= 3


def test_lookup_answers_are_shared_and_read_only(kv: KVStore) -> None:
    a, b = multihash(1), multihash(2)
    index = index_with(kv, (P1, b"A", [a, b]))
    first = index.lookup(a)
    assert index.lookup(b) is first  # one member set: the very same cached answer, no copy
    for change in (
        lambda: first.append(first[0]),
        lambda: first.extend(first),
        first.pop,
        first.clear,
        lambda: first.__setitem__(0, first[0]),
        lambda: first.__delitem__(0),
        lambda: first.__iadd__(first),
    ):
        with pytest.raises(TypeError):
            change()
    assert index.lookup(a) == [ValueRecord(P1, b"A", b"m:A")] and index.lookup(a) is first
    copy = list(first)
    copy.append(ValueRecord(P2, b"B", b""))  # a copy is an ordinary list
    assert len(copy) == 2 and index.lookup(a) == first
    assert index.lookup(multihash(3)) == []  # no record: an empty answer, as read-only
    with pytest.raises(TypeError):
        index.lookup(multihash(3)).append(first[0])
    assert index.lookup(multihash(3)) == []


def test_provider_records_written_before_context_override_still_decode(kv: KVStore) -> None:
    class Before(msgspec.Struct):  # the record's fields before ``context_override`` existed
        addresses: list[str]
        context_extended: dict[str, list[ExtendedProviderRecord]]

    ep = ExtendedProviderRecord("12D3KooW", [], b"")
    kv.put(b"r" + P1, msgspec.msgpack.encode(Before(["/ip4/1.1.1.1/tcp/1"], {"QQ==": [ep]})))
    old = IndexStore(kv).provider(P1)
    assert old is not None and old.context_extended == {"QQ==": [ep]}
    assert old.context_override == {} and not old.overrides("QQ==")
    new = msgspec.structs.replace(old, context_override={"QQ==": True, "Qg==": True})
    kv.write_batch(IndexStore.put_provider(P1, new))
    again = IndexStore(kv).provider(P1)
    assert again == new and again.overrides("QQ==")
    assert not again.overrides("Qg==")  # no providers of its own: nothing to override with


def test_allocated_value_keys_are_small_counters_kept_per_pair(
    kv: KVStore, reopen: Callable[[], KV]
) -> None:
    index = IndexStore(kv)
    assert index.allocated(P1, b"A") is None
    a, b, c = index.allocate(P1, b"A"), index.allocate(P1, b"B"), index.allocate(P2, b"A")
    assert [a, b, c] == [n.to_bytes(8, "big") for n in (1, 2, 3)]  # mostly zero bytes: snappy
    assert index.allocate(P1, b"A") == a and index.allocated(P2, b"A") == c
    assert index.allocate(P1 + b"A", b"") != a  # the pair is delimited, not concatenated
    with reopen() as db:
        first = IndexStore(db).allocate(P1, b"A")
    with reopen() as db:  # durable: a replay after a restart finds the same key
        assert IndexStore(db).allocate(P1, b"A") == first
        assert IndexStore(db).allocate(P1, b"B") == (2).to_bytes(8, "big")


def test_removing_an_allocated_context_never_revives_it(kv: KVStore) -> None:
    index = IndexStore(kv)
    old = index.allocate(P1, b"A")
    kv.write_batch(
        [
            *IndexStore.put_value_at(old, P1, b"A", b"m"),
            *IndexStore.put_multihashes(old, [multihash(1), multihash(2)]),
        ]
    )
    assert index.lookup(multihash(1)) == [ValueRecord(P1, b"A", b"m")]
    kv.write_batch(IndexStore.remove_value(old, P1, b"A"))
    assert index.lookup(multihash(1)) == [] and index.allocated(P1, b"A") is None
    assert kv.get(b"G") == b""  # a sweep is pending
    new = index.allocate(P1, b"A")
    assert new != old
    kv.write_batch(
        [*IndexStore.put_value_at(new, P1, b"A", b"again"), *IndexStore.put_multihashes(new, [])]
    )
    assert index.lookup(multihash(2)) == []  # the old member stays dangling: not revived


def test_a_context_indexed_with_its_hashed_key_keeps_it(kv: KVStore) -> None:
    index = index_with(kv, (P1, b"A", [multihash(1)]))  # the hashed write plans
    assert index.allocate(P1, b"A") == value_key(P1, b"A")  # adopted: no duplicate results
    kv.write_batch(IndexStore.put_value_at(value_key(P1, b"A"), P1, b"A", b"new"))
    assert [r.metadata for r in index.lookup(multihash(1))] == [b"new"]
    kv.write_batch(IndexStore.remove_value(value_key(P1, b"A"), P1, b"A"))
    assert index.lookup(multihash(1)) == [] and index.allocated(P1, b"A") is None
    assert index.allocate(P1, b"A") == (1).to_bytes(8, "big")  # a fresh one after removal


def test_remove_provider_batch_is_bounded_and_leaves_others(kv: KVStore) -> None:
    index: IndexStore[KVStore] = IndexStore(kv)
    for i in range(7):
        for provider in (P1, P2):
            vk = index.allocate(provider, b"ctx%d" % i)
            kv.write_batch(
                [
                    *index.put_value_at(vk, provider, b"ctx%d" % i, b"m"),
                    *index.put_multihashes(vk, [multihash(i)]),
                ]
            )
    kv.write_batch(index.put_provider(P1, ProviderRecord(["/ip4/1.2.3.4/tcp/1"])))
    assert index.has_contexts(P1)
    removed = []
    while n := index.remove_provider_batch(P1, 3):
        removed.append(n)
    assert removed == [3, 3, 1]  # never more than the batch
    assert not index.has_contexts(P1) and index.has_contexts(P2)
    assert [r.provider for r in index.lookup(multihash(4))] == [P2]
    assert index.allocated(P1, b"ctx4") is None and index.allocated(P2, b"ctx4") is not None
    kv.write_batch(index.remove_provider_record(P1))
    assert index.provider(P1) is None


def test_lookup_after_close_raises_the_stores_own_error(kv: KVStore) -> None:
    index = index_with(kv, (P1, b"A", [multihash(1)]))
    assert contexts(index, multihash(1)) == [b"A"]  # the read path is set up and cached
    kv.close()
    with pytest.raises(StoreClosed):
        index.lookup(multihash(1))
    with pytest.raises(StoreClosed):
        index.lookup_many([multihash(2)])
