"""``ClusterNode``: one indexer node's part in a cluster: its lease, its publishers, its floors.

The ingester (``indexer.ingest.engine.Ingester``) runs unchanged on a node's local staging; the
node plugs in what a cluster changes: which publishers this node syncs (``owns``), where a
sync may stop (``floor``), where announces go (``relay``) and how ads are applied
(``ClusterApplier``).  Rules it keeps:

- One lease at a time (``Ownership``): joined before the node reports started, renewed in the
  background; once lost (expired, frozen past its TTL, revoked) every claim is void at once,
  ``owns`` is false for every publisher, and the node joins again with a new lease: its new
  claims carry new, larger fencing tokens.  On shutdown it leaves: the lease is revoked, so its
  publishers and providers are free for the other nodes at once (a drain, not a TTL's wait).
- Every ``interval`` seconds (``tick``): the publishers are the cluster's announce records; the
  node takes at most its fair share of them (``ceil(publishers / live nodes)``), hands back what
  is above it, and claims only publishers nobody owns (create-if-absent in etcd).  A publisher it
  claims has its publisher epoch moved to the claim's token.
- Announces: any node writes an accepted announce to the cluster (``relay``, unfenced) before
  it answers 204; each tick the owner of a publisher reads its announce record and syncs the
  head unless it is staged or done here, or was asked for less than ``retry_after`` seconds ago.
- The floor: a publisher's cursor in the cluster is an ad at and below which every ad of its
  chain is applied.  The owner moves it (fenced by the publisher's token) to its local cursor
  (``latest_scanned``) once no walk of that publisher has staged work left here; a node that
  takes the publisher over walks down to it (or to an ad its own staging knows), so nothing
  accepted is lost and nothing applied is re-applied (workers skip ads the cluster has done).
- Failures of etcd or of the cluster inside a tick are logged and the tick is retried at the
  next interval: they never end the node (nor the daemon).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
import trio

from indexer.cluster.etcd import EtcdClient
from indexer.cluster.ownership import DEFAULT_TTL, Claim, Ownership
from indexer.cluster.share import fair_share, plan_rebalance
from indexer.errors import ClusterError, LeaseLost, NotOwner
from indexer.ingest.engine import Ingester
from indexer.ingest.supervise import describe
from staging import StagingArea
from store import StoreError
from store.cluster.protocol import Announce, IndexBackend
from sync import Link, PeerId

__all__ = ["ClusterNode", "NodeStatus"]

log = structlog.get_logger("cluster")


@dataclass(frozen=True)
class NodeStatus:
    """What ``indexer admin cluster`` shows of one node."""

    node: str
    lease: int
    lease_age: float  # seconds since the last good keep-alive was sent
    valid: bool
    publishers: tuple[str, ...]
    providers: tuple[str, ...]  # held by a worker now
    last_error: str | None


@dataclass
class ClusterNode:
    """This node's lease, publisher claims and floors (see the module's rules)."""

    client: EtcdClient
    backend: IndexBackend
    staging: StagingArea
    name: str
    ttl: int = DEFAULT_TTL
    interval: float = 1.0
    retry_after: float = 30.0
    root: str = "/ipni"
    ingester: Ingester | None = None  # set before ``run``
    _ownership: Ownership | None = None
    _publishers: dict[bytes, Claim] = field(default_factory=dict)
    _asked: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    _floors: dict[bytes, bytes] = field(default_factory=dict)
    last_error: str | None = None

    # -- what the ingester asks --

    def ownership(self) -> Ownership:
        """The current lease (``NotOwner`` before the first join)."""
        if self._ownership is None:
            raise NotOwner(f"node {self.name} has not joined the cluster yet")
        return self._ownership

    def owns(self, publisher: bytes) -> bool:
        own = self._ownership
        return publisher in self._publishers and own is not None and own.valid()

    async def floor(self, publisher: PeerId) -> Link | None:
        if not self.owns(publisher.raw):
            raise NotOwner(f"publisher {publisher} is not owned by node {self.name}")
        cursor = await self.backend.cursor(publisher.raw)
        return None if cursor is None else Link(cursor)

    async def relay(self, publisher: PeerId, head: Link, addrs: Sequence[str]) -> None:
        """Make an accepted announce the cluster's before it is answered (any node)."""
        await self.backend.put_announce(publisher.raw, Announce(head.raw, tuple(addrs)))

    def status(self, providers: Sequence[bytes] = ()) -> NodeStatus:
        own = self._ownership
        return NodeStatus(
            self.name,
            own.lease if own else 0,
            trio.current_time() - own.renewed_at if own and own.lease else math.inf,
            bool(own and own.valid()),
            tuple(sorted(str(PeerId(p)) for p in self._publishers)),
            tuple(sorted(str(PeerId(p)) for p in providers)),
            self.last_error,
        )

    # -- the loop --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, report started, tick every ``interval``; join again after a lost lease; leave
        (revoke the lease) when cancelled."""
        started = False
        try:
            while True:
                own = Ownership(self.client, self.name, ttl=self.ttl, root=self.root)
                try:
                    await own.join()
                except ClusterError as exc:
                    self._failed("join", exc)
                    await trio.sleep(self.interval)
                    continue
                self._ownership = own
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(own.keep_alive)
                    if not started:
                        started = True
                        task_status.started()
                    await self._ticks(own)
                    nursery.cancel_scope.cancel()
                self._publishers.clear()
                log.warning("lease lost: publishers dropped; joining again", node=self.name)
        finally:
            self._publishers.clear()
            if self._ownership is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await self._ownership.leave()
                    except ClusterError as exc:
                        log.warning("could not leave; the lease expires", error=describe(exc))

    async def _ticks(self, own: Ownership) -> None:
        while own.valid():
            try:
                await self.tick(own)
                self.last_error = None
            except (ClusterError, StoreError) as exc:  # etcd or the cluster: try next time
                if isinstance(exc, LeaseLost):
                    return
                self._failed("tick", exc)
            with trio.move_on_after(self.interval):
                await own.lost.wait()

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_error = f"{what}: {describe(exc)}"
        log.warning("cluster step failed", node=self.name, step=what, error=describe(exc))

    async def tick(self, own: Ownership) -> None:
        """One round: rebalance the publishers, sync new announces, move the floors."""
        await self._rebalance(own)
        for publisher in list(self._publishers):
            await self._announced(publisher)
        await self._move_floors(own)

    async def _rebalance(self, own: Ownership) -> None:
        nodes = await own.nodes()
        owners = await own.owners("publisher")
        directory = await self.backend.publishers()
        by_name = {str(PeerId(p)): p for p in directory}
        self._publishers = {by_name[r]: c for r, c in owners.items() if c.mine and r in by_name}
        share = fair_share(len(directory), max(1, len(nodes)))
        plan = plan_rebalance([str(PeerId(p)) for p in self._publishers], share)
        for resource in plan.hand_back:
            raw = by_name[resource]
            claim = self._publishers.pop(raw)
            await own.release(claim)
            log.info("publisher handed back", node=self.name, publisher=resource)
        free = [p for r, p in by_name.items() if r not in owners]
        # Nodes try the free publishers in different orders, so they rarely race for one.
        free.sort(key=lambda p: hashlib.blake2b(self.name.encode() + p).digest())
        taken = 0
        for raw in free:
            if taken >= plan.take:
                break
            claim = await own.claim("publisher", str(PeerId(raw)))
            if not claim.mine:
                continue
            await self.backend.set_publisher_epoch(raw, claim.token)
            self._publishers[raw] = claim
            self._asked.pop(raw, None)
            # Only what this node scans from now on moves the floor (never back to a cursor
            # this node's staging kept from an earlier ownership).
            self._floors[raw] = self.staging.publisher(raw).latest_scanned or b""
            taken += 1
            log.info("publisher claimed", node=self.name, publisher=claim.resource,
                     token=claim.token)  # fmt: skip

    async def _announced(self, publisher: bytes) -> None:
        announce = await self.backend.announce(publisher)
        ingester = self.ingester
        if announce is None or ingester is None or not self.owns(publisher):
            return
        if self.staging.is_known(announce.cid) or ingester.is_syncing(publisher):
            return
        now = trio.current_time()
        asked = self._asked.get(publisher)
        if asked is not None and asked[0] == announce.cid and now - asked[1] < self.retry_after:
            return
        self._asked[publisher] = (announce.cid, now)
        ingester.request_sync(PeerId(publisher), list(announce.addrs), Link(announce.cid))

    async def _move_floors(self, own: Ownership) -> None:
        busy = self.staging.open_walk_publishers()  # with the cursor read below: no await between
        cursors = {p: self.staging.publisher(p).latest_scanned for p in self._publishers}
        for publisher, latest in cursors.items():
            claim = self._publishers.get(publisher)
            if publisher in busy or latest is None or claim is None:
                continue
            if self._floors.get(publisher) == latest:
                continue
            own.check()
            await self.backend.put_cursor(publisher, latest, token=claim.token)
            self._floors[publisher] = latest
