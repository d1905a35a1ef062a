"""Ownership on a real 3-member etcd (``indexer.cluster.ownership``): exclusive claims, fencing
tokens that never repeat, lease loss seen at once, and members frozen or killed under it.

Each node is an ``Ownership`` with a client of its own (starting at a different member); the
lease-expiry tests use a 2 s TTL and wait for real time to pass, bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from indexer.cluster.etcd import EtcdClient
from indexer.cluster.ownership import Claim, Ownership
from indexer.errors import LeaseLost
from tests.cluster.etcd import EtcdCluster, closed_endpoint


@asynccontextmanager
async def cluster_nodes(
    cluster: EtcdCluster,
    root: str,
    names: Sequence[str],
    *,
    ttl: int = 10,
    keep_alive: bool = True,
) -> AsyncIterator[list[Ownership]]:
    """Joined nodes, each on a client whose first endpoint differs; keep-alives running."""
    endpoints = cluster.endpoints
    clients = [
        EtcdClient(endpoints[i % 3 :] + endpoints[: i % 3], request_timeout=0.5, deadline=8.0)
        for i in range(len(names))
    ]
    nodes = [Ownership(c, name, ttl=ttl, root=root) for c, name in zip(clients, names, strict=True)]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await node.join()
                if keep_alive:
                    nursery.start_soon(node.keep_alive)
            yield nodes
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                if node.valid():
                    await node.leave()
            for c in clients:
                await c.aclose()


async def claim_until_mine(node: Ownership, resource: str, *, within: float) -> Claim:
    """Claim ``resource`` again and again (50 ms apart) until it is ``node``'s: bounded."""
    with trio.fail_after(within):
        while True:
            claim = await node.claim("provider", resource)
            if claim.mine:
                return claim
            await trio.sleep(0.05)


async def test_a_claim_is_exclusive_under_concurrent_claimers(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    resources = [f"12D3KooW{i:04}" for i in range(40)]
    async with cluster_nodes(etcd_cluster, root, ["n0", "n1", "n2"]) as nodes:
        seen: dict[str, list[tuple[str, Claim]]] = {r: [] for r in resources}

        async def claim(node: Ownership, resource: str) -> None:
            seen[resource].append((node.node, await node.claim("provider", resource)))

        async with trio.open_nursery() as nursery:
            for resource in resources:
                for node in nodes * 2:  # every node twice: a repeat of one's own claim is mine
                    nursery.start_soon(claim, node, resource)
        owners = await nodes[0].owners("provider")
        for resource, answers in seen.items():
            assert len(answers) == 6
            (owner,) = {c.owner for _, c in answers}
            assert {c.token for _, c in answers} == {owners[resource].token}
            assert {name for name, c in answers if c.mine} == {owner}
            assert all(c.resource == resource and c.kind == "provider" for _, c in answers)
            assert owners[resource].owner == owner and owners[resource].mine == (owner == "n0")
        assert set(owners) == set(resources)
        assert await nodes[1].owners("publisher") == {}


async def test_a_token_never_repeats_for_a_reclaimed_key(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["a", "b", "c"]) as nodes:
        tokens: list[int] = []
        stale: Claim | None = None
        for i in range(9):
            node = nodes[i % 3] if i % 2 else nodes[0]  # the same node again, and others
            claim = await node.claim("publisher", "12D3KooWpub")
            assert claim.mine and claim.owner == node.node
            tokens.append(claim.token)
            if stale is not None:
                assert not await nodes[0].release(stale)  # an old claim releases nothing
            assert await node.release(claim)
            assert not await node.release(claim)  # once
            stale = claim if node is nodes[0] else stale
        assert tokens == sorted(set(tokens)), tokens
        assert await nodes[0].owners("publisher") == {}
        other = await nodes[1].claim("publisher", "12D3KooWpub")
        with pytest.raises(ValueError, match="not this node's"):
            await nodes[0].release(await nodes[0].claim("publisher", "12D3KooWpub"))
        assert (await nodes[2].owners("publisher"))["12D3KooWpub"].token == other.token


async def test_an_expired_lease_voids_claims_before_another_node_can_take_them(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    async with (
        cluster_nodes(etcd_cluster, root, ["zombie"], ttl=2, keep_alive=False) as (zombie,),
        cluster_nodes(etcd_cluster, root, ["heir"], ttl=2) as (heir,),
    ):
        old = await zombie.claim("provider", "p1")
        assert old.mine and zombie.valid()
        zombie.check()
        assert not (await heir.claim("provider", "p1")).mine
        granted = zombie.renewed_at
        assert await zombie.renew()  # one renewal, then no more: it is frozen, say
        renewed = zombie.renewed_at
        assert renewed > granted and zombie.deadline == pytest.approx(renewed + 2)
        new = await claim_until_mine(heir, "p1", within=2 + 5)
        takeover = trio.current_time() - renewed
        assert not zombie.valid(), "etcd let another node in while this one thought it owned"
        with pytest.raises(LeaseLost):
            zombie.check()
        assert zombie.lost.is_set() and "TTL" in zombie.lost_reason
        with pytest.raises(LeaseLost):
            await zombie.claim("provider", "p2")
        assert new.token > old.token
        assert heir.valid()  # past its own TTL too: its keep-alive ran
        assert await heir.nodes() == ["heir"]  # the zombie's registration went with its lease
        assert takeover >= 2, f"etcd expired a 2 s lease after {takeover:.2f} s"


async def test_a_restarted_node_does_not_take_its_old_claims_for_its_own(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["n"], keep_alive=False) as (before,):
        old = await before.claim("provider", "p")
        async with cluster_nodes(etcd_cluster, root, ["n"]) as (after,):
            again = await after.claim("provider", "p")
            assert again.owner == "n" and not again.mine and again.token == old.token
            assert not (await after.owners("provider"))["p"].mine
            await before.leave()
            assert (await after.claim("provider", "p")).token > old.token


async def test_a_lease_etcd_dropped_is_seen_lost_by_the_keep_alive(
    etcd_cluster: EtcdCluster, etcd: EtcdClient, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["n"], ttl=3) as (node,):
        claim = await node.claim("provider", "p")
        await etcd.lease_revoke(node.lease)  # as if etcd expired it
        with trio.fail_after(3):
            await node.lost.wait()
        assert "etcd says" in node.lost_reason and not node.valid()
        with pytest.raises(LeaseLost):
            await node.claim("provider", "p")
        assert await etcd.range(node.owner_key("provider", claim.resource)) == []


async def test_keep_alives_failing_past_the_ttl_void_the_claims(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["cut-off"], ttl=2) as (node,):
        await node.claim("provider", "p")
        node.client.endpoints = [closed_endpoint()]  # etcd unreachable from now on
        with trio.fail_after(2 + 2):
            await node.lost.wait()
        assert trio.current_time() <= node.renewed_at + 2 + 0.3  # no later than etcd expires it
        assert "TTL" in node.lost_reason and not node.valid()
        with pytest.raises(LeaseLost):
            node.check()
        node.client.endpoints = etcd_cluster.endpoints


async def test_a_claim_on_a_lease_etcd_forgot_is_lease_lost(
    etcd_cluster: EtcdCluster, etcd: EtcdClient, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["n"], keep_alive=False) as (node,):
        await etcd.lease_revoke(node.lease)
        assert node.valid()  # it cannot know yet...
        with pytest.raises(LeaseLost):
            await node.claim("provider", "p")  # ...until etcd refuses the lease
        assert node.lost.is_set() and not node.valid()


async def test_claims_go_on_through_a_frozen_member_and_a_killed_leader(
    etcd_cluster: EtcdCluster, root: str
) -> None:
    async with cluster_nodes(etcd_cluster, root, ["n0", "n1", "n2"], ttl=5) as nodes:
        frozen = 0  # nodes[0]'s client sends to member 0 first
        with etcd_cluster.paused(frozen):
            claim = await nodes[0].claim("provider", "during-pause")
            assert claim.mine and nodes[0].client.current != frozen
        leader = etcd_cluster.leader()
        etcd_cluster.kill(leader)
        try:
            claims = [await n.claim("provider", f"during-kill-{n.node}") for n in nodes]
            assert all(c.mine for c in claims)
            owners = await nodes[leader].owners("provider")
            assert {c.resource for c in claims} <= set(owners)
        finally:
            await trio.to_thread.run_sync(etcd_cluster.restart, leader)
        assert all(n.valid() for n in nodes)  # the leases lived through it


async def test_leave_hands_everything_back(etcd_cluster: EtcdCluster, root: str) -> None:
    async with cluster_nodes(etcd_cluster, root, ["stay", "go"]) as (stay, go):
        for r in ("a", "b"):
            await go.claim("provider", r)
        await go.claim("publisher", "c")
        assert await stay.nodes() == ["go", "stay"]
        await go.leave()
        assert not go.valid() and go.lost_reason == "left"
        assert await stay.owners("provider") == {} and await stay.owners("publisher") == {}
        assert await stay.nodes() == ["stay"]
        assert (await stay.claim("provider", "a")).mine


async def test_bad_names_and_an_unjoined_node_are_refused(etcd: EtcdClient) -> None:
    node = Ownership(etcd, "n")
    with pytest.raises(LeaseLost, match="not joined"):
        node.check()
    with pytest.raises(LeaseLost):
        await node.claim("provider", "p")
    for bad in ("", "a/b", "x" * 300, "sp ace", "\u00e9"):
        with pytest.raises(ValueError, match="resource"):
            node.owner_key("provider", bad)
    with pytest.raises(ValueError, match="kind"):
        node.owner_key("nope", "p")  # type: ignore[arg-type]
    for kwargs in ({"ttl": 0}, {"root": "ipni"}, {"root": "/ipni/"}):
        with pytest.raises(ValueError):
            Ownership(etcd, "n", **kwargs)
    with pytest.raises(ValueError, match="node name"):
        Ownership(etcd, "a/b")
