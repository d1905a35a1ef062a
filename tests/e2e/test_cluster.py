"""Three real ``indexer daemon`` nodes on a real 3+3 Valkey cluster and a 3-member etcd.

Several publishers, served from this process with slow entries blocks so ingest is surely under
way, are announced to one node; the cluster spreads them.  Then, mid-ingest: one node is
SIGKILLed, another frozen (SIGSTOP) past its lease and thawed (SIGCONT), and a cluster primary
is SIGKILLed.  Afterwards every chain must be fully indexed, each ad committed ("applied") by
exactly one node and, per provider, in chain order, and every multihash found from every live
node's find API.  A second round adds ads, starts a fourth node mid-ingest (it must take a share)
and SIGTERMs one (it hands its publishers over on the way out), with the same checks.

Every wait is bounded; the servers and daemons bind loopback only, on ports outside the ephemeral
range.
"""

from __future__ import annotations

import math
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import trio

from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from store.cluster import ClusterBackend, open_cluster
from sync import Link, Message
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import multihash
from tests.cluster.daemon import DaemonProcess, cluster_config, free_ports, until
from tests.cluster.etcd import EtcdCluster
from tests.cluster.valkey import HarnessError, ValkeyCluster, start_cluster

PUBLISHERS, ADS, PER_AD = 6, 8, 6  # chunk size 3: two entries blocks per ad
DELAY = 0.06  # per entries block
TTL = 3  # the nodes' lease, seconds


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A cluster of this module's own: a primary is killed here, and no other test's keys."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("valkey-e2e"))
    except HarnessError as exc:
        pytest.fail(f"Valkey cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


class Node(DaemonProcess):
    """One cluster node, started and ready."""

    def __init__(self, base: Path, name: str, valkey: ValkeyCluster, etcd: str, root: str) -> None:
        config = cluster_config(valkey.url, etcd, name, root=root, lease_ttl=TTL, interval=0.3)
        super().__init__(base / name, config, ports=free_ports())
        self.name = name
        self.ready()


def _slow(inner: Handler, ads: set[str]) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path.rsplit("/", 1)[-1] not in ads | {"head"}:
            await trio.sleep(DELAY)  # an entries block
        return await inner(request)

    return handle


class Chains:
    """The publishers, each serving its chain on 127.0.0.1 (slowly)."""

    def __init__(self, base: Path) -> None:
        self.pubs: list[Publisher] = []
        self.addrs: list[str] = []
        for p in range(PUBLISHERS):
            pub = Publisher.init(base / f"pub{p}", ["/ip4/10.0.0.9/tcp/4001"])
            pub.store.set_config(PublisherConfig(chunk_size=3))
            self.pubs.append(pub)
        self.round = 0

    def add_round(self) -> None:
        for p, pub in enumerate(self.pubs):
            for i in range(ADS):
                n = (p * 100 + self.round) * 100 + i
                pub.add(b"c%d" % n, [multihash(1000 * n + j) for j in range(PER_AD)], bitswap())
        self.round += 1

    def multihashes(self) -> list[bytes]:
        return [
            multihash(1000 * ((p * 100 + r) * 100 + i) + j)
            for p in range(PUBLISHERS)
            for r in range(self.round)
            for i in range(ADS)
            for j in range(PER_AD)
        ]

    async def serve(self, nursery: trio.Nursery) -> None:
        for pub in self.pubs:
            ads = {record.cid for record in pub.chain()}
            handler = _slow(ipnisync_handler(pub), ads)
            served = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
            self.addrs.append(f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http")

    async def announce(self, node: Node) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for pub, addr in zip(self.pubs, self.addrs, strict=True):
                head = Link.parse(pub.chain()[0].cid)
                message = Message.create(head, [addr], pub.peer_id)
                r = await client.put(
                    f"{node.info['ingest_url']}/announce", content=message.to_cbor()
                )
                assert r.status_code == 204, r.text

    def ad_order(self) -> dict[str, list[str]]:
        """Per provider (base58), its ads oldest first."""
        return {str(pub.peer_id): [r.cid for r in reversed(pub.chain())] for pub in self.pubs}


@pytest.fixture
async def backend(valkey: ValkeyCluster) -> AsyncIterator[ClusterBackend]:
    async with open_cluster(valkey.startup, retry_for=30.0) as b:
        yield b


async def _committed(backend: ClusterBackend, chains: Chains) -> int:
    """How many ads the cluster has done, over every publisher."""
    count = 0
    for pub in chains.pubs:
        for record in pub.chain():
            if await backend.done(pub.peer_id.raw, Link.parse(record.cid).raw) is not None:
                count += 1
    return count


async def _all_done(backend: ClusterBackend, chains: Chains, limit: float) -> None:
    total = sum(len(pub.chain()) for pub in chains.pubs)

    async def done() -> bool:
        return await _committed(backend, chains) >= total

    await until(done, limit, f"all {total} ads done in the cluster")


def _logged(node: Node, event: str, count: int = 1) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(node.events(event)) >= count

    return check


def _refused(node: Node) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        reasons = [r["reason"] for r in node.events("provider not owned here; will try again")]
        return any(r.startswith(("LeaseLost", "StoreFenced")) for r in reasons)

    return check


def _at_least(backend: ClusterBackend, chains: Chains, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _committed(backend, chains) >= n

    return check


def _takeover(nodes: list[Node], killed: float) -> str:
    """Seconds from the SIGKILL of ``nodes[0]`` to another node's claim of each of its
    publishers (measured, printed: timings are not asserted)."""
    held = {r["publisher"] for r in nodes[0].events("publisher claimed")}
    taken: dict[str, float] = {}
    for node in nodes[1:]:
        for r in node.events("publisher claimed"):
            at = datetime.fromisoformat(r["timestamp"]).timestamp()
            if r["publisher"] in held and at > killed:
                taken[r["publisher"]] = min(taken.get(r["publisher"], math.inf), at - killed)
    return ", ".join(f"{t:.1f} s" for t in sorted(taken.values())) + f" (TTL {TTL} s)"


def _check_exactly_once_in_order(nodes: list[Node], chains: Chains) -> None:
    applied: dict[str, list[tuple[str, str, str]]] = {}  # provider -> (timestamp, ad, node)
    for node in nodes:
        for record in node.events("ad committed"):
            if record["outcome"] == "applied":
                applied.setdefault(record["provider"], []).append(
                    (record["timestamp"], record["ad"], node.name)
                )
    for provider, order in chains.ad_order().items():
        seen = sorted(applied.get(provider, []))
        ads = [ad for _, ad, _ in seen]
        assert len(ads) == len(set(ads)), f"an ad of {provider} was applied twice: {seen}"
        # A SIGKILLed node may die between its commit and its log line: the others are in order.
        assert ads == [ad for ad in order if ad in set(ads)], f"{provider}: out of order: {seen}"


async def _find_everything(nodes: list[Node], chains: Chains) -> None:
    wanted = chains.multihashes()
    owners = {pub.peer_id.raw: str(pub.peer_id) for pub in chains.pubs}
    async with httpx.AsyncClient(timeout=10) as client:
        for node in nodes:
            find = node.info["find_url"]
            for mh in wanted:  # every multihash, from every node
                r = await client.get(f"{find}/multihash/{mh.hex()}")
                assert r.status_code == 200, (node.name, mh.hex(), r.text)
                [result] = r.json()["MultihashResults"]
                ids = [p["Provider"]["ID"] for p in result["ProviderResults"]]
                assert len(ids) == 1 and ids[0] in owners.values(), (node.name, ids)


async def test_nodes_survive_kill_freeze_and_failover_then_join_and_drain(
    tmp_path: Path, valkey: ValkeyCluster, etcd_cluster: EtcdCluster, backend: ClusterBackend
) -> None:
    root = f"/t{uuid.uuid4().hex[:12]}/ipni"
    endpoints = ",".join(etcd_cluster.endpoints)
    chains = Chains(tmp_path)
    chains.add_round()
    nodes = [Node(tmp_path, f"n{i}", valkey, endpoints, root) for i in range(3)]
    try:
        async with trio.open_nursery() as nursery:
            await chains.serve(nursery)
            await chains.announce(nodes[0])  # any node: the cluster holds the announces
            total = PUBLISHERS * ADS
            await until(_at_least(backend, chains, 4), 60, "mid-ingest: a few ads done")
            assert await _committed(backend, chains) < total
            killed_at, killed_wall = trio.current_time(), time.time()
            nodes[0].kill()  # SIGKILL
            nodes[1].signal(signal.SIGSTOP)  # frozen past its lease
            await trio.sleep(TTL + 2)
            nodes[1].signal(signal.SIGCONT)
            primary = valkey.node(valkey.primary_of_slot(0).port)
            await trio.to_thread.run_sync(valkey.kill_primary, primary)
            await _all_done(backend, chains, 120)
            print(f"round 1 indexed {trio.current_time() - killed_at:.1f} s after the SIGKILL")
            print(f"takeover of the killed node's publishers: {_takeover(nodes, killed_wall)}")

            # The thawed node saw its lease gone and joined again.
            await until(_logged(nodes[1], "joined", 2), 30, "n1 joined again")
            assert nodes[1].events("lease lost: publishers dropped; joining again")
            # Thawed mid-work, its workers' next final writes were refused (its lease gone) and
            # they stopped: the ads stayed staged for whoever owns the providers now.
            await until(_refused(nodes[1]), 40, "n1's workers saw their writes refused")
            live = nodes[1:]
            _check_exactly_once_in_order(nodes, chains)
            await _find_everything(live, chains)
            # The operator restarts the dead primary: it comes back as its shard's replica (until
            # then the shard's control writes cannot be replicated: they wait, then 503).
            await trio.to_thread.run_sync(valkey.restart, primary)

            # Round 2: more ads; a node joins mid-ingest, another is stopped (SIGTERM: drain).
            chains.add_round()
            await chains.announce(nodes[2])
            nodes.append(Node(tmp_path, "n3", valkey, endpoints, root))
            await until(_at_least(backend, chains, total + 4), 60, "round 2 under way")
            assert nodes[1].stop() == 0
            assert nodes[1].events("left: every claim handed back")
            await _all_done(backend, chains, 120)
            await until(_logged(nodes[3], "publisher claimed"), 30, "n3 took a share")
            _check_exactly_once_in_order(nodes, chains)
            await _find_everything([nodes[2], nodes[3]], chains)
            nursery.cancel_scope.cancel()
    finally:
        for node in nodes:
            node.kill()
        for pub in chains.pubs:
            pub.close()
        if not all(n.alive() for n in valkey.nodes):
            for n in valkey.nodes:
                if not n.alive():
                    valkey.restart(n)
