"""The live access policy: the configured ``Policy`` plus the admin API's allow/block calls.

Rules this module keeps:

- ``PUT /ingest/allow/{peer}`` and ``PUT /ingest/block/{peer}`` change who may publish and
  provide until the daemon stops, as storetheindex's admin API does; to keep a change, put it in
  the config file (the log line says so).
- A blocked peer is refused as a publisher (announces get 403, syncs are not started) and as a
  provider (its ads are walked past as not allowed); an explicit allow overrides the config's
  lists for that peer, and the last call for a peer wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from indexer.config import Policy
from sync import PeerId

__all__ = ["LivePolicy"]


@dataclass
class LivePolicy:
    base: Policy = field(default_factory=Policy)
    allowed: set[bytes] = field(default_factory=set)
    blocked: set[bytes] = field(default_factory=set)

    def allow(self, peer: PeerId) -> None:
        self.blocked.discard(peer.raw)
        self.allowed.add(peer.raw)

    def block(self, peer: PeerId) -> None:
        self.allowed.discard(peer.raw)
        self.blocked.add(peer.raw)

    def _override(self, peer: PeerId) -> bool | None:
        if peer.raw in self.blocked:
            return False
        if peer.raw in self.allowed:
            return True
        return None

    def publisher_allowed(self, publisher: PeerId) -> bool:
        decided = self._override(publisher)
        return self.base.publisher_allowed(publisher) if decided is None else decided

    def provider_allowed(self, provider: PeerId) -> bool:
        decided = self._override(provider)
        return self.base.provider_allowed(provider) if decided is None else decided

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        """The walker's policy: may ``publisher`` publish for ``provider``?"""
        if not self.provider_allowed(provider):
            return False
        if publisher == provider:
            return True
        return self.base.publishes_for(publisher, provider)
