"""One conformance suite for every ``KVStore`` backend: LevelDB (``KV``) and ``MemoryKV``.

Every test takes the parametrized ``kv`` fixture (``conftest.py``), so both backends must agree
with the rules in ``store/protocol.py``.  ``test_kv_model.py`` compares both against a dict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import KV, Add, AddEach, Discard, KVStore, StoreClosed, StoreError, Write

KEYS = [b"", b"\x00", b"o\xff", b"p", b"p\x00", b"p1", b"p\xff", b"p\xff\xff", b"q", b"\xff"]


def fill(kv: KVStore) -> None:
    kv.write_batch([(k, b"v" + k) for k in KEYS])


def keys(
    kv: KVStore, prefix: bytes, reverse: bool = False, start: bytes | None = None
) -> list[bytes]:
    return [k for k, _ in kv.scan(prefix, reverse=reverse, start=start)]


def test_put_get_overwrite_delete(kv: KVStore) -> None:
    assert kv.get(b"k") is None
    kv.put(b"k", b"1")
    kv.put(b"k", b"2")
    assert kv.get(b"k") == b"2"
    kv.put(b"empty", b"")
    assert kv.get(b"empty") == b""  # an empty value is not an absent key
    kv.delete(b"k")
    kv.delete(b"never-there")
    assert kv.get(b"k") is None


def test_a_batch_applies_in_order(kv: KVStore) -> None:
    kv.write_batch([(b"a", b"1"), (b"a", None), (b"b", b"1"), (b"b", b"2"), (b"c", None)])
    assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"c")) == (None, b"2", None)


def test_prefix_scans_in_byte_order(kv: KVStore) -> None:
    fill(kv)
    expected = [b"p", b"p\x00", b"p1", b"p\xff", b"p\xff\xff"]
    assert keys(kv, b"p") == expected
    assert keys(kv, b"p", reverse=True) == expected[::-1]
    assert list(kv.scan(b"p1")) == [(b"p1", b"vp1")]
    assert keys(kv, b"p\xff") == [b"p\xff", b"p\xff\xff"]
    assert keys(kv, b"r") == [] and keys(kv, b"r", reverse=True) == []
    for key in KEYS:  # one-key ranges too (plyvel's own reverse range iterator misses some)
        assert keys(kv, key, reverse=True) == keys(kv, key)[::-1] != []


def test_empty_prefix_and_0xff_keys(kv: KVStore) -> None:
    fill(kv)
    assert keys(kv, b"") == sorted(KEYS)
    assert keys(kv, b"", reverse=True) == sorted(KEYS, reverse=True)
    assert keys(kv, b"\xff") == [b"\xff"]
    kv.write_batch([(b"\xff\xff", b"x"), (b"\xff\xff\xff", b"y")])
    assert keys(kv, b"\xff\xff") == [b"\xff\xff", b"\xff\xff\xff"]
    assert keys(kv, b"\xff", reverse=True) == [b"\xff\xff\xff", b"\xff\xff", b"\xff"]
    assert kv.get(b"") == b"v"


def test_scan_from_a_start_key(kv: KVStore) -> None:
    fill(kv)
    assert keys(kv, b"p", start=b"p1") == [b"p1", b"p\xff", b"p\xff\xff"]
    assert keys(kv, b"p", start=b"p0") == [b"p1", b"p\xff", b"p\xff\xff"]  # need not exist
    assert keys(kv, b"p", start=b"a") == keys(kv, b"p")  # before the prefix: the whole prefix
    assert keys(kv, b"p", start=b"q") == []
    assert keys(kv, b"p", reverse=True, start=b"p1") == [b"p1", b"p\x00", b"p"]
    assert keys(kv, b"p", reverse=True, start=b"z") == keys(kv, b"p", reverse=True)
    assert keys(kv, b"p", reverse=True, start=b"o") == []
    assert keys(kv, b"", start=b"\xff") == [b"\xff"]
    assert keys(kv, b"\xff", reverse=True, start=b"\xff") == [b"\xff"]


def test_a_scan_is_a_snapshot(kv: KVStore) -> None:
    fill(kv)
    scan = kv.scan(b"p")
    assert next(scan) == (b"p", b"vp")
    kv.write_batch([(b"p2", b"new"), (b"p\xff", None)])
    assert [k for k, _ in scan] == [b"p\x00", b"p1", b"p\xff", b"p\xff\xff"]
    assert keys(kv, b"p") == [b"p", b"p\x00", b"p1", b"p2", b"p\xff\xff"]


def test_a_batch_whose_iterator_fails_applies_nothing(kv: KVStore) -> None:
    kv.put(b"a", b"old")
    before = kv.version

    def writes() -> Iterator[Write]:
        yield (b"a", b"new")
        yield (b"m", Add(b"xx"))
        yield (b"b", b"new")
        raise ValueError("the producer failed midway")

    with pytest.raises(ValueError, match="midway"):
        kv.write_batch(writes())
    assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"m")) == (b"old", None, None)
    assert kv.version == before


@pytest.mark.parametrize("set_op", [True, False])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ((b"z", 5), TypeError),  # not a value
        (("str key", b"v"), TypeError),
        ((b"m", Add(b"12345")), StoreError),  # 4 or 6 bytes are no set of 5-byte members
    ],
)
def test_a_bad_write_applies_nothing(
    kv: KVStore, bad: Write, error: type[Exception], set_op: bool
) -> None:
    kv.put(b"m", b"aabb")
    extra: list[Write] = [(b"m", Add(b"cc"))] if set_op else []
    with pytest.raises(error):
        kv.write_batch([(b"a", b"1"), *extra, bad, (b"b", b"1")])
    assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"m")) == (None, None, b"aabb")


def test_member_sets(kv: KVStore) -> None:
    kv.write_batch([(b"s", Add(b"bb")), (b"s", Add(b"aa")), (b"s", Add(b"bb"))])
    assert kv.get(b"s") == b"aabb"  # distinct members, in byte order
    kv.write_batch([(b"s", Add(b"\xff\xff")), (b"s", Discard(b"aa")), (b"s", Discard(b"zz"))])
    assert kv.get(b"s") == b"bb\xff\xff"
    kv.write_batch([(b"s", Discard(b"bb")), (b"s", Discard(b"\xff\xff"))])
    assert kv.get(b"s") is None  # an emptied set deletes its key
    kv.write_batch([(b"gone", Discard(b"aa"))])
    assert kv.get(b"gone") is None


def test_add_each_is_an_add_per_suffix(kv: KVStore) -> None:
    kv.write_batch([(b"s1", Add(b"bb")), (b"s3", Add(b"aa"))])
    # Alone in its batch but for an unrelated write: the path a backend may apply apart.
    kv.write_batch([(b"x", b"1"), (b"s", AddEach(b"aa", [b"1", b"2", b"1", b"3"]))])
    assert [kv.get(b"s%d" % i) for i in (1, 2, 3)] == [b"aabb", b"aa", b"aa"]
    assert kv.get(b"x") == b"1"
    version = kv.version
    kv.write_batch([(b"s", AddEach(b"aa", [b"1", b"2"]))])  # nothing new: no member changes
    assert [kv.get(b"s%d" % i) for i in (1, 2)] == [b"aabb", b"aa"] and kv.version != version
    # With another write to one of its keys, the writes apply in batch order.
    kv.write_batch([(b"s2", Discard(b"aa")), (b"s", AddEach(b"cc", [b"2", b"4"]))])
    assert (kv.get(b"s2"), kv.get(b"s4")) == (b"cc", b"cc")
    kv.write_batch([(b"s", AddEach(b"dd", [b"4", b"5"])), (b"s4", None)])
    assert (kv.get(b"s4"), kv.get(b"s5")) == (None, b"dd")
    kv.write_batch([(b"s", AddEach(b"ee", [b"5"])), (b"s", AddEach(b"ff", [b"5", b"6"]))])
    assert (kv.get(b"s5"), kv.get(b"s6")) == (b"ddeeff", b"ff")
    kv.put(b"s8", b"1")
    with pytest.raises(StoreError):  # b"1" is no set of 2-byte members: nothing applies
        kv.write_batch([(b"x", b"2"), (b"s", AddEach(b"zz", [b"7", b"8"]))])
    assert (kv.get(b"x"), kv.get(b"s7")) == (b"1", None)


def test_discard_unless_a_guard_key_exists(kv: KVStore) -> None:
    kv.write_batch([(b"s", Add(b"aa")), (b"s", Add(b"bb")), (b"guard-a", b"")])
    kv.write_batch([(b"s", Discard(b"aa", unless=b"guard-a"))])
    assert kv.get(b"s") == b"aabb"  # the guard exists: kept
    kv.write_batch([(b"s", Discard(b"bb", unless=b"guard-b"))])
    assert kv.get(b"s") == b"aa"  # no guard: removed
    kv.write_batch([(b"guard-a", None), (b"s", Discard(b"aa", unless=b"guard-a"))])
    assert kv.get(b"s") is None  # the guard deleted earlier in the same batch
    kv.write_batch([(b"s", Add(b"cc")), (b"g", b""), (b"s", Discard(b"cc", unless=b"g"))])
    assert kv.get(b"s") == b"cc"  # the guard written earlier in the same batch


def test_set_operations_and_plain_writes_to_one_key_apply_in_order(kv: KVStore) -> None:
    kv.put(b"s", b"aa")
    kv.write_batch([(b"s", b"bb"), (b"s", Add(b"cc"))])
    assert kv.get(b"s") == b"bbcc"
    kv.write_batch([(b"s", Add(b"dd")), (b"s", b"zz")])
    assert kv.get(b"s") == b"zz"
    kv.write_batch([(b"s", Discard(b"zz")), (b"s", b"zz"), (b"s", Add(b"zz"))])
    assert kv.get(b"s") == b"zz"  # re-adding the value the store held still writes it


def test_version_moves_with_every_applied_batch(kv: KVStore) -> None:
    v0 = kv.version
    kv.put(b"a", b"1")
    v1 = kv.version
    kv.write_batch([])
    assert v0 != v1 != kv.version
    v2 = kv.version
    with pytest.raises(StoreError):
        kv.write_batch([(b"a", Add(b"xy"))])  # b"1" is no set of 2-byte members
    assert kv.version == v2


def test_concurrent_batches_never_lose_members(kv: KVStore) -> None:
    def add(member: bytes) -> None:
        for i in range(100):
            kv.write_batch([(b"k%d" % (i % 7), Add(member)), (b"other", b"x")])

    threads = [threading.Thread(target=add, args=(bytes([n, n]),)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(7):
        assert kv.get(b"k%d" % i) == b"".join(bytes([n, n]) for n in range(6))


def test_everything_raises_store_closed_after_close(kv: KVStore) -> None:
    kv.put(b"a", b"1")
    kv.close()
    kv.close()  # twice is harmless
    uses: list[Callable[[], object]] = [
        lambda: kv.get(b"a"),
        lambda: kv.put(b"a", b"2"),
        lambda: kv.delete(b"a"),
        lambda: kv.write_batch([(b"a", Add(b"x"))]),
        lambda: list(kv.scan(b"")),
    ]
    for use in uses:
        with pytest.raises(StoreClosed):
            use()


def test_the_context_manager_closes(kv: KVStore) -> None:
    with kv as same:
        assert same is kv
    with pytest.raises(StoreClosed):
        kv.get(b"a")


def test_leveldb_compact_reclaims_deleted_space(tmp_path: Path) -> None:
    def disk() -> int:
        return sum(f.stat().st_size for f in (tmp_path / "db").iterdir())

    with KV(tmp_path / "db") as kv:
        kv.write_batch([(b"k%06d" % i, bytes(200)) for i in range(20_000)])
        kv.compact()
        full = disk()
        kv.write_batch([(b"k%06d" % i, None) for i in range(20_000)])
        kv.compact()
        assert disk() < full / 10
        assert list(kv.scan(b"")) == []
