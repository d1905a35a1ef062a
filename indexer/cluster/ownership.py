"""Who owns which provider and publisher: one etcd lease per node, claims fenced by revision.

The keys (under ``root``, ``/ipni`` by default)::

    /ipni/node/<name>                 the node registry: this node's name, on its lease
    /ipni/owner/provider/<peer-id>    the owner's node name, on the owner's lease
    /ipni/owner/publisher/<peer-id>

Rules it keeps:
- A node holds one lease (``ttl`` seconds, 10 by default), granted by ``join`` and renewed by
  ``keep_alive`` every ``ttl / 3``; every key it writes is attached to it, so a dead node's claims
  and registration vanish with its lease, by etcd, with no help from anyone.
- ``claim`` is ONE txn: "if the key's create revision is 0, put my name on my lease; read it back
  either way".  Its ``token`` is the key's create revision: unique to that creation, strictly
  larger for every later one, so a store can refuse a write carrying an older token (fencing).
  The txn is safe to repeat: a claim whose reply was lost comes back ``mine`` (name and lease
  match), never as someone else's.
- ``release`` deletes the key only if its create revision is still the claim's token.
- Lease loss: the lease is taken as lost when a keep-alive answers TTL <= 0 or the lease is not
  found, or when no keep-alive succeeded within the TTL counted from the moment the last good one
  was *sent* (so this node gives up no later than etcd expires it).  ``valid()`` reads the clock
  itself, so it turns false at once even if the keep-alive task is stuck or this process was
  frozen; ``check()`` (call it before every fenced write) raises ``LeaseLost``; ``lost`` (a trio
  Event) is set by the keep-alive task or the first check that finds the lease gone.  A lost
  lease is never renewed: every claim is void; a node that wants to go on joins again (a new
  ``Ownership``), and its new claims have new, larger tokens.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Literal

import structlog
import trio

from indexer.cluster.etcd import Compare, Delete, EtcdClient, Get, KeyValue, Lease, Put
from indexer.errors import ClusterError, EtcdBadResponse, LeaseLost, LeaseNotFound

__all__ = ["DEFAULT_TTL", "KINDS", "Claim", "Kind", "Ownership"]

DEFAULT_TTL = 10
Kind = Literal["provider", "publisher"]
KINDS: tuple[Kind, ...] = ("provider", "publisher")
RETRY_PAUSE = 0.2  # between failed keep-alives (still within the TTL)

_NAME = re.compile(r"[A-Za-z0-9._:=+-]{1,256}")
_ROOT = re.compile(r"(/[A-Za-z0-9._-]+)+")

log = structlog.get_logger("cluster")


@dataclass(frozen=True)
class Claim:
    """The owner of one resource: ``token`` is the key's create revision (the fencing token)."""

    kind: Kind
    resource: str
    owner: str
    token: int
    mine: bool


def _check_name(what: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad {what} {name!r}: 1-256 of A-Z a-z 0-9 . _ : = + -")
    return name


class Ownership:
    """One node's lease and claims on etcd, through ``client``."""

    def __init__(
        self, client: EtcdClient, node: str, *, ttl: int = DEFAULT_TTL, root: str = "/ipni"
    ) -> None:
        if ttl < 1:
            raise ValueError(f"lease TTL must be >= 1 s, not {ttl}")
        if not _ROOT.fullmatch(root):
            raise ValueError(f"bad key root {root!r}: like /ipni")
        self.client = client
        self.node = _check_name("node name", node)
        self.ttl = ttl
        self.root = root
        self.lease = 0
        self.granted_ttl = 0
        self.lost = trio.Event()
        self.lost_reason = ""
        self._renewed_at = -math.inf  # when the last good keep-alive (or the grant) was sent
        self._deadline = -math.inf  # the lease is taken as lost from then on

    # -- keys --

    def owner_key(self, kind: Kind, resource: str) -> bytes:
        if kind not in KINDS:
            raise ValueError(f"bad kind {kind!r}: one of {KINDS}")
        return f"{self.root}/owner/{kind}/{_check_name('resource', resource)}".encode()

    def node_key(self, name: str) -> bytes:
        return f"{self.root}/node/{_check_name('node name', name)}".encode()

    # -- the lease --

    @property
    def renewed_at(self) -> float:
        """When (trio clock) the last good keep-alive, or the grant, was sent."""
        return self._renewed_at

    @property
    def deadline(self) -> float:
        """When (trio clock) this node takes its lease as lost unless renewed before."""
        return self._deadline

    def valid(self) -> bool:
        """Whether this node's claims still hold: its lease renewed within the TTL, not lost."""
        return bool(self.lease) and not self.lost.is_set() and trio.current_time() < self._deadline

    def check(self) -> None:
        """Raise ``LeaseLost`` unless ``valid()``: call it before every fenced write."""
        if self.valid():
            return
        if not self.lease:
            raise LeaseLost(f"node {self.node} has not joined")
        self._lose(self.lost_reason or "not renewed within its TTL")
        raise LeaseLost(f"node {self.node}: lease {self.lease:x} lost: {self.lost_reason}")

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            if reason == "left":
                log.info("left: every claim handed back", node=self.node)
            else:
                log.warning("lease lost: every claim is void", node=self.node, reason=reason)

    async def join(self) -> Lease:
        """Grant this node's lease and register the node on it."""
        if self.lease:
            raise ValueError(f"node {self.node} joined already (lease {self.lease:x})")
        sent = trio.current_time()
        lease = await self.client.lease_grant(self.ttl)
        self.lease, self.granted_ttl = lease.id, lease.ttl
        self._renewed_at, self._deadline = sent, sent + lease.ttl
        try:
            await self.client.put(self.node_key(self.node), self.node.encode(), lease=lease.id)
        except LeaseNotFound:
            self._lose("the lease expired before the node registered")
            raise LeaseLost(f"node {self.node}: lease expired at once") from None
        log.info("joined", node=self.node, lease=f"{lease.id:x}", ttl=lease.ttl)
        return lease

    async def renew(self) -> bool:
        """One keep-alive: True once renewed, False if it failed in time (try again soon);
        ``LeaseLost`` once the lease is gone (etcd says so, or the TTL ran out first)."""
        self.check()
        sent = trio.current_time()
        ttl: int | None = None
        with trio.move_on_at(self._deadline):
            try:
                ttl = await self.client.lease_keepalive(self.lease)
            except LeaseNotFound:
                ttl = 0
            except ClusterError as exc:
                log.warning("keep-alive failed", node=self.node, error=str(exc))
        if ttl is None:  # failed, or cut at the deadline (the next check says which)
            return False
        if ttl <= 0:
            self._lose("etcd says the lease expired")
            raise LeaseLost(f"node {self.node}: lease {self.lease:x} expired at etcd")
        self._renewed_at, self._deadline = sent, sent + ttl
        return True

    async def keep_alive(self) -> None:
        """Renew the lease every TTL / 3 until it is lost (then return: ``lost`` is set)."""
        next_at = self._renewed_at + self.granted_ttl / 3
        while True:
            await trio.sleep_until(min(next_at, self._deadline))
            try:
                renewed = await self.renew()
            except LeaseLost:
                return
            pause = self.granted_ttl / 3 if renewed else RETRY_PAUSE
            next_at = (self._renewed_at if renewed else trio.current_time()) + pause

    async def run(self, *, task_status: trio.TaskStatus[Lease] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, report started (with the lease), keep the lease alive until it is lost."""
        lease = await self.join()
        task_status.started(lease)
        await self.keep_alive()

    async def leave(self) -> None:
        """Revoke the lease: this node's claims and registration vanish at once.  Its claims are
        void from the first line on; if etcd cannot be reached (``EtcdUnavailable``), the lease
        expires by itself within its TTL."""
        if not self.lease:
            return
        self._lose("left")
        with contextlib.suppress(LeaseNotFound):
            await self.client.lease_revoke(self.lease)

    # -- claims --

    def _claim(self, kind: Kind, kv: KeyValue) -> Claim:
        resource = kv.key.decode(errors="replace").rpartition("/")[2]
        owner = kv.value.decode(errors="replace")
        mine = bool(self.lease) and kv.lease == self.lease and owner == self.node
        return Claim(kind, resource, owner, kv.create_revision, mine)

    async def claim(self, kind: Kind, resource: str) -> Claim:
        """Own ``resource`` unless someone does: ONE txn; the owner and token either way."""
        key = self.owner_key(kind, resource)
        self.check()
        try:
            result = await self.client.txn(
                [Compare(key, "CREATE", 0)],
                [Put(key, self.node.encode(), self.lease), Get(key)],
                [Get(key)],
            )
        except LeaseNotFound:
            self._lose("etcd says the lease expired (claim)")
            raise LeaseLost(f"node {self.node}: lease {self.lease:x} lost") from None
        kvs = result.responses[-1].kvs
        if len(kvs) != 1 or kvs[0].key != key or kvs[0].create_revision <= 0:
            raise EtcdBadResponse(f"claim of {key!r}: the key read back is not there")
        return self._claim(kind, kvs[0])

    async def release(self, claim: Claim) -> bool:
        """Hand ``claim`` back: delete the key if it is still that claim (same token).

        True if this call deleted it; False if it was gone already (released, expired, or
        deleted by an earlier try whose answer was lost).  The claim is void either way."""
        if not claim.mine:
            raise ValueError(f"not this node's claim: {claim}")
        key = self.owner_key(claim.kind, claim.resource)
        result = await self.client.txn([Compare(key, "CREATE", claim.token)], [Delete(key)])
        return result.succeeded

    async def owners(self, kind: Kind) -> dict[str, Claim]:
        """Every claimed resource of ``kind``, by resource."""
        prefix = f"{self.root}/owner/{kind}/".encode()
        if kind not in KINDS:
            raise ValueError(f"bad kind {kind!r}: one of {KINDS}")
        claims = (self._claim(kind, kv) for kv in await self.client.range(prefix, prefix=True))
        return {c.resource: c for c in claims}

    async def nodes(self) -> list[str]:
        """The names of the live nodes (registered on a lease that has not expired)."""
        prefix = f"{self.root}/node/".encode()
        kvs = await self.client.range(prefix, prefix=True)
        return sorted(kv.value.decode(errors="replace") for kv in kvs)
