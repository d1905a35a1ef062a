"""The chain walker: pure code that walks an advertisement chain from its head, newest first.

Sans-I/O (h11 style): ``next_block()`` says which block it needs, ``feed(link, raw)`` hands it
the bytes; it never awaits, fetches or writes.  An adapter (``syncer.py``) does the I/O and spills
what it returns into staging segment by segment, so nothing here grows with the chain but the
set of removed contexts (bounded by ``MAX_REMOVED``; past it, skipping is merely not attempted).

Rules this module keeps:

- Before asking for a block it checks the stop conditions, in order: the publisher's
  ``latest`` cursor, ``is_known`` (processed or staged by a committed walk), the depth limit.
- Each block's raw bytes are hash-checked before decoding (``HashMismatch`` propagates: the
  publisher served wrong bytes, the caller retries the sync later).  A block that does not decode
  as an advertisement ends the walk (``BROKEN``): its PreviousID cannot be trusted.
- An ad belongs to ``ad.Provider``.  The publisher must be that provider or be allowed by the
  policy to publish for it; the first ad that fails this ends the walk (``NOT_ALLOWED``): a
  publisher's chain pointing into another provider's chain is not followed.  The signer must be
  the provider or the publisher; an ad signed by anyone else is an error ad (below).
- An ad that decodes but is invalid (limits, signature) is returned with ``error`` set, so a
  worker records it as processed-with-error in order; the walk goes on through its PreviousID.
- An ad whose (provider, context ID) a newer ad of this walk removes is marked ``skip_entries``:
  its entries will never be fetched (keyed by provider AND context, unlike storetheindex).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sync.crypto.signing import verify_advertisement
from sync.errors import ModelError, SyncError
from sync.model.blocks import decode_node
from sync.model.cid import Link, check_block
from sync.model.peer import PeerId
from sync.model.schema import Advertisement

__all__ = ["MAX_REMOVED", "ChainWalk", "Policy", "StopReason", "WalkedAd"]

MAX_REMOVED = 100_000


class Policy(Protocol):
    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        """May ``publisher`` publish advertisements on behalf of ``provider``?"""
        ...


class StopReason(enum.Enum):
    GENESIS = "reached the first advertisement"
    KNOWN = "reached an advertisement already staged or processed"
    LATEST_SYNC = "reached the publisher's latest synced advertisement"
    DEPTH_LIMIT = "reached the depth limit"
    NOT_ALLOWED = "reached an advertisement this publisher may not publish"
    BROKEN = "reached a block that is not a valid advertisement"


@dataclass(frozen=True, slots=True)
class WalkedAd:
    cid: Link
    raw: bytes
    provider: PeerId
    skip_entries: bool = False
    error: str | None = None


class ChainWalk:
    def __init__(
        self,
        head: Link,
        publisher: PeerId,
        *,
        is_known: Callable[[Link], bool],
        policy: Policy,
        latest: Link | None = None,
        depth_limit: int = 0,
    ) -> None:
        self.publisher = publisher
        self.is_known = is_known
        self.policy = policy
        self.latest = latest
        self.depth_limit = depth_limit
        self.count = 0
        self.stop_reason: StopReason | None = None
        self.stop_detail: str | None = None
        self._next: Link | None = head
        self._removed: set[tuple[bytes, bytes]] = set()

    def next_block(self) -> Link | None:
        """The block to fetch next, or None when the walk is over (see ``stop_reason``)."""
        link = self._next
        if link is None or self.stop_reason is not None:
            return None
        if link == self.latest:
            self._stop(StopReason.LATEST_SYNC)
            return None
        if self.is_known(link):
            self._stop(StopReason.KNOWN)
            return None
        if self.depth_limit and self.count >= self.depth_limit:
            self._stop(StopReason.DEPTH_LIMIT)
            return None
        return link

    def _stop(self, reason: StopReason, detail: str | None = None) -> None:
        self.stop_reason, self.stop_detail, self._next = reason, detail, None

    def feed(self, link: Link, raw: bytes) -> WalkedAd | None:
        """Take the bytes of ``next_block()``; return the ad to stage (None if the walk ended)."""
        if link != self._next:
            raise ValueError(f"fed {link}, expected {self._next}")
        check_block(link, raw)
        try:
            ad = Advertisement.from_node(decode_node(raw, link.codec))
            provider = ad.provider_id()
        except ModelError as exc:
            self._stop(StopReason.BROKEN, f"{link}: {exc}")
            return None
        error: str | None = None
        signer: PeerId | None = None
        try:
            ad.validate()
            signer = verify_advertisement(ad).signer
        except SyncError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if provider != self.publisher and not self.policy.may_publish(self.publisher, provider):
            self._stop(StopReason.NOT_ALLOWED, f"{link}: provider {provider}")
            return None
        if signer is not None and signer not in (provider, self.publisher):
            error = f"PolicyError: signed by {signer}, neither the provider nor the publisher"
        self.count += 1
        self._next = ad.previous_id
        if self._next is None:
            self.stop_reason = StopReason.GENESIS
        return WalkedAd(link, raw, provider, self._skip(ad, provider), error)

    def _skip(self, ad: Advertisement, provider: PeerId) -> bool:
        key = (provider.raw, ad.context_id)
        if ad.is_rm:
            if len(self._removed) < MAX_REMOVED:
                self._removed.add(key)
            return False
        return ad.has_entries and key in self._removed
