"""The ingest settings (``IngestConfig``): the ``[ingest]`` section of the daemon's config file.

Rules this module keeps:

- ``IngestConfig`` IS the ``[ingest]`` section: a frozen msgspec Struct that ``indexer.config``
  decodes strictly (an unknown key or a wrong type is an error naming it), with a default and a
  description for every field.  Those defaults are the only ones: the commented template that
  ``indexer init`` writes and the README's table are generated from them, and the daemon hands
  the decoded value to the ingester as it is (no field is copied by hand).
- The ingester and its workers read the engine's fields; the fetcher's (``max_block``,
  ``fetch_timeout``, ``refuse_private_addrs``), the announce intake's (rates, bursts,
  ``max_pending_publishers``), the decode processes' (``decode_processes``, ``decode_min_bytes``)
  and ``compact_idle`` are read by the daemon when it builds those.
- No import of the modules that read it (``indexer.ingest.engine``, ``indexer.ingest.worker``),
  so neither imports the other.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from sync.ipnisync.fetch import FETCH_TIMEOUT, MAX_BLOCK
from sync.walk.entries import DEFAULT_BUDGET, DEFAULT_MAX_BLOCKS, EntriesBudget

__all__ = ["IngestConfig"]


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How syncs and workers run, and what a publisher may cost."""

    segment: Annotated[int, _doc("ads a sync walk keeps in memory before spilling to LevelDB")] = (
        2000
    )
    depth_limit: Annotated[
        int,
        _doc("ads a sync walks at most; 0 or -1: to the first known ad (a limit leaves older out)"),
    ] = 0
    first_sync_depth: Annotated[
        int,
        _doc(
            "ads a publisher's first sync walks at most (storetheindex's FirstSyncDepth); "
            "0: depth_limit, -1: no limit"
        ),
    ] = 0
    max_block: Annotated[int, _doc("bytes: a larger block from a publisher is refused")] = MAX_BLOCK
    fetch_timeout: Annotated[
        float,
        _doc(
            "seconds for one request to a publisher, body included (so a block must arrive "
            "at max_block / fetch_timeout bytes/s or faster)"
        ),
    ] = FETCH_TIMEOUT
    sync_timeout: Annotated[
        float, _doc("seconds a whole sync may take (storetheindex's SyncTimeout: 2 h)")
    ] = 7200.0
    slow_sync_after: Annotated[
        float, _doc("seconds: a sync or worker running longer gives its slot back to faster ones")
    ] = 30.0
    max_slow_syncs: Annotated[
        int, _doc("slow syncs running at once (beyond, they keep their slot)")
    ] = 256
    max_slow_workers: Annotated[
        int, _doc("workers moved aside while slow, at once (same rule, same age)")
    ] = 256
    stall_after: Annotated[
        float,
        _doc(
            "seconds: a sync silent this long yields to an announce of the same publisher "
            "with other addresses (spoofed announces)"
        ),
    ] = 5.0
    poll_interval: Annotated[
        float, _doc("seconds between re-checks of every known publisher; 0: never")
    ] = 0.0
    poll_silent_after: Annotated[
        float,
        _doc(
            "seconds without an ad after which a provider's publisher is polled "
            "(storetheindex's PollInterval); 0: never"
        ),
    ] = 86400.0
    deactivate_after: Annotated[
        float,
        _doc("seconds without an ad after which a provider is marked Inactive; 0: never"),
    ] = 604800.0
    remove_after: Annotated[
        float,
        _doc(
            "seconds without an ad after which a provider and all its content are removed "
            "(storetheindex's PollStopAfter); 0: never"
        ),
    ] = 1209600.0
    max_syncs: Annotated[
        int,
        _doc(
            "syncs at once at announced addresses, and as many again at known publishers' "
            "verified addresses (more wait their turn)"
        ),
    ] = 32
    max_workers: Annotated[int, _doc("providers whose ads are applied at once")] = 32
    prefetch: Annotated[
        int, _doc("next ads whose first entries block a worker fetches ahead; 0: none")
    ] = 4
    decode_processes: Annotated[
        int,
        _doc(
            "processes that check and decode big entries blocks fetched ahead, off the "
            "process that writes the index (read at start); 0: all in that process"
        ),
    ] = 1
    decode_min_bytes: Annotated[
        int, _doc("an entries block this big on the wire or bigger goes to a decode process")
    ] = 64 << 10
    max_entry_blocks: Annotated[int, _doc("entries blocks one ad may have at most")] = (
        DEFAULT_MAX_BLOCKS
    )
    retry_base: Annotated[
        float, _doc("seconds before the first retry of a failed sync or ad, doubled per failure")
    ] = 1.0
    retry_max: Annotated[float, _doc("seconds: the retry delay grows no longer than this")] = 300.0
    max_attempts: Annotated[
        int,
        _doc(
            "tries of an ad whose blocks are missing or wrong before its error counts as permanent"
        ),
    ] = 5
    history: Annotated[int, _doc("publishers whose last sync progress is kept in memory")] = 4096
    freeze_at_percent: Annotated[
        float,
        _doc(
            "percent of the data directory's disk in use at which the indexer freezes: it stops "
            "ingesting content, keeps serving find and recording announces; <= 0: never"
        ),
    ] = 95.0
    compact_idle: Annotated[
        float, _doc("seconds between sweeps dropping the keys of removed contexts")
    ] = 60.0
    announce_rate: Annotated[
        float, _doc("announces per second per (source, publisher), after a burst")
    ] = 10.0
    announce_burst: Annotated[float, _doc("announces per (source, publisher) at once")] = 20.0
    source_rate: Annotated[
        float, _doc("announces per second per source (IP or gossip peer), after a burst")
    ] = 50.0
    source_burst: Annotated[float, _doc("announces per source at once")] = 100.0
    max_pending_publishers: Annotated[
        int,
        _doc("publishers with a sync pending at once; a new one gets 503 (known ones are exempt)"),
    ] = 10_000
    refuse_private_addrs: Annotated[
        bool,
        _doc(
            "true: never dial a publisher at a loopback, private, link-local or unique-local "
            "address, so announces cannot point the indexer at internal services (SSRF); but "
            "publishers on a private network can then not be indexed"
        ),
    ] = False
    resend_direct_announce: Annotated[
        bool,
        _doc(
            "true: re-publish every accepted HTTP announce on gossipsub with OrigPeer set, for "
            "other indexers (storetheindex's ResendDirectAnnounce; needs server.p2p_addr)"
        ),
    ] = False
    entries_budget: Annotated[
        EntriesBudget, _doc("what an ad's entries may cost beyond the multihashes they yield")
    ] = DEFAULT_BUDGET
