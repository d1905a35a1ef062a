"""The cluster value store (``store.cluster.ClusterBackend``) beside the raw cluster, in one run.

``run()`` starts a real 3-primary + 3-replica Valkey cluster (``tests/cluster/valkey.py``) in a
tmp dir and measures, in one process under trio, with coredis (best of ``ROUNDS`` alternating):

- ``sadd``: raw pipelined ``SADD i<mh> <vk>`` of ``MULTIHASHES`` keys, in pipelines of ``CHUNK``;
  beside ``ingest``: the same count written ingest-shaped through the backend: per ad of
  ``CHUNK`` multihashes, ``allocate``, a fenced ``put_value``, ``add_multihashes`` (its
  replication barrier included) and the fenced ``commit_ad``; ``ingest_ratio`` = ingest / sadd
  (the issue's target: >= 0.5).  ``ingest_no_wait`` is the same with ``wait_replicas=0``.
- ``control``: fenced ``commit_ad`` calls/s, one at a time, with ``WAIT 1`` and without: the
  cost of waiting for a replica on a control write.
- ``get``: raw pipelined ``GET`` of ``LOOKUPS`` string keys in pipelines of ``LOOKUP_BATCH``,
  beside ``lookup``: ``lookup_many`` of as many indexed multihashes in batches of as many
  (records cached for ``record_ttl``), and ``lookup_uncached`` (``record_ttl=0``: two round
  trips per batch); ``lookup_ratio`` = lookup / get (target >= 0.5).
- ``memory``: bytes of primaries' ``used_memory`` per (multihash, context) the runs added.

Then, on the same Valkey cluster and a 3-member etcd (``tests/cluster/etcd.py``) started here,
``daemons``: whole ``indexer daemon`` nodes (1, 2 and 3 in cluster mode, and one embedded) ingest
the same chains and serve finds, beside raw pipelined commands of the same keys
(``bench.cluster_nodes``).  Every server is stopped on the way out, failures included.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import coredis
import trio
from coredis.connection import TCPLocation

from bench.cluster_nodes import daemons, used_memory
from store import ProviderRecord
from store.cluster import AdCommit, ClusterBackend, open_cluster
from tests.cluster.etcd import EtcdCluster
from tests.cluster.valkey import ValkeyCluster, start_cluster

__all__ = ["run"]

MULTIHASHES = 65_536
CHUNK = 16_384
LOOKUPS = 20_000
LOOKUP_BATCH = 100
CONTROL = 300
ROUNDS = 2


def _mh(tag: bytes, i: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(tag + i.to_bytes(8, "big")).digest()


async def _rate(count: int, work: Awaitable[None]) -> float:
    start = time.perf_counter()
    await work
    return count / (time.perf_counter() - start)


async def _raw_sadd(client: coredis.RedisCluster[bytes], tag: bytes) -> None:
    vk = b"raw-" + tag[:4]
    for at in range(0, MULTIHASHES, CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(at, at + CHUNK):
                pipe.sadd(b"i" + _mh(tag, i), [vk])


async def _ingest(b: ClusterBackend, tag: bytes, provider: bytes) -> None:
    token = 1
    await b.set_epoch(provider, token)
    previous = None
    for n, at in enumerate(range(0, MULTIHASHES, CHUNK)):
        ctx = b"ctx-%d" % n
        vk = await b.allocate(provider, ctx)
        await b.put_value(vk, provider, ctx, b"\x80\x12", token=token)
        await b.add_multihashes(vk, [_mh(tag, i) for i in range(at, at + CHUNK)])
        ad = tag + b"-ad%d" % n
        record = ProviderRecord(last_ad=ad)
        await b.commit_ad(AdCommit(provider, ad, previous, record), token)
        previous = ad


async def _control(b: ClusterBackend, provider: bytes) -> None:
    await b.set_epoch(provider, 1)
    previous = None
    for n in range(CONTROL):
        ad = provider + b"-ad%d" % n
        await b.commit_ad(AdCommit(provider, ad, previous, None), 1)
        previous = ad


async def _raw_get(client: coredis.RedisCluster[bytes], tag: bytes) -> None:
    for at in range(0, LOOKUPS, LOOKUP_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(at, at + LOOKUP_BATCH):
                pipe.get(b"g" + _mh(tag, i))


async def _lookups(b: ClusterBackend, tag: bytes) -> None:
    for at in range(0, LOOKUPS, LOOKUP_BATCH):
        found = await b.lookup_many([_mh(tag, i) for i in range(at, at + LOOKUP_BATCH)])
        assert all(found), "a multihash written was not found"


async def _measure(cluster: ValkeyCluster) -> dict[str, Any]:
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, 0.0), value)

    client: coredis.RedisCluster[bytes] = coredis.RedisCluster(
        startup_nodes=[TCPLocation(h, p) for h, p in cluster.startup], decode_responses=False
    )
    pairs = 0
    async with (
        client,
        open_cluster(cluster.startup) as waited,
        open_cluster(cluster.startup, wait_replicas=0) as unwaited,
        open_cluster(cluster.startup, record_ttl=0) as uncached,
    ):
        # String keys for the raw GETs (8-byte values, like a value key).
        async with client.pipeline(transaction=False) as pipe:
            for i in range(LOOKUPS):
                pipe.set(b"g" + _mh(b"get", i), b"12345678")
        before = used_memory(cluster)
        for r in range(ROUNDS):
            tag = b"r%d" % r
            keep("sadd", await _rate(MULTIHASHES, _raw_sadd(client, b"sadd" + tag)))
            keep(
                "ingest",
                await _rate(MULTIHASHES, _ingest(waited, b"ing" + tag, b"\x00\x24p" + tag)),
            )
            keep(
                "ingest_no_wait",
                await _rate(MULTIHASHES, _ingest(unwaited, b"nw" + tag, b"\x00\x24q" + tag)),
            )
            pairs += 3 * MULTIHASHES
            keep("control", await _rate(CONTROL, _control(waited, b"c-w" + tag)))
            keep("control_no_wait", await _rate(CONTROL, _control(unwaited, b"c-n" + tag)))
            keep("get", await _rate(LOOKUPS, _raw_get(client, b"get")))
            keep("lookup", await _rate(LOOKUPS, _lookups(waited, b"ing" + tag)))
            keep("lookup_uncached", await _rate(LOOKUPS, _lookups(uncached, b"ing" + tag)))
    after = used_memory(cluster)
    out: dict[str, Any] = {name: round(value) for name, value in best.items()}
    out["ingest_ratio"] = round(best["ingest"] / best["sadd"], 3)
    out["ingest_no_wait_ratio"] = round(best["ingest_no_wait"] / best["sadd"], 3)
    out["lookup_ratio"] = round(best["lookup"] / best["get"], 3)
    out["lookup_uncached_ratio"] = round(best["lookup_uncached"] / best["get"], 3)
    out["control_wait_cost_ms"] = round(1000 / best["control"] - 1000 / best["control_no_wait"], 3)
    # Raw SADD pairs use the same layout as the backend's: they count.
    out["memory_bytes_per_pair"] = round((after - before) / pairs, 1)
    out["units"] = "per second (control: commit_ad calls; others: multihashes or keys)"
    out["setup"] = {
        "multihashes": MULTIHASHES,
        "chunk": CHUNK,
        "lookups": LOOKUPS,
        "lookup_batch": LOOKUP_BATCH,
        "rounds": ROUNDS,
        "cluster": "3 primaries + 3 replicas, valkey-server on 127.0.0.1",
    }
    return out


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = start_cluster(Path(tmp) / "valkey")
        try:
            etcd = EtcdCluster(Path(tmp) / "etcd")
            etcd.start()
            try:
                out = trio.run(_measure, cluster)
                out["daemons"] = daemons(cluster, etcd, Path(tmp))
                return out
            finally:
                etcd.stop()
        finally:
            cluster.stop()
