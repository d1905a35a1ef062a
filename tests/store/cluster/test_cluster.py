"""What only the cluster backend has: slots, two nodes fencing each other, the record cache's
bound, error translation, and a primary SIGKILLed mid-write (on the session's real cluster)."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import trio

from store import (
    AdOutOfOrder,
    NotReplicated,
    ProviderRecord,
    StoreFenced,
    StoreRejected,
    StoreUnavailable,
)
from store.cluster import AdCommit, Announce, ClusterBackend, PutValue, open_cluster
from store.cluster import keys as ck
from store.cluster.redis_cluster import COMMIT, EPOCH_CHECK
from tests.cluster import valkey
from tests.cluster.valkey import ValkeyCluster, resp_call
from tests.store.cluster.conftest import Names


def _provider_keys(p: bytes) -> list[bytes]:
    return [
        ck.epoch(p),
        ck.provider_sid(p),
        ck.counter(p),
        ck.alloc(p, b"ctx"),
        ck.alloc(p, b"{}{"),
        ck.value(p, b"12345678"),
        ck.registry(p),
        ck.done(p, b"ad}{"),
        ck.latest(p),
        ck.tag(p) + b"w",
    ]


def test_keys_of_one_provider_share_a_slot(valkey_cluster: ValkeyCluster, names: Names) -> None:
    port = valkey_cluster.nodes[0].port
    seen = set()
    for n in range(8):
        p = names.provider(n) + b"}{" * n  # braces in the peer ID bytes change nothing
        slots = {resp_call(port, "CLUSTER", "KEYSLOT", key) for key in _provider_keys(p)}
        assert len(slots) == 1, p
        assert slots == {ck.slot_of(ck.epoch(p))}
        seen |= slots
    assert len(seen) > 1  # providers spread over slots
    for key in [ck.index(names.mh(1)), b"i{x}y", b"i{}z", ck.barrier(9000)]:
        assert resp_call(port, "CLUSTER", "KEYSLOT", key) == ck.slot_of(key)
    assert ck.slot_of(ck.barrier(9000)) == 9000


async def _zombie_is_refused(a: ClusterBackend, b: ClusterBackend, names: Names) -> None:
    """Node A owns the provider (token 1); node B takes it over (token 2); A writes on."""
    p = names.provider()
    vk = await a.allocate(p, b"ctx")
    await a.set_epoch(p, 1)
    assert await a.commit_ad(AdCommit(p, names.ad(1), None, ProviderRecord(last_ad=b"1")), 1)
    await b.set_epoch(p, 2)
    second = AdCommit(p, names.ad(2), names.ad(1), ProviderRecord(last_ad=b"2"))
    assert await b.commit_ad(second, 2) == "applied"
    zombie = AdCommit(
        p, names.ad(3), names.ad(2), ProviderRecord(last_ad=b"zombie"), [PutValue(vk, b"ctx", b"z")]
    )
    with pytest.raises(StoreFenced):
        await a.commit_ad(zombie, 1)
    with pytest.raises(StoreFenced):
        await a.set_epoch(p, 1) if await a.epoch(p) < 1 else await a.set_epoch(p, 0)
    assert await b.latest(p) == names.ad(2)
    assert await b.provider(p) == ProviderRecord(last_ad=b"2")
    assert await b.done(p, names.ad(3)) is None
    assert await b.value(vk) is None


async def test_a_zombie_owner_is_refused(valkey_cluster: ValkeyCluster, names: Names) -> None:
    async with (
        open_cluster(valkey_cluster.startup) as a,
        open_cluster(valkey_cluster.startup) as b,
    ):
        await _zombie_is_refused(a, b, names)


async def test_a_mutant_without_the_epoch_check_fails(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    mutant = COMMIT.replace(EPOCH_CHECK, "")
    assert mutant != COMMIT
    async with (
        open_cluster(valkey_cluster.startup) as a,
        open_cluster(valkey_cluster.startup) as b,
    ):
        a._commit = a.client.register_script(mutant)  # the zombie runs the mutant script
        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            await _zombie_is_refused(a, b, names)
        # The mutant wrote the zombie's ad over B's.
        assert await b.latest(names.provider()) == names.ad(3)


async def test_out_of_order_is_refused_across_nodes(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    p = names.provider()
    async with open_cluster(valkey_cluster.startup) as a:
        with pytest.raises(AdOutOfOrder):
            await a.commit_ad(AdCommit(p, names.ad(2), names.ad(1), None), 0)
        assert await a.latest(p) is None


async def test_a_cached_record_is_bounded_in_age(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    now = [0.0]
    p = names.provider()
    async with (
        open_cluster(valkey_cluster.startup) as a,
        open_cluster(valkey_cluster.startup, record_ttl=1.0, clock=lambda: now[0]) as b,
    ):
        vk = await a.allocate(p, b"ctx")
        await a.put_value(vk, p, b"ctx", b"m")
        await a.add_multihashes(vk, [names.mh(0)])
        assert len(await b.lookup(names.mh(0))) == 1
        await a.remove_value(vk, p, b"ctx")  # another node removes the context
        now[0] = 0.5
        assert len(await b.lookup(names.mh(0))) == 1  # served from the cache, within the bound
        now[0] = 1.01
        assert await b.lookup(names.mh(0)) == []  # never past it
        # A node's own write drops its cached record at once.
        vk2 = await b.allocate(p, b"ctx")
        await b.put_value(vk2, p, b"ctx", b"m")
        await b.add_multihashes(vk2, [names.mh(1)])
        assert len(await b.lookup(names.mh(1))) == 1
        await b.remove_value(vk2, p, b"ctx")
        assert await b.lookup(names.mh(1)) == []


async def test_errors_are_translated_by_class(valkey_cluster: ValkeyCluster, names: Names) -> None:
    with pytest.raises(StoreUnavailable):  # transient: nothing listens there (retried, bounded)
        async with open_cluster([("127.0.0.1", 1)], retry_for=0.3):
            pass
    async with open_cluster(valkey_cluster.startup, retry_for=5.0) as b:
        key = ck.index(names.mh(0))
        port = valkey_cluster.primary_of_slot(ck.slot_of(key)).port
        assert resp_call(port, "SET", key, b"not a set") == "OK"
        start = trio.current_time()
        with pytest.raises(StoreRejected, match="WrongType"):  # permanent: not retried
            await b.add_multihashes(b"12345678", [names.mh(0)])
        assert trio.current_time() - start < 2.0
    # An exception of the body crosses the client's task group as itself, not in a group.
    with pytest.raises(StoreFenced):
        async with open_cluster(valkey_cluster.startup):
            raise StoreFenced(b"p", 1, 2)


async def test_sigkill_of_a_primary_mid_write(valkey_cluster: ValkeyCluster, names: Names) -> None:
    """Ads committed in a chain while their provider's primary is SIGKILLed: the client recovers
    (bounded), every acknowledged write survives, and the chain stays in order."""
    p = names.provider()
    primary = valkey_cluster.primary_of_slot(ck.slot_of(ck.epoch(p)))
    acked: list[tuple[int, float]] = []
    enough, restarted, stop = trio.Event(), trio.Event(), trio.Event()
    after_restart: list[int] = []
    async with open_cluster(valkey_cluster.startup, retry_for=40.0) as b:
        vk = await b.allocate(p, b"ctx")
        await b.set_epoch(p, 1)
        await b.put_value(vk, p, b"ctx", b"m", token=1)

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                await b.add_multihashes(vk, [names.mh(i * 100 + j) for j in range(100)])
                previous = names.ad(i - 1) if i > 1 else None
                record = ProviderRecord(last_ad=names.ad(i))
                assert await b.commit_ad(AdCommit(p, names.ad(i), previous, record), 1)
                acked.append((i, trio.current_time()))
                if len(acked) == 10:
                    enough.set()
                if restarted.is_set():
                    after_restart.append(i)
                    if len(after_restart) == 10:
                        stop.set()

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await enough.wait()
                killed_at = trio.current_time()
                await trio.to_thread.run_sync(valkey_cluster.kill_primary, primary)
                promoted_at = trio.current_time()
                await trio.to_thread.run_sync(valkey_cluster.restart, primary)
                restarted.set()
        gaps = [t1 - t0 for (_, t0), (_, t1) in itertools.pairwise(acked)]
        print(
            f"failover: promoted {promoted_at - killed_at:.1f} s after the kill; "
            f"longest gap between acknowledged ads {max(gaps):.1f} s; {len(acked)} ads"
        )
        assert max(gaps) < 40
        last = acked[-1][0]
        assert [i for i, _ in acked] == list(range(1, last + 1))
        for i in range(1, last + 1):
            assert await b.done(p, names.ad(i)) is not None, i
        assert await b.latest(p) == names.ad(last)
        found = await b.lookup_many(
            [names.mh(i * 100 + j) for i in range(1, last + 1) for j in (0, 99)]
        )
        assert all(len(records) == 1 for records in found)
    valkey_cluster.wait_ok()


async def test_pipelines_find_the_promoted_replica(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    """After a failover, pipelined reads (``lookup_many``) and scans (``publishers``) reach the
    new primary within a short ``retry_for``: the adapter reads the slot layout again before a
    retry (coredis alone kept sending a pipeline to the dead primary for 20 s and more)."""
    mhs = [names.mh(i) for i in range(200)]  # spread over every slot range
    p = names.provider()
    async with open_cluster(valkey_cluster.startup, retry_for=8.0) as b:
        vk = await b.allocate(p, b"ctx")
        await b.put_value(vk, p, b"ctx", b"m")
        await b.add_multihashes(vk, mhs)
        assert all(await b.lookup_many(mhs))
        primary = valkey_cluster.primary_of_slot(ck.slot_of(ck.index(mhs[0])))
        await trio.to_thread.run_sync(valkey_cluster.kill_primary, primary)
        try:
            assert all(await b.lookup_many(mhs))
            await b.publishers()
        finally:
            await trio.to_thread.run_sync(valkey_cluster.restart, primary)
    valkey_cluster.wait_ok()


def test_a_missing_server_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(valkey.HarnessError, match="apt-get install redis-server") as missing:
        valkey.server_binary()
    assert "\n" not in str(missing.value)


def _calls(port: int, command: str) -> int:
    reply = resp_call(port, "INFO", "commandstats")
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    for line in text.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


async def test_providers_scans_each_primary_in_bounded_batches(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    ps = [names.provider(n) for n in range(40)]
    async with open_cluster(valkey_cluster.startup, scan_count=5) as b:
        for p in ps:
            await b.put_provider(p, ProviderRecord(last_ad=p))
        primaries = {n.port for n in valkey_cluster.live() if n.role() == "master"}
        assert len(primaries) == valkey_cluster.primaries
        before = {
            n.port: (_calls(n.port, "scan"), _calls(n.port, "keys")) for n in valkey_cluster.live()
        }
        listed = await b.providers()
        after = {
            n.port: (_calls(n.port, "scan"), _calls(n.port, "keys")) for n in valkey_cluster.live()
        }
    assert [(p, r) for p, r in listed if names.salt in p] == [
        (p, ProviderRecord(last_ad=p)) for p in sorted(ps)
    ]
    for port, (scans, keys_calls) in after.items():
        assert keys_calls == before[port][1]  # never KEYS
        if port in primaries:  # several bounded steps on every primary (40+ keys, COUNT 5)
            assert scans - before[port][0] > 1, port
        else:
            assert scans == before[port][0], port  # replicas are not scanned


def test_keys_of_one_publisher_share_their_own_slot(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    port = valkey_cluster.nodes[0].port
    tags = set()
    for n in range(8):
        pub = names.provider(n) + b"}{" * n
        pub_keys = [ck.pub_epoch(pub), ck.pub_cursor(pub), ck.pub_announce(pub), ck.pub_writes(pub)]
        slots = {resp_call(port, "CLUSTER", "KEYSLOT", key) for key in pub_keys}
        assert slots == {ck.slot_of(ck.pub_epoch(pub))}
        assert ck.pub_tag(pub) != ck.tag(pub)  # apart from the same peer ID's provider keys
        tags.add(ck.pub_tag(pub))
    assert len(tags) == 8


async def test_publisher_writes_wait_for_a_replica(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    """Asking for more replicas than a primary has (one) makes every publisher write fail as
    ``NotReplicated``: each one is followed by ``WAIT``."""
    pub = names.provider()
    async with open_cluster(
        valkey_cluster.startup, wait_replicas=2, wait_ms=20, retry_for=0.2
    ) as b:
        with pytest.raises(NotReplicated):
            await b.set_publisher_epoch(pub, 1)
        with pytest.raises(NotReplicated):
            await b.put_cursor(pub, names.ad(1), token=1)
        with pytest.raises(NotReplicated):
            await b.put_announce(pub, Announce(names.ad(1)), token=1)
        # Applied on the primary all the same (retried later, each write is idempotent).
        assert await b.cursor(pub) == names.ad(1)
    async with open_cluster(valkey_cluster.startup) as b:  # WAIT 1: acknowledged
        await b.put_cursor(pub, names.ad(2), token=1)
        assert await b.cursor(pub) == names.ad(2)


async def test_a_zombie_publisher_owner_is_refused(
    valkey_cluster: ValkeyCluster, names: Names
) -> None:
    pub = names.provider()
    async with (
        open_cluster(valkey_cluster.startup) as a,
        open_cluster(valkey_cluster.startup) as b,
    ):
        await a.set_publisher_epoch(pub, 1)
        await a.put_cursor(pub, names.ad(1), token=1)
        await b.set_publisher_epoch(pub, 2)  # B takes the publisher over
        await b.put_cursor(pub, names.ad(2), token=2)
        await b.put_announce(pub, Announce(names.ad(3), ("/b",)), token=2)
        with pytest.raises(StoreFenced):
            await a.put_cursor(pub, names.ad(9), token=1)
        with pytest.raises(StoreFenced):
            await a.put_announce(pub, Announce(names.ad(9)), token=1)
        with pytest.raises(StoreFenced):
            await a.set_publisher_epoch(pub, 1)
        assert await a.cursor(pub) == names.ad(2)
        assert await a.announce(pub) == Announce(names.ad(3), ("/b",))
