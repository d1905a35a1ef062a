"""One sync of one publisher: the I/O adapter around ``ChainWalk``.

Rules this module keeps:

- The head comes from the announce (or admin request) when it names one, else from the
  publisher's signed head, which must be signed by the publisher (``BlockFetcher.head``).
- Walked ads are spilled into the staging area every ``segment`` ads (2,000 by default) or
  ``SEGMENT_BYTES`` of raw ads (256 KiB), whichever comes first, so memory stays flat whatever
  the chain's length; nothing is visible to workers until the walk commits.
- The commit (stack headers + the publisher's cursor, one synced batch) runs without awaiting, so
  trio itself serializes commits; ``commit_walk`` re-checks against walks that committed meanwhile.
- Any failure abandons the walk (its spilled ads are deleted) and propagates as the typed error
  (never wrapped in the walk's exception group): the publisher's cursor has not moved, a later
  sync starts over.  The caller records the error (``indexer.ingest.engine``).
- The walk's addresses are committed as the publisher's verified ones only if they proved they
  serve it: the head came from its signed head, or the head ad was valid (a spoofed announce can
  only point at ads it cannot sign).
- A first sync of a publisher (no record yet) whose walked ads are all invalid keeps nothing:
  it fails with ``PolicyError`` and its walk is abandoned, so junk announces answered with junk
  ads leave nothing durable either.
- Ads found invalid while walking (bad signature, over a limit) are staged with their error, so
  they are recorded in order; the last such error is kept on the publisher (``ad_error``).
- A link found unknown (not done, staged by no committed walk) is not asked again while the
  commit seq stays: an ad becomes known only when a walk holding it commits (a done marker is
  written only for an ad staged, so known, before), so the answer holds until then.  The walk and
  its lookahead ask about each link about three times, and each asking is a ``k<cid>`` scan that
  steps over the done ads' tombstones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from staging import StagedAd, StagingArea
from sync.errors import PolicyError, unwrap_group
from sync.ipnisync.fetch import BlockFetcher
from sync.model.cid import Link
from sync.model.peer import PeerId
from sync.walk.chain import ChainWalk, Policy, StopReason
from sync.walk.lookahead import AheadBlocks, Lookahead

__all__ = ["SEGMENT_BYTES", "SyncResult", "sync_publisher"]

SEGMENT_BYTES = 256 << 10
_UNKNOWN_MEMO = 16  # links remembered unknown at once (the walk asks about each ~3 times)


@dataclass(frozen=True)
class SyncResult:
    publisher: PeerId
    head: Link | None
    walked: int = 0
    staged: dict[str, int] = field(default_factory=dict)
    stop: StopReason | None = None
    detail: str | None = None
    ad_errors: int = 0  # ads staged with an error (recorded processed-with-error, in order)
    ad_error: str | None = None  # the newest of them: "<cid>: <error>"


async def sync_publisher(
    publisher: PeerId,
    addrs: Sequence[str],
    fetcher: BlockFetcher,
    staging: StagingArea,
    *,
    policy: Policy,
    head: Link | None = None,
    segment: int = 2000,
    depth_limit: int = 0,
    resync: bool = False,
    on_walked: Callable[[int], None] | None = None,
    ahead: AheadBlocks | None = None,
    floor: Link | None = None,
) -> SyncResult:
    """Walk the publisher's chain from ``head`` and stage every new ad.

    ``resync`` ignores the publisher's cursor (its latestSync): the walk still stops at the
    first ad already staged or indexed, so nothing is ever applied twice.  With ``ahead``, each
    small valid ad's first entries block is fetched into it for the worker (``Lookahead``).
    ``floor`` is an ad at and below which everything is applied elsewhere (a cluster's cursor):
    the walk stops there as at a known ad, even with ``resync``.
    """
    signed_head = head is None
    if head is None:
        signed = await fetcher.head()
        if signed is None:
            return SyncResult(publisher, None)
        head = signed.head
    cursor = None if resync else staging.publisher(publisher.raw).latest_scanned
    base_seq = staging.commit_seq()
    walk_id = staging.begin_walk(publisher.raw, addrs, head.raw)
    latest = Link(cursor) if cursor else None

    unknown: set[bytes] = set()  # links found unknown at commit seq ``unknown_at``
    unknown_at = base_seq

    def is_known(link: Link) -> bool:
        """``staging.is_known``, asked once per link while no walk commits (see the rules)."""
        nonlocal unknown_at
        if link == floor:
            return True
        seq = staging.commit_seq()
        if seq != unknown_at or len(unknown) >= _UNKNOWN_MEMO:
            unknown.clear()
            unknown_at = seq
        if link.raw in unknown:
            return False
        if staging.is_known(link.raw):
            return True
        unknown.add(link.raw)
        return False

    walker = ChainWalk(
        head,
        publisher,
        is_known=is_known,
        policy=policy,
        latest=latest,
        depth_limit=depth_limit,
    )
    counts: dict[bytes, int] = {}
    errors = _AdErrors()
    try:
        with unwrap_group():
            async with trio.open_nursery() as nursery_ahead:
                lookahead = Lookahead(
                    nursery_ahead,
                    fetcher,
                    publisher,
                    ahead,
                    stop=lambda link: link == latest or is_known(link),
                )
                head_valid = await _walk(
                    walker, lookahead, staging, walk_id, counts, segment, on_walked, errors
                )
                lookahead.close()  # the entries in flight finish: the worker's first blocks
        nothing_valid = walker.count > 0 and errors.count == walker.count and not signed_head
        if nothing_valid and not staging.has_publisher(publisher.raw):  # a junk first contact
            raise PolicyError(
                f"none of the {walker.count} advertisements from {list(addrs)} is valid "
                f"({errors.newest}): nothing of publisher {publisher} is kept"
            )
    except BaseException:
        staging.abandon_walk(walk_id)  # synchronous: a cancellation cannot interrupt it
        raise
    kept = staging.commit_walk(
        walk_id, counts, base_seq=base_seq, verified=signed_head or head_valid
    )
    ad_error = errors.newest
    if walker.stop_reason in (StopReason.NOT_ALLOWED, StopReason.BROKEN):
        staging.set_publisher_error(publisher.raw, walker.stop_detail)
    elif ad_error is not None:
        staging.set_publisher_error(publisher.raw, f"ad {ad_error}")
    return SyncResult(
        publisher,
        head,
        walker.count,
        {str(PeerId(p)): n for p, n in kept.items()},
        walker.stop_reason,
        walker.stop_detail,
        errors.count,
        ad_error,
    )


@dataclass
class _AdErrors:
    """The walk's invalid ads: how many, and the newest one's error (memory stays flat)."""

    count: int = 0
    newest: str | None = None  # "<cid>: <error>"; the walk goes newest first


async def _walk(
    walker: ChainWalk,
    lookahead: Lookahead,
    staging: StagingArea,
    walk_id: int,
    counts: dict[bytes, int],
    segment: int,
    on_walked: Callable[[int], None] | None,
    errors: _AdErrors,
) -> bool:
    """Fetch, check and spill the walk's ads until the walker stops, counting invalid ones.

    True when the first ad walked (the head) was valid: signed by its provider or the
    publisher, and one the publisher may publish.
    """
    head_valid = False
    buffer: list[tuple[bytes, int, StagedAd]] = []
    held = 0  # raw bytes in buffer
    while (need := walker.next_block()) is not None:
        raw = await lookahead.block(need)
        lookahead.guess_after(need, raw)
        await trio.lowlevel.checkpoint()  # the guess's request goes out before this ad's checks
        walked = walker.feed(need, raw)
        if walked is None:
            continue
        if walker.count == 1:
            head_valid = walked.error is None
        if walked.error is None and not walked.skip_entries:
            lookahead.entries_after(walked.cid, walked.raw)  # for the worker, after the walk
        provider = walked.provider.raw
        pos = counts.get(provider, 0)
        counts[provider] = pos + 1
        ad = StagedAd(walked.cid.raw, walked.raw, walked.skip_entries, walked.error)
        if walked.error is not None:
            errors.count += 1
            errors.newest = errors.newest or f"{walked.cid}: {walked.error}"
        buffer.append((provider, pos, ad))
        held += len(walked.raw)
        if len(buffer) >= segment or held >= SEGMENT_BYTES:
            staging.spill(walk_id, buffer)
            buffer.clear()
            held = 0
        if on_walked is not None:
            on_walked(walker.count)
    staging.spill(walk_id, buffer)
    return head_valid
