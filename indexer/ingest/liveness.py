"""Silent providers (storetheindex's provider polling): poll them, mark them inactive, remove them.

Rules this module keeps:

- A provider whose last advertisement is older than ``poll_silent_after`` (seconds; 0: never) is
  polled: its publisher is asked for a sync at the publisher's recorded addresses, at most once
  per ``poll_silent_after`` per provider.  One older than ``deactivate_after`` is marked
  ``inactive`` in its registry record (find shows ``Inactive``); its next ad makes it active
  again (``indexer.ingest.apply.registry_record``).  A provider never heard of by an ad (one that
  only registered) has no age and is left alone.  One older than ``remove_after`` is removed,
  registry record and content, by the ``remove`` seam (the daemon passes the admin API's
  ``DELETE /removeprovider`` removal, unblocked), as storetheindex's ``PollStopAfter`` removes
  the provider and has its data deleted; a removed provider is neither polled nor deactivated.
  storetheindex counts both bounds from the start of polling (``PollInterval`` later); here
  they count from the last ad, as ``deactivate_after`` always has.
- While the indexer is frozen nothing is checked: no ad is synced then, so the silence is the
  indexer's, not the provider's (storetheindex keeps syncing ads while frozen).
- ``plan`` is pure (sans-I/O): records and the time in, what to poll and what to mark out; the
  loop in ``run_liveness`` reads the registry, asks ``plan``, and acts.  The registry is listed in
  a thread, at most every ``check_every`` seconds, so a large registry does not stall the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import structlog
import trio

from indexer.ingest.engine import Ingester
from store import IndexStore, ProviderRecord
from sync import PeerId

__all__ = ["Liveness", "Plan", "Remover", "plan", "run_liveness"]

log = structlog.get_logger("ingest")


@dataclass(frozen=True)
class Plan:
    """Publishers to poll (publisher, addresses), providers to mark inactive and to remove."""

    poll: tuple[tuple[bytes, tuple[str, ...]], ...] = ()
    deactivate: tuple[bytes, ...] = ()
    remove: tuple[bytes, ...] = ()


class Remover(Protocol):
    """Removes a provider, its registry record and its content (``DELETE /removeprovider``)."""

    async def __call__(self, provider: PeerId) -> object: ...


def plan(
    records: Sequence[tuple[bytes, ProviderRecord]],
    now: float,
    *,
    poll_silent_after: float,
    deactivate_after: float,
    polled: dict[bytes, float],
    remove_after: float = 0.0,
) -> Plan:
    """What to do about silent providers now (``polled``: when each was last polled)."""
    poll: dict[bytes, tuple[str, ...]] = {}
    deactivate = []
    remove = []
    for provider, record in records:
        if record.last_ad_time is None:
            continue
        silent = now - record.last_ad_time
        if remove_after > 0 and silent > remove_after:
            remove.append(provider)
            polled.pop(provider, None)
            continue
        if deactivate_after > 0 and silent > deactivate_after and not record.inactive:
            deactivate.append(provider)
        if poll_silent_after <= 0 or silent <= poll_silent_after or not record.publisher:
            continue
        if now - polled.get(provider, -float("inf")) < poll_silent_after:
            continue
        polled[provider] = now
        poll.setdefault(record.publisher, tuple(record.publisher_addrs))
    return Plan(tuple(poll.items()), tuple(deactivate), tuple(remove))


@dataclass
class Liveness:
    ingester: Ingester
    index: IndexStore
    clock: Callable[[], float] = time.time
    remove: Remover | None = None  # None: silent providers are never removed
    _polled: dict[bytes, float] = field(default_factory=dict)

    async def check(self) -> Plan:
        config = self.ingester.config
        if self.ingester.frozen_at is not None:
            return Plan()
        records = await trio.to_thread.run_sync(lambda: list(self.index.providers()))
        decided = plan(
            records,
            self.clock(),
            poll_silent_after=config.poll_silent_after,
            deactivate_after=config.deactivate_after,
            polled=self._polled,
            remove_after=config.remove_after if self.remove is not None else 0.0,
        )
        for publisher, addrs in decided.poll:
            if addrs and not self.ingester.is_syncing(publisher):
                log.info("polling a silent provider's publisher", publisher=str(PeerId(publisher)))
                self.ingester.request_sync(PeerId(publisher), list(addrs))
        for provider in decided.deactivate:
            prior = self.index.provider(provider)
            if prior is not None and not prior.inactive:
                record = msgspec.structs.replace(prior, inactive=True)
                self.index.kv.write_batch(IndexStore.put_provider(provider, record))
                log.info("provider marked inactive", provider=str(PeerId(provider)))
        for provider in decided.remove:
            if self.remove is not None:
                log.warning("removing a provider silent too long", provider=str(PeerId(provider)))
                try:
                    await self.remove(PeerId(provider))
                except Exception as exc:  # one failed removal (gone already) spares the others
                    log.error("a silent provider cannot be removed", exc_info=exc)
        return decided


async def run_liveness(
    liveness: Liveness,
    *,
    check_every: float = 3600.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Check every ``check_every`` seconds (less when the thresholds are shorter)."""
    task_status.started()
    while True:
        config = liveness.ingester.config
        bounds = (config.poll_silent_after, config.deactivate_after, config.remove_after)
        limits = [t for t in bounds if t > 0]
        await trio.sleep(min([check_every, *(t / 4 for t in limits)]))
        if limits:
            try:
                await liveness.check()
            except Exception as exc:  # one failed round (the store, a bug) must not end the loop
                log.error("provider liveness check failed", exc_info=exc)
