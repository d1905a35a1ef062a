"""``ClusterNode``: one indexer node's part in a cluster: its lease, its publishers, its floors.

The ingester (``indexer.ingest.engine.Ingester``) runs unchanged on a node's local staging; the
node plugs in what a cluster changes: which publishers this node syncs (``owns``), where a
sync may stop (``floor``), where announces go (``relay``) and how ads are applied
(``ClusterApplier``).  Rules it keeps:

- One lease at a time (``Ownership``): joined before the node reports started (a first join that
  fails is the daemon's start-up error; a later one is retried every ``interval``), renewed in the
  background; once lost (expired, frozen past its TTL, revoked) every claim is void at once,
  ``owns`` is false for every publisher, and the node joins again with a new lease: its new claims
  carry new, larger fencing tokens. On shutdown it leaves: the lease is revoked, so its publishers
  and providers are free for the other nodes at once (a drain, not a TTL's wait).
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
- Each tick ends by putting this node's ``NodeStatus`` in etcd (``<root>/status/<name>``, on the
  lease) and reading every node's: ``view`` is what ``indexer admin cluster`` shows.
- Failures of etcd or of the cluster inside a tick are logged and the tick is retried at the
  next interval: they never end the node (nor the daemon).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
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
from sync import BadPeerId, Link, PeerId

__all__ = ["ClusterNode", "ClusterView", "NodeStatus"]

log = structlog.get_logger("cluster")

STAGED_EVERY = 5.0  # seconds between counts of the staged ads a node's status shows


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One node as ``indexer admin cluster`` shows it (each node puts its own in etcd, on its
    lease, every tick: a dead node's vanishes with its lease)."""

    node: str
    lease: str  # hex, as etcd names it
    joined: float  # wall clock: when this lease was granted
    renewed: float  # wall clock: when its last good keep-alive was sent
    at: float  # wall clock: when this status was written
    publishers: list[str]
    providers: list[str]  # held by a worker now
    staged_ads: int  # ads staged here and not yet done
    find_url: str = ""
    last_error: str | None = None


class ClusterView(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster as the answering node last read it from etcd (at most ``interval`` old)."""

    node: str  # the node that answers
    at: float
    nodes: list[NodeStatus]
    publishers: int  # in the cluster's announce records
    unowned: list[str]  # publishers nobody owns at the moment


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
    held: Callable[[], Sequence[bytes]] = tuple  # providers a worker holds (the applier's)
    find_url: str = ""
    wall: Callable[[], float] = time.time
    view: ClusterView | None = None  # the last tick's
    _ownership: Ownership | None = None
    _publishers: dict[bytes, Claim] = field(default_factory=dict)
    _asked: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    _floors: dict[bytes, bytes] = field(default_factory=dict)
    _joined_at: float = 0.0
    _staged: tuple[float, int] = (-math.inf, 0)  # when staged ads were counted, and how many
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

    def _status(self, own: Ownership) -> NodeStatus:
        now, mono = self.wall(), trio.current_time()
        if mono - self._staged[0] >= STAGED_EVERY:  # a scan of every stack: not every tick
            count = sum(
                st.count for p in self.staging.providers() for _, st in self.staging.stacks(p)
            )
            self._staged = (mono, count)
        staged = self._staged[1]
        return NodeStatus(
            node=self.name,
            lease=f"{own.lease:x}",
            joined=now - (mono - self._joined_at),
            renewed=now - (mono - own.renewed_at),
            at=now,
            publishers=sorted(str(PeerId(p)) for p in self._publishers),
            providers=sorted(str(PeerId(p)) for p in self.held()),
            staged_ads=staged,
            find_url=self.find_url,
            last_error=self.last_error,
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
                    if not started:  # at start-up: the daemon says so and exits
                        raise ClusterError(f"cannot join the cluster's etcd: {exc}") from None
                    self._failed("join", exc)
                    await trio.sleep(self.interval)
                    continue
                self._ownership, self._joined_at = own, trio.current_time()
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
        unowned = await self._rebalance(own)
        for publisher in list(self._publishers):
            await self._announced(publisher)
        await self._move_floors(own)
        await self._share_status(own, unowned)

    async def _share_status(self, own: Ownership, view: tuple[int, list[str]]) -> None:
        prefix = f"{own.root}/status/".encode()
        status = msgspec.json.encode(self._status(own))
        await self.client.put(prefix + self.name.encode(), status, lease=own.lease)
        nodes = []
        for kv in await self.client.range(prefix, prefix=True):
            try:
                nodes.append(msgspec.json.decode(kv.value, type=NodeStatus))
            except msgspec.DecodeError:
                log.warning("skipped a node status that does not decode", key=str(kv.key[:200]))
        self.view = ClusterView(
            node=self.name, at=self.wall(), nodes=sorted(nodes, key=lambda n: n.node),
            publishers=view[0], unowned=view[1],
        )  # fmt: skip

    async def _rebalance(self, own: Ownership) -> tuple[int, list[str]]:
        """Claim and hand back publishers; the publishers' count and those left unowned."""
        nodes = await own.nodes()
        owners = await own.owners("publisher")
        by_name = _named(await self.backend.publishers())
        directory = list(by_name.values())
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
        mine = {str(PeerId(p)) for p in self._publishers}
        unowned = sorted(r for r in by_name if r not in owners and r not in mine)
        return len(by_name), unowned

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


def _named(publishers: Sequence[bytes]) -> dict[str, bytes]:
    """The publishers by base58 name; a record under bytes that are no peer ID (not ours: the
    cluster may hold anything) is skipped, never the end of a tick."""
    out = {}
    for raw in publishers:
        try:
            out[str(PeerId.from_bytes(raw))] = raw
        except BadPeerId:
            log.warning("skipped an announce record that names no peer ID", key=raw.hex()[:80])
    return out
