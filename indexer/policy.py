"""The access policy: the ``[policy]`` value from the config file, and its live view.

Rules this module keeps:

- ``Policy`` is the ``[policy]`` section: ``allow``/``deny`` lists of publishers and of
  providers (``"*"`` = everyone; deny wins), and ``publish_for``: which publishers may publish on
  behalf of which providers.  A frozen msgspec Struct that ``indexer.config`` decodes strictly;
  ``normalized`` checks every entry is ``"*"`` or a peer ID (a CID of one is accepted) and writes
  it as the peer ID string the matching compares with.
- ``LivePolicy`` is what the daemon consults: the configured ``Policy`` plus the admin API's
  ``PUT /ingest/allow/{peer}`` and ``PUT /ingest/block/{peer}`` calls, which change who may
  publish and provide until the daemon stops, as storetheindex's admin API does; to keep a
  change, put it in the config file (the log line says so).
- A blocked peer is refused as a publisher (announces get 403, syncs are not started) and as a
  provider (its ads are walked past as not allowed); an explicit allow overrides the config's
  lists for that peer, and the last call for a peer wins.
- At query time too (``AllowedReader``, the daemon's find and routing reader): a provider the
  policy refuses now has no registry record for find or delegated routing, so its values (and
  the results they give) are left out, as they are for a removed provider, even when they were
  indexed before it was blocked.  ``GET /providers`` still lists it (the operator's view).
- Wildcards: ``"*"`` (everyone) is the only pattern, in every list and as a ``publish_for``
  key (any publisher).  storetheindex's defaults (``Allow`` and ``Publish`` true: anyone may
  publish for anyone) are ``publish_for = {"*" = ["*"]}``; our default is stricter: a publisher
  publishes for itself only unless ``publish_for`` names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import msgspec

from sync import BadPeerId, PeerId

if TYPE_CHECKING:  # types only: importing the policy does not import find
    from indexer.find.model import Stats
    from indexer.find.reader import IndexReader, Known
    from store import ProviderRecord, ValueRecord

__all__ = ["AllowedReader", "LivePolicy", "Policy"]

_PEERS = 'peer IDs, or "*" for everyone'


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who may publish and provide; deny wins."""

    allow_publishers: Annotated[
        tuple[str, ...], msgspec.Meta(description=f"{_PEERS}: publishers announces are taken from")
    ] = ("*",)
    deny_publishers: Annotated[
        tuple[str, ...], msgspec.Meta(description=f"{_PEERS}: publishers refused (wins over allow)")
    ] = ()
    allow_providers: Annotated[
        tuple[str, ...], msgspec.Meta(description=f"{_PEERS}: providers whose ads are indexed")
    ] = ("*",)
    deny_providers: Annotated[
        tuple[str, ...], msgspec.Meta(description=f"{_PEERS}: providers refused (wins over allow)")
    ] = ()
    publish_for: Annotated[
        dict[str, tuple[str, ...]],
        msgspec.Meta(
            description="publishers allowed to publish for other providers",
            extra={"example": '"12D3KooW...publisher" = ["12D3KooW...provider"]'},
        ),
    ] = msgspec.field(default_factory=dict)

    def normalized(self) -> Policy:
        """This policy with every peer written as its peer ID; ``ValueError`` names a bad one."""
        lists = {
            name: _peers(f"policy.{name}", getattr(self, name))
            for name in ("allow_publishers", "deny_publishers", "allow_providers", "deny_providers")
        }
        publish_for = {
            _peers("policy.publish_for", (pub,))[0]: _peers(f"policy.publish_for.{pub}", provs)
            for pub, provs in self.publish_for.items()
        }
        return Policy(**lists, publish_for=publish_for)

    @staticmethod
    def _listed(peer: PeerId, names: tuple[str, ...]) -> bool:
        return "*" in names or str(peer) in names

    def publisher_allowed(self, publisher: PeerId) -> bool:
        return self._listed(publisher, self.allow_publishers) and not self._listed(
            publisher, self.deny_publishers
        )

    def provider_allowed(self, provider: PeerId) -> bool:
        return self._listed(provider, self.allow_providers) and not self._listed(
            provider, self.deny_providers
        )

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        """The walker's policy: may ``publisher`` publish for ``provider``?"""
        if not self.provider_allowed(provider):
            return False
        return publisher == provider or self.publishes_for(publisher, provider)

    def publishes_for(self, publisher: PeerId, provider: PeerId) -> bool:
        """Is ``publisher`` listed as publishing on behalf of ``provider``?"""
        mine = self.publish_for.get(str(publisher), ())
        return self._listed(provider, mine) or self._listed(provider, self.publish_for.get("*", ()))


def _peers(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for v in values:
        try:
            out.append(v if v == "*" else str(PeerId.parse(v)))
        except BadPeerId as exc:
            raise ValueError(f"{name}: {exc}") from None
    return tuple(out)


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


@dataclass(frozen=True)
class AllowedReader:
    """``inner`` with the providers ``allowed`` refuses (asked at each query) left out of the
    registry that find and routing expand values with."""

    inner: IndexReader
    allowed: Callable[[PeerId], bool]

    async def lookup(self, multihash: bytes) -> Sequence[ValueRecord]:
        return await self.inner.lookup(multihash)

    async def lookup_many(self, multihashes: Sequence[bytes]) -> Sequence[Sequence[ValueRecord]]:
        return await self.inner.lookup_many(multihashes)

    async def registry(self, providers: Collection[bytes]) -> Mapping[bytes, Known]:
        known = await self.inner.registry(providers)
        return {raw: (rec if self.allowed(PeerId(raw)) else None) for raw, rec in known.items()}

    async def provider(self, provider: bytes) -> ProviderRecord | None:
        return await self.inner.provider(provider)

    async def providers(self) -> Sequence[tuple[bytes, ProviderRecord]]:
        return await self.inner.providers()

    async def stats(self) -> Stats:
        return await self.inner.stats()

    async def lags(self, only: bytes | None = None) -> Mapping[bytes, int]:
        return await self.inner.lags(only)
