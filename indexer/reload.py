"""Reloading the configuration of a running daemon (``POST /reloadconfig``, SIGHUP).

Rules this module keeps:

- The file is read and checked whole first (``load_config``, required): a bad file is ONE
  ``ConfigError`` line and nothing changes (the old configuration stays in force).
- What a reload changes at once: ``[policy]`` (the admin API's allow/block overrides stay on top
  of it), the announce rate limits and the cap of pending publishers, and the whole ``[ingest]``
  section as the ingester reads it at each use (``poll_interval`` included: a poll loop asleep
  wakes to the new interval).  What needs a restart, and is said so in the answer: ``[server]``,
  ``[http]``, ``[cluster]``, ``[store]`` (LevelDB's options are fixed when it opens), and the
  ingest slots sized at start (``max_syncs``, ``max_workers`` and their slow pools).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from indexer.config import Config, load_config
from indexer.ingest.engine import Ingester
from indexer.ingest.intake import AnnounceIntake
from indexer.policy import LivePolicy

__all__ = ["RESTART_INGEST", "RESTART_SECTIONS", "Reloaded", "Reloader"]

log = structlog.get_logger("daemon")

RESTART_SECTIONS = ("server", "http", "cluster", "store")
RESTART_INGEST = ("max_syncs", "max_slow_syncs", "max_workers", "max_slow_workers")


class Reloaded(msgspec.Struct, frozen=True):
    """What a reload did: the file read, and the settings it did not apply (restart for them)."""

    path: str
    not_applied: list[str]


@dataclass
class Reloader:
    """The parts of a running daemon a reload reconfigures."""

    path: Path
    policy: LivePolicy
    intake: AnnounceIntake
    ingester: Ingester
    applied: Config  # what the file said at start (or at the last reload)

    def reload(self) -> Reloaded:
        """Read ``path`` and apply it; ``ConfigError`` (one line) leaves everything as it was."""
        new = load_config(self.path, required=True)
        self.policy.base = new.policy
        ingest = new.ingest
        intake = self.intake
        intake.rate, intake.burst = ingest.announce_rate, ingest.announce_burst
        intake.source_rate, intake.source_burst = ingest.source_rate, ingest.source_burst
        intake.max_publishers = ingest.max_pending_publishers
        intake.rates_changed()
        self.ingester.reconfigure(ingest)
        old = self.applied
        changed = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(old, name)]
        changed += [
            f"ingest.{key}"
            for key in RESTART_INGEST
            if getattr(new.ingest, key) != getattr(old.ingest, key)
        ]
        self.applied = new
        log.info("configuration reloaded", path=str(self.path), not_applied=changed or None)
        return Reloaded(str(self.path), changed)
