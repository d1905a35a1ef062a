"""Whole ``indexer daemon`` nodes on the cluster beside the raw cluster and one embedded node.

``daemons(valkey, etcd, tmp)`` runs after ``bench.cluster``'s backend figures, on the same
Valkey 3+3 cluster and a 3-member etcd that ``bench.cluster.run`` started (and stops).  In one
trio run:

- ``PUBLISHERS`` publishers (``indexer.publisher.chain.Publisher``, the default entries chunk
  size) each build a chain of ``ADS`` ads of ``PER_AD`` multihashes; this process serves them
  (``ipnisync_handler`` on ``serve_tcp``, 127.0.0.1, no delay) for every configuration alike.
- ``raw_sadd``: pipelined ``SADD i<mh> <vk:8>`` of exactly the chains' index keys, in pipelines
  of one chunk (best of ``ROUNDS``, the cluster flushed before and after each): the limit.
- ``ingest``: for 1, 2 and 3 cluster daemons (``--config`` with a ``[cluster]`` section: a fresh
  etcd root and fresh LevelDB staging dirs each; the cluster ``FLUSHALL``ed first), every node
  started and joined, then one announce per publisher to the first node (the cluster holds
  announces), timed until every publisher's head ad has its done marker
  (``ClusterBackend.done``; a provider's ads are committed in chain order).  Beside them ONE
  daemon without ``[cluster]`` (embedded LevelDB) ingests the same chains, timed until its admin
  ``/publishers`` shows every head as ``latest_processed``.  Each cluster figure is given as a
  ratio to ``raw_sadd`` and to the single node; ``applied_per_node`` is how the ads spread, and
  the daemons' CPU use in the window (``/proc``) says where the time went.  ``raw_sadd`` is one
  Python client: its CPU use is given too (near 1.0 core, it is the client's limit, which
  several daemons together can pass).
- ``memory``: primaries' ``used_memory`` after the daemons' ingest minus after the flush, per
  (multihash, context) indexed (each multihash is in one context here).
- ``find``: with the 3-node cluster still up, ``bench.find``'s load generator (``CONNECTIONS``
  keep-alive connections, one request in flight each) against the first node's find URL:
  ``GET /health`` (the empty endpoint), ``GET /multihash/<b58>`` and ``POST /multihash`` of
  ``BATCH``; beside them raw pipelined ``SMEMBERS`` of the same index keys in pipelines of
  ``BATCH`` (what a find reads first) and ``ClusterBackend.lookup_many`` of the same batches.

Rules: every server binds 127.0.0.1; each daemon logs to a file (a pipe would fill); every wait
is bounded (``LIMIT``); every daemon this module starts is stopped (SIGTERM, then SIGKILL) and
every publisher closed on the way out, failures included.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import base58
import coredis
import httpx
import msgspec
import trio
from coredis.connection import TCPLocation

from bench.find import BATCH, _check, _cpu, _get, _load, _post
from indexer.publisher.chain import Publisher
from store.cluster import ClusterBackend, keys, open_cluster
from sync import Link, Message
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from tests.cluster.daemon import DaemonProcess, cluster_config, until
from tests.cluster.etcd import EtcdCluster
from tests.cluster.valkey import ValkeyCluster, resp_call

__all__ = ["daemons", "used_memory"]

PUBLISHERS = 8
ADS = 4
PER_AD = 5_000
NODE_COUNTS = (1, 2, 3)
ROUNDS = 2
LOOKUPS = 20_000
POOL = 2_000
LIMIT = 120.0  # seconds: any one wait
TTL = 5  # the nodes' lease, seconds
INTERVAL = 0.3  # the nodes' rebalancing and announce-check interval
Node = DaemonProcess
RAW_VK = b"\x00\x00\x00\x01\x00\x00\x00\x01"  # 8 bytes, like a value key


def _mh(p: int, i: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(b"node-bench-%d-%d" % (p, i)).digest()


def used_memory(cluster: ValkeyCluster) -> int:
    """Sum of ``used_memory`` over the live primaries."""
    total = 0
    for n in cluster.live():
        if n.port in cluster.replica_of:
            continue
        reply = resp_call(n.port, "INFO", "memory")
        assert isinstance(reply, bytes)
        for line in reply.decode().splitlines():
            if line.startswith("used_memory:"):
                total += int(line.split(":")[1])
    return total


def _flush(cluster: ValkeyCluster) -> None:
    for n in cluster.live():
        if n.port not in cluster.replica_of:
            resp_call(n.port, "FLUSHALL", "SYNC", timeout=30.0)


@contextmanager
def _nodes(
    base: Path, count: int, valkey: ValkeyCluster | None, etcd: EtcdCluster | None
) -> Iterator[list[Node]]:
    """``count`` started daemons (cluster nodes with ``valkey``, else embedded); stopped after."""
    root = f"/bench{uuid.uuid4().hex[:12]}/ipni"
    nodes: list[Node] = []
    try:
        for i in range(count):
            cluster = ""
            if valkey is not None and etcd is not None:
                endpoints = ",".join(etcd.endpoints)
                cluster = cluster_config(
                    valkey.url, endpoints, f"n{i}", root=root, lease_ttl=TTL, interval=INTERVAL
                )
            nodes.append(Node(base / f"n{i}", cluster))
        for node in nodes:
            node.ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Chains:
    """The publishers' chains, and their servers on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        self.pubs: list[Publisher] = []
        self.addrs: list[str] = []
        self.heads: list[Link] = []
        try:
            for p in range(PUBLISHERS):
                pub = Publisher.init(base / f"pub{p}", ["/ip4/10.0.0.9/tcp/4001"])
                self.pubs.append(pub)
                for a in range(ADS):
                    mhs = [_mh(p, a * PER_AD + i) for i in range(PER_AD)]
                    head = pub.add(b"ctx-%d-%d" % (p, a), mhs, bitswap()).link
                self.heads.append(head)
        except BaseException:
            self.close()
            raise
        self.chunk = pub.store.config().chunk_size

    def multihashes(self) -> list[bytes]:
        return [_mh(p, i) for p in range(PUBLISHERS) for i in range(ADS * PER_AD)]

    async def serve(self, nursery: trio.Nursery) -> None:
        for pub in self.pubs:
            served = await nursery.start(serve_tcp, ipnisync_handler(pub), "127.0.0.1", 0)
            self.addrs.append(f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http")

    async def announce(self, node: Node) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for pub, head, addr in zip(self.pubs, self.heads, self.addrs, strict=True):
                message = Message.create(head, [addr], pub.peer_id)
                url = f"{node.info['ingest_url']}/announce"
                r = await client.put(url, content=message.to_cbor())
                assert r.status_code == 204, r.text

    def close(self) -> None:
        for pub in self.pubs:
            pub.close()


async def _raw_sadd(client: coredis.RedisCluster[bytes], mhs: list[bytes], chunk: int) -> None:
    for at in range(0, len(mhs), chunk):
        async with client.pipeline(transaction=False) as pipe:
            for mh in mhs[at : at + chunk]:
                pipe.sadd(keys.index(mh), [RAW_VK])


async def _raw_smembers(client: coredis.RedisCluster[bytes], batches: list[list[bytes]]) -> None:
    for batch in batches:
        async with client.pipeline(transaction=False) as pipe:
            pending = [pipe.smembers(keys.index(mh)) for mh in batch]
        assert all([await r for r in pending]), "an indexed multihash has no value key"


async def _lookups(backend: ClusterBackend, batches: list[list[bytes]]) -> None:
    for batch in batches:
        assert all(await backend.lookup_many(batch)), "an indexed multihash was not found"


async def _timed(work: Awaitable[None]) -> float:
    start = time.perf_counter()
    await work
    return time.perf_counter() - start


async def _cluster_ingest(
    chains: Chains, nodes: list[Node], backend: ClusterBackend
) -> tuple[float, float]:
    """Seconds (and daemon CPU cores) from the announces to every head ad done in the cluster."""
    for node in nodes:

        async def joined(node: Node = node) -> bool:
            return bool(node.events("joined"))

        await until(joined, LIMIT, f"{node.data.name} joined", poll=0.02)
    providers = [pub.peer_id.raw for pub in chains.pubs]

    async def done() -> bool:
        for provider, head in zip(providers, chains.heads, strict=True):
            if await backend.done(provider, head.raw) is None:
                return False
        return True

    return await _ingest_window(chains, nodes, done, "every head ad done in the cluster")


async def _ingest_window(
    chains: Chains, nodes: list[Node], done: Callable[[], Awaitable[bool]], what: str
) -> tuple[float, float]:
    """(seconds, CPU cores the daemons used) from the announces to the first node to ``done``."""
    cpu = sum(_cpu(n.proc.pid) for n in nodes)
    start = time.perf_counter()
    await chains.announce(nodes[0])
    await until(done, LIMIT, what, poll=0.02)
    elapsed = time.perf_counter() - start
    return elapsed, (sum(_cpu(n.proc.pid) for n in nodes) - cpu) / elapsed


async def _single_ingest(chains: Chains, node: Node) -> tuple[float, float]:
    """Seconds from the announces to every head ``latest_processed`` on the embedded node."""
    pairs = zip(chains.pubs, chains.heads, strict=True)
    heads = {str(pub.peer_id): str(head) for pub, head in pairs}
    async with httpx.AsyncClient(timeout=10) as client:

        async def done() -> bool:
            r = await client.get(f"{node.info['admin_url']}/publishers")
            r.raise_for_status()
            rows = {row["publisher"]: row["latest_processed"] for row in r.json()}
            return all(rows.get(p) == head for p, head in heads.items())

        return await _ingest_window(chains, [node], done, "every head processed (single node)")


def _applied(nodes: list[Node]) -> list[int]:
    return [
        sum(1 for r in n.events("ad committed") if r.get("outcome") == "applied") for n in nodes
    ]


async def _find(
    node: Node, mhs: list[bytes], client: coredis.RedisCluster[bytes], backend: ClusterBackend
) -> dict[str, Any]:
    rng = random.Random(7)
    known = rng.sample(mhs, POOL)
    batches = [rng.sample(mhs, BATCH) for _ in range(POOL // 10)]
    requests = {
        "empty": [_get("/health")],
        "find": [_get("/multihash/" + base58.b58encode(mh).decode()) for mh in known],
        "batch": [_post("/multihash", msgspec.json.encode({"Multihashes": b})) for b in batches],
    }
    port = int(str(node.info["find_url"]).rsplit(":", 1)[1].split("/")[0])
    pid = node.proc.pid
    _check(port, requests)
    raw_batches = [rng.sample(mhs, BATCH) for _ in range(LOOKUPS // BATCH)]
    best: dict[str, dict[str, Any]] = {}
    raw = lookup = 0.0
    for _ in range(ROUNDS):
        raw = max(raw, LOOKUPS / await _timed(_raw_smembers(client, raw_batches)))
        lookup = max(lookup, LOOKUPS / await _timed(_lookups(backend, raw_batches)))
        for name, reqs in requests.items():
            result = await trio.to_thread.run_sync(_load, port, pid, reqs)
            if name not in best or result["requests_per_s"] > best[name]["requests_per_s"]:
                best[name] = result
    out: dict[str, Any] = {
        "raw_smembers_pipelined_keys_per_s": round(raw),
        "backend_lookup_many_per_s": round(lookup),
    }
    for name, result in best.items():
        rate = result["requests_per_s"]
        per_mh = rate * (BATCH if name == "batch" else 1)
        row: dict[str, Any] = {"requests_per_s": round(rate)}
        if name != "empty":
            row["multihashes_per_s"] = round(per_mh)
            row["ratio_to_empty"] = round(rate / best["empty"]["requests_per_s"], 3)
            row["ratio_to_raw_smembers"] = round(per_mh / raw, 3)
        row["statuses"] = result["statuses"]
        row["server_cpu_cores"] = round(result["server_cpu_cores"], 2)
        row["client_cpu_cores"] = round(result["client_cpu_cores"], 2)
        out[name] = row
    return out


async def _measure(
    chains: Chains, valkey: ValkeyCluster, etcd: EtcdCluster, tmp: Path
) -> dict[str, Any]:
    mhs = chains.multihashes()
    total = len(mhs)
    out: dict[str, Any] = {}
    client: coredis.RedisCluster[bytes] = coredis.RedisCluster(
        startup_nodes=[TCPLocation(h, p) for h, p in valkey.startup], decode_responses=False
    )
    async with trio.open_nursery() as nursery, client, open_cluster(valkey.startup) as backend:
        await chains.serve(nursery)
        raw_sadd = raw_cpu = 0.0
        for _ in range(ROUNDS):
            _flush(valkey)
            cpu = time.process_time()
            elapsed = await _timed(_raw_sadd(client, mhs, chains.chunk))
            if total / elapsed > raw_sadd:
                raw_sadd, raw_cpu = total / elapsed, (time.process_time() - cpu) / elapsed
        ingest: dict[str, Any] = {}
        for count in NODE_COUNTS:
            _flush(valkey)
            before = used_memory(valkey)
            with _nodes(tmp / f"cluster{count}", count, valkey, etcd) as nodes:
                elapsed, cores = await _cluster_ingest(chains, nodes, backend)
                memory = (used_memory(valkey) - before) / total
                ingest[f"cluster_{count}"] = {
                    "multihashes_per_s": total / elapsed,
                    "seconds": round(elapsed, 2),
                    "daemons_cpu_cores": round(cores, 2),
                    "memory_bytes_per_pair": round(memory, 1),
                    "applied_per_node": _applied(nodes),
                }
                if count == NODE_COUNTS[-1]:
                    out["find"] = await _find(nodes[0], mhs, client, backend)
        with _nodes(tmp / "single", 1, None, None) as [node]:
            elapsed, cores = await _single_ingest(chains, node)
        single = total / elapsed
        for row in ingest.values():
            rate = row["multihashes_per_s"]
            row["ratio_to_raw_sadd"] = round(rate / raw_sadd, 3)
            row["ratio_to_single"] = round(rate / single, 3)
            row["multihashes_per_s"] = round(rate)
        ingest["single_leveldb"] = {
            "multihashes_per_s": round(single),
            "seconds": round(elapsed, 2),
            "daemon_cpu_cores": round(cores, 2),
        }
        ingest["raw_sadd_same_keys_per_s"] = round(raw_sadd)
        # One Python client near 1.0 core is the limit's own bottleneck, not the cluster's.
        ingest["raw_sadd_client_cpu_cores"] = round(raw_cpu, 2)
        nursery.cancel_scope.cancel()
    out = {"ingest": ingest, **out}
    out["setup"] = {
        "publishers": PUBLISHERS,
        "ads_per_publisher": ADS,
        "multihashes_per_ad": PER_AD,
        "multihashes": total,
        "chunk_size": chains.chunk,
        "find_batch": BATCH,
        "rounds": ROUNDS,
        "nodes": f"indexer daemon subprocesses, lease_ttl {TTL} s, interval {INTERVAL:g} s",
    }
    return out


def daemons(valkey: ValkeyCluster, etcd: EtcdCluster, tmp: Path) -> dict[str, Any]:
    """The daemon figures (see the module docstring); the cluster is flushed as it goes."""
    chains = Chains(tmp / "pubs")
    try:
        return trio.run(_measure, chains, valkey, etcd, tmp)
    finally:
        chains.close()
