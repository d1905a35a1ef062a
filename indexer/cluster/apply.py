"""``ClusterApplier``: a worker's ads applied to a cluster's index, fenced by ownership.

The ``indexer.ingest.apply.Applier`` of a cluster node.  Staging stays local (this node's
LevelDB, a cache of what its walks found); the index and each provider's state are the
cluster's (``store.cluster.IndexBackend``).  Rules it keeps:

- A worker's run holds the provider (``hold``): ONE etcd claim (``Ownership.claim``), then the
  provider's fence epoch moved to the claim's token (``set_epoch``: only forward; a newer owner
  already there is ``StoreFenced``).  A provider another node holds is ``NotOwner``: the run
  ends and its supervisor tries again later.  The claim is released when the run ends, so a
  provider two publishers publish for is never held by a node with nothing to do for it.
- Every ad is first looked up in the cluster: one already done (by a node that owned the
  provider before, or by this node before a crash) is popped from staging as it is, nothing
  applied again (invariant 2).  Its entries' multihashes are then added block by block
  (idempotent set-adds, not fenced: a value key whose record is missing is skipped at read), the
  walk's progress saved locally after each block, and the ad's final writes (value record,
  registry record, done marker) are ONE fenced ``commit_ad``, after the lease is checked
  (``Ownership.check`` of the lease the claim was made on, also before each entries block).
  Only then is the ad popped from staging: a crash between the two
  finds it done on the next try.  So a zombie owner (its lease gone, the provider claimed
  anew) has its next final write refused, whatever it believes.
- ``commit_ad`` is told the ad before it in the same stack (this run committed it) as
  ``previous``, so the cluster refuses an ad whose predecessor is not done (``AdOutOfOrder``);
  the first ad of a run has no such check (its predecessor is below the walk's stop point).
- Find sees an ad's value record only with its commit: the multihashes added before it are
  invisible until then (an ad is all or nothing to readers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog
import trio

from indexer.cluster.ownership import Claim, Ownership
from indexer.errors import ClusterError, NotOwner
from indexer.ingest.apply import (
    GetFetcher,
    Outcome,
    Parsed,
    failed_record,
    feed_next,
    registry_record,
)
from indexer.ingest.settings import IngestConfig
from staging import Entry, StagingArea
from store.cluster.protocol import AdCommit, DoneMark, IndexBackend, PutValue, RemoveValue
from store.index import ProviderRecord
from sync import Advertisement, Link, PeerId, decode_node
from sync.errors import unwrap_group
from sync.walk.entries import EntriesProgress, EntriesWalk

__all__ = ["ClusterApplier"]

log = structlog.get_logger("cluster")


@dataclass
class ClusterApplier:
    """Applies staged ads to ``backend`` while this node owns their provider (see the rules)."""

    staging: StagingArea
    backend: IndexBackend
    ownership: Callable[[], Ownership]  # the node's current lease (a new one after a rejoin)
    config: IngestConfig
    clock: Callable[[], float] = time.time
    walk_clock: Callable[[], float] = time.monotonic
    _held: dict[bytes, tuple[Ownership, Claim]] = field(default_factory=dict)
    _last: dict[bytes, tuple[int, int, bytes]] = field(default_factory=dict)  # seq, pos, cid

    def held(self) -> dict[bytes, Claim]:
        """The providers a worker of this node holds now, with their claims."""
        return {provider: claim for provider, (_, claim) in self._held.items()}

    @contextlib.asynccontextmanager
    async def hold(self, provider: bytes) -> AsyncIterator[None]:
        ownership = self.ownership()
        claim = await ownership.claim("provider", str(PeerId(provider)))
        if not claim.mine:
            raise NotOwner(f"provider {PeerId(provider)} is owned by node {claim.owner}")
        try:
            await self.backend.set_epoch(provider, claim.token)
            self._held[provider] = (ownership, claim)
            yield
        finally:
            self._held.pop(provider, None)
            self._last.pop(provider, None)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await _release(ownership, claim)

    def _token(self, provider: bytes) -> int:
        held = self._held.get(provider)
        if held is None:
            raise NotOwner(f"provider {PeerId(provider)} is not held by this node")
        ownership, claim = held
        # The lease the claim was made on (not the node's current one: after a rejoin that is
        # new, and the claim died with the old): LeaseLost once it is gone, frozen node included.
        ownership.check()
        return claim.token

    def _previous(self, entry: Entry) -> bytes | None:
        last = self._last.get(entry.provider)
        if last is not None and last[0] == entry.seq and last[1] == entry.pos + 1:
            return last[2]
        return None

    async def _commit(
        self,
        entry: Entry,
        record: ProviderRecord | None,
        values: list[PutValue | RemoveValue],
        done: DoneMark,
    ) -> None:
        token = self._token(entry.provider)
        commit = AdCommit(entry.provider, entry.ad.cid, self._previous(entry), record, values, done)
        outcome = await self.backend.commit_ad(commit, token)
        self._last[entry.provider] = (entry.seq, entry.pos, entry.ad.cid)
        log.info(
            "ad committed",
            provider=str(PeerId(entry.provider)),
            ad=str(Link(entry.ad.cid)),
            outcome=outcome,
            token=token,
        )
        self.staging.finish(entry, ok=done.ok, error=done.error)

    async def fail(self, entry: Entry, error: str) -> None:
        prior = await self.backend.provider(entry.provider)
        record = failed_record(prior, entry, error, self.clock())
        await self._commit(entry, record, [], DoneMark(False, error))

    async def apply(
        self,
        entry: Entry,
        get_fetcher: GetFetcher,
        *,
        on_block: Callable[[int], None] | None,
        parsed: Parsed,
    ) -> Outcome:
        self._token(entry.provider)
        done = await self.backend.done(entry.provider, entry.ad.cid)
        if done is not None:  # applied before (another owner, or this node before a crash)
            self._last[entry.provider] = (entry.seq, entry.pos, entry.ad.cid)
            self.staging.finish(entry, ok=done.ok, error=done.error)
            return "already"
        if entry.ad.error is not None:
            await self.fail(entry, f"ad {Link(entry.ad.cid)}: {entry.ad.error}")
            return "error"
        with unwrap_group():
            return await self._apply(entry, get_fetcher, on_block, parsed)

    async def _apply(
        self,
        entry: Entry,
        get_fetcher: GetFetcher,
        on_block: Callable[[int], None] | None,
        parsed: Parsed,
    ) -> Outcome:
        backend, provider = self.backend, entry.provider
        link = Link(entry.ad.cid)
        ad = Advertisement.from_node(decode_node(entry.ad.raw, link.codec))
        record = registry_record(await backend.provider(provider), entry, ad, self.clock())
        if ad.is_rm:
            old = await backend.allocated(provider, ad.context_id)
            removal = [] if old is None else [RemoveValue(old, ad.context_id)]
            await self._commit(entry, record, list(removal), DoneMark())
            return "removed"
        if not ad.has_entries or entry.ad.skip_entries:
            values: list[PutValue | RemoveValue] = []
            if not ad.has_entries and ad.metadata:
                vk = await backend.allocate(provider, ad.context_id)
                values.append(PutValue(vk, ad.context_id, ad.metadata))
            await self._commit(entry, record, values, DoneMark())
            return "metadata" if not ad.has_entries else "skipped"
        vk = await backend.allocate(provider, ad.context_id)
        saved = self.staging.load_progress(entry.ad.cid)
        walk = EntriesWalk(
            ad.entries,
            progress=EntriesProgress.decode(saved) if saved else None,
            max_blocks=self.config.max_entry_blocks,
            budget=self.config.entries_budget,
            clock=self.walk_clock,
        )
        fetcher = await get_fetcher(PeerId(entry.stack.publisher), entry.stack.addrs)
        while (need := walk.next_block()) is not None:
            mhs = await feed_next(walk, need, fetcher, parsed)
            self._token(provider)  # a node that lost the provider stops at the next block
            await backend.add_multihashes(vk, mhs)
            self.staging.save_progress(entry, walk.progress.encode(), ())
            if on_block is not None:
                on_block(len(mhs))
        await self._commit(entry, record, [PutValue(vk, ad.context_id, ad.metadata)], DoneMark())
        return "indexed"


async def _release(ownership: Ownership, claim: Claim) -> None:
    """Hand ``claim`` back if the lease still holds (a lost lease took it with it)."""
    if not ownership.valid():
        return
    try:
        await ownership.release(claim)
    except ClusterError as exc:  # it expires with the lease; the next claim says who owns it
        log.warning("could not release a claim", resource=claim.resource, error=str(exc))
