"""What the admin API and ``indexer admin`` show: JSON-ready views of staging and publishers.

Rules this module keeps:

- Pure reads: every view is built from a ``StagingArea`` (and the provider registry) alone, so
  the admin API of a running daemon and ``indexer admin staging --data-dir`` of a stopped one
  print the same thing.  What only a running daemon knows (workers busy, live sync progress)
  comes in as arguments and is left out (None) offline.
- Peer IDs and CIDs are strings (base58 / CIDv1 base32), times are Unix seconds; a provider's
  stacks come oldest first (the order the worker applies them), each with its next ads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from indexer.errors import UnknownPeer
from indexer.ingest.progress import SyncProgress
from staging import StackRecord, StagingArea
from store import IndexStore
from sync import Link, PeerId

__all__ = ["UnknownPeer", "publisher_rows", "staging_detail", "staging_rows"]

NEXT_ADS = 5


def _cid(raw: bytes | None) -> str | None:
    return str(Link(raw)) if raw else None


def _peer(raw: bytes) -> str:
    return str(PeerId(raw))


def staging_rows(
    staging: StagingArea, working: Collection[bytes] | None = None
) -> list[dict[str, object]]:
    """One row per provider with staged work: stacks, ads pending, the next ad, its errors."""
    rows: list[dict[str, object]] = []
    for provider in staging.providers():
        stacks = staging.stacks(provider)
        if not stacks:
            continue
        first = stacks[0][1]
        nxt = staging.stack_ads(provider, first, limit=1)
        rows.append(
            {
                "provider": _peer(provider),
                "stacks": len(stacks),
                "pending_ads": sum(stack.count for _, stack in stacks),
                "next_ad": _cid(nxt[0][1].cid) if nxt else None,
                "publishers": sorted({_peer(stack.publisher) for _, stack in stacks}),
                "oldest_staged": first.created,
                "attempts": first.attempts,
                "last_error": first.last_error,
                "working": None if working is None else provider in working,
            }
        )
    return rows


def _stack(
    staging: StagingArea, provider: bytes, seq: int, stack: StackRecord
) -> dict[str, object]:
    ads = staging.stack_ads(provider, stack, limit=NEXT_ADS)
    return {
        "seq": seq,
        "walk": stack.walk_id,
        "publisher": _peer(stack.publisher),
        "addrs": stack.addrs,
        "created": stack.created,
        "total": stack.total,
        "pending": stack.count,
        "attempts": stack.attempts,
        "last_error": stack.last_error,
        "next_ads": [_cid(ad.cid) for _, ad in ads],
    }


def staging_detail(staging: StagingArea, index: IndexStore, provider: PeerId) -> dict[str, object]:
    """A provider's stacks, oldest first, and its registry record; ``UnknownPeer`` if none."""
    stacks = staging.stacks(provider.raw)
    record = index.provider(provider.raw)
    if not stacks and record is None:
        raise UnknownPeer(f"unknown provider {provider}: nothing staged and never indexed")
    return {
        "provider": str(provider),
        "pending_ads": sum(stack.count for _, stack in stacks),
        "stacks": [_stack(staging, provider.raw, seq, stack) for seq, stack in stacks],
        "last_ad": _cid(record.last_ad) if record else None,
        "last_ad_time": record.last_ad_time if record else None,
        "last_error": record.last_error if record else None,
    }


def _pending_by_publisher(staging: StagingArea) -> dict[bytes, int]:
    pending: dict[bytes, int] = {}
    for provider in staging.providers():
        for _, stack in staging.stacks(provider):
            pending[stack.publisher] = pending.get(stack.publisher, 0) + stack.count
    return pending


def publisher_rows(
    staging: StagingArea,
    syncing: Collection[bytes] | None = None,
    progress: Mapping[bytes, SyncProgress] | None = None,
    only: PeerId | None = None,
    *,
    after: bytes | None = None,
    limit: int | None = None,
) -> list[dict[str, object]]:
    """Both cursors, last sync, last error and pending ads of every known publisher, ordered
    by peer ID; a page of them with ``after`` (a peer ID's bytes) and ``limit`` rows at most."""
    pending = _pending_by_publisher(staging)
    known = {raw: addrs for raw, addrs in staging.known_publishers()}
    for raw in progress or {}:
        known.setdefault(raw, [])
    rows: list[dict[str, object]] = []
    for raw in sorted(known):
        if (only is not None and raw != only.raw) or (after is not None and raw <= after):
            continue
        if limit is not None and len(rows) >= limit:
            break
        record = staging.publisher(raw)
        live = (progress or {}).get(raw)
        rows.append(
            {
                "publisher": _peer(raw),
                "addrs": known[raw],
                "latest_scanned": _cid(record.latest_scanned),
                "latest_processed": _cid(staging.latest_processed(raw)),
                "last_sync": record.last_sync,
                # A publisher that never synced has no record: its error is the live one.
                "last_error": record.last_error or (live.error if live else None),
                "pending_ads": pending.get(raw, 0),
                "syncing": None if syncing is None else raw in syncing,
                "sync": live.as_dict() if live else None,
            }
        )
    if only is not None and not rows:
        raise UnknownPeer(f"unknown publisher {only}")
    return rows
