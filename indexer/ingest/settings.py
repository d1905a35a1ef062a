"""The ingest engine's settings (``IngestConfig``): read by the ingester and by its workers.

Rules this module keeps: a frozen value with a default for every field, and no import of the
modules that read it (``indexer.ingest.engine``, ``indexer.ingest.worker``), so neither imports
the other.
The daemon builds it from the ``[ingest]`` section of the configuration (``indexer.config``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.walk.entries import DEFAULT_BUDGET, EntriesBudget

__all__ = ["IngestConfig"]


@dataclass(frozen=True)
class IngestConfig:
    segment: int = 2000
    depth_limit: int = 0  # 0: walk until a known ad (any limit leaves older ads unindexed)
    max_entry_blocks: int = 1_000_000
    entries_budget: EntriesBudget = DEFAULT_BUDGET  # blocks and time an ad's entries may cost
    retry_base: float = 1.0
    retry_max: float = 300.0
    max_attempts: int = 5  # for BlockNotFound / HashMismatch before they count as permanent
    poll_interval: float = 0  # seconds between re-checks of every known publisher; 0: never
    max_syncs: int = 32  # syncs holding a slot at once, and as many at verified addresses
    max_workers: int = 32  # providers whose ads are applied at once
    prefetch: int = 4  # next ads whose first entries block a worker fetches ahead; 0: none
    sync_timeout: float = 7200.0  # a whole sync ends after this many seconds (storetheindex: 2 h)
    slow_sync_after: float = 30.0  # a sync running longer gives its slot back (a slow sync)
    max_slow_syncs: int = 256  # slow syncs running at once
    max_slow_workers: int = 256  # workers moved aside while slow (same rule, same age)
    stall_after: float = 5.0  # a sync silent this long yields to a request with other addresses
    history: int = 4096  # publishers whose last sync progress is kept in memory
