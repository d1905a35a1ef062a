"""``IndexBackend``: what ingest and find need of the index, as async operations.

The seam is the ``IndexStore`` write plans and reads, not the byte-level ``KVStore``: a cluster
has no cross-slot batch, no cheap ordered global scan and no global version, so each operation
here is one a cluster can do in one slot (or as independent, idempotent per-key writes).

Rules every backend keeps (``tests/store/cluster/test_conformance.py`` checks both):

- A value key is 8 bytes and names one (provider, context); ``allocate`` returns the same key
  for the same pair until ``remove_value`` removes it (then a fresh one), and never one that
  another pair holds.  There is no global counter: a cluster allocates per provider.
- ``add_multihashes`` is idempotent and add-only (a set-add per multihash); it is not fenced:
  an index entry names a value key, and a value key whose record is gone is skipped at read
  time.  ``lookup`` returns the live records of a multihash's value keys in value-key order.
- Every other write belongs to one provider.  ``token`` is the fencing token of the caller's
  ownership (an etcd revision in a cluster; ``0``, the epoch of a provider never fenced, on a
  single node).  A fenced write applies only if ``token`` equals the provider's epoch, else
  raises ``StoreFenced`` and writes nothing; ``token=None`` writes unfenced (tools, tests).
  ``set_epoch`` only moves forward (an equal token is a no-op; a lower one is ``StoreFenced``).
- ``commit_ad`` is an ad's final writes as ONE fenced, atomic operation: value records, the
  registry record, the ad's done marker and the provider's latest processed ad.  It first
  checks the token, then that the ad is not done already (``"already"``: a replay changes
  nothing), then that ``previous`` is done (``AdOutOfOrder`` if not).
- A publisher's state (its cursor: the latest scanned ad; the newest accepted announce) is
  fenced by the publisher's own epoch exactly as a provider's writes are by the provider's:
  ``put_cursor``/``put_announce`` apply only if ``token`` is the publisher's epoch (``None``:
  unfenced, e.g. announce intake on a node that does not own the publisher),
  ``set_publisher_epoch`` only moves forward.  A publisher's epoch and a provider's are apart
  even for one peer ID (a publisher is often its own provider).
- ``providers`` lists every provider with a registry record, with its record, in provider byte
  order, each once (a cluster scans every primary: there is no global ordered scan).
- ``publishers`` lists every publisher with an announce record, each once, in byte order.
- ``StoreUnavailable`` (and only it) is transient; every write may be retried after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from store.index import ProviderRecord, ValueRecord

__all__ = [
    "AdCommit",
    "Announce",
    "CommitOutcome",
    "DoneMark",
    "IndexBackend",
    "PutValue",
    "RemoveValue",
    "ValueWrite",
]

CommitOutcome = Literal["applied", "already"]


class DoneMark(msgspec.Struct, frozen=True):
    """An ad's done marker: applied (``ok``) or processed with ``error``."""

    ok: bool = True
    error: str | None = None


class Announce(msgspec.Struct, frozen=True):
    """The newest announce accepted from a publisher: its head ad and where to fetch it."""

    cid: bytes
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PutValue:
    """Write the value record of allocated value key ``vk``."""

    vk: bytes
    context_id: bytes
    metadata: bytes


@dataclass(frozen=True, slots=True)
class RemoveValue:
    """Remove the value record of ``vk`` and its allocation to ``context_id``."""

    vk: bytes
    context_id: bytes


ValueWrite = PutValue | RemoveValue


@dataclass(frozen=True, slots=True)
class AdCommit:
    """An ad's final writes: one provider's, applied together by ``commit_ad``."""

    provider: bytes
    ad: bytes  # the ad's CID
    previous: bytes | None  # the ad before it in the chain, which must be done (None: none)
    record: ProviderRecord | None  # the registry record after the ad (None: unchanged)
    values: Sequence[ValueWrite] = ()
    done: DoneMark = field(default_factory=DoneMark)


class IndexBackend(Protocol):
    """The index of one indexer: LevelDB (``LevelDBBackend``) or a cluster (``ClusterBackend``)."""

    async def allocate(self, provider: bytes, context_id: bytes) -> bytes: ...

    async def allocated(self, provider: bytes, context_id: bytes) -> bytes | None: ...

    async def add_multihashes(self, vk: bytes, multihashes: Sequence[bytes]) -> None: ...

    async def put_value(
        self,
        vk: bytes,
        provider: bytes,
        context_id: bytes,
        metadata: bytes,
        *,
        token: int | None = None,
    ) -> None: ...

    async def remove_value(
        self, vk: bytes, provider: bytes, context_id: bytes, *, token: int | None = None
    ) -> None: ...

    async def value(self, vk: bytes) -> ValueRecord | None: ...

    async def put_provider(
        self, provider: bytes, record: ProviderRecord, *, token: int | None = None
    ) -> None: ...

    async def provider(self, provider: bytes) -> ProviderRecord | None: ...

    async def providers(self) -> list[tuple[bytes, ProviderRecord]]: ...

    async def lookup(self, multihash: bytes) -> list[ValueRecord]: ...

    async def lookup_many(self, multihashes: Sequence[bytes]) -> list[list[ValueRecord]]: ...

    async def epoch(self, provider: bytes) -> int: ...

    async def set_epoch(self, provider: bytes, token: int) -> None: ...

    async def commit_ad(self, commit: AdCommit, token: int) -> CommitOutcome: ...

    async def done(self, provider: bytes, ad: bytes) -> DoneMark | None: ...

    async def latest(self, provider: bytes) -> bytes | None: ...

    async def publisher_epoch(self, publisher: bytes) -> int: ...

    async def set_publisher_epoch(self, publisher: bytes, token: int) -> None: ...

    async def put_cursor(
        self, publisher: bytes, ad: bytes, *, token: int | None = None
    ) -> None: ...

    async def cursor(self, publisher: bytes) -> bytes | None: ...

    async def put_announce(
        self, publisher: bytes, announce: Announce, *, token: int | None = None
    ) -> None: ...

    async def announce(self, publisher: bytes) -> Announce | None: ...

    async def publishers(self) -> list[bytes]: ...

    async def aclose(self) -> None: ...
