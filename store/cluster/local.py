"""``LevelDBBackend``: the ``IndexBackend`` over today's single-node ``IndexStore`` (LevelDB).

Its keys beside ``IndexStore``'s (``store/index.py``; ``<provider>`` behind a one-byte length)::

    F <provider>             <epoch:8>   the provider's fence epoch (absent: 0)
    D <provider> <ad cid>    DoneMark    the ad's final writes were committed
    L <provider>             <ad cid>    the provider's latest committed ad
    H <publisher>            <epoch:8>   the publisher's fence epoch (absent: 0)
    U <publisher>            <ad cid>    the publisher's cursor: its latest scanned ad
    N <publisher>            Announce    the newest announce accepted from the publisher

(``<publisher>`` behind a one-byte length too; none of these prefixes is ``staging``'s.)

Rules this module keeps:

- Every write is an ``IndexStore`` write plan, written as ``IndexStore``'s callers write them
  today (a chunk of ``thread_min`` multihashes or more in a thread: LevelDB releases the GIL), so
  the LevelDB layout and behaviour are unchanged; ``allocate`` keeps its 8-byte counter.
- A fenced write checks the epoch and writes under one process lock (one process owns a LevelDB),
  in one batch: the check and the write are atomic.  ``commit_writes`` gives ``commit_ad``'s
  batch so a caller can add its own writes (the staging pop) to the same atomic batch.
- A publisher's state is fenced the same way, by the publisher's epoch (``H``), apart from the
  provider epoch (``F``) of the same peer ID.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from store.cluster.protocol import AdCommit, Announce, CommitOutcome, DoneMark, PutValue
from store.errors import AdOutOfOrder, StoreFenced
from store.index import IndexStore, ProviderRecord, ValueRecord
from store.protocol import KVStore, Write

__all__ = ["LevelDBBackend"]

_fencing = threading.Lock()  # one fenced check-and-write at a time in this process
_done_dec = msgspec.msgpack.Decoder(DoneMark)
_announce_dec = msgspec.msgpack.Decoder(Announce)
_enc = msgspec.msgpack.Encoder()


def _peer(provider: bytes) -> bytes:
    if not 0 < len(provider) < 256:
        raise ValueError("provider bytes must be 1..255 long")
    return bytes([len(provider)]) + provider


def epoch_key(provider: bytes) -> bytes:
    return b"F" + _peer(provider)


def done_key(provider: bytes, ad: bytes) -> bytes:
    return b"D" + _peer(provider) + ad


def latest_key(provider: bytes) -> bytes:
    return b"L" + _peer(provider)


def pub_epoch_key(publisher: bytes) -> bytes:
    return b"H" + _peer(publisher)


def pub_cursor_key(publisher: bytes) -> bytes:
    return b"U" + _peer(publisher)


def pub_announce_key(publisher: bytes) -> bytes:
    return b"N" + _peer(publisher)


@dataclass(frozen=True)
class LevelDBBackend:
    """The ``IndexBackend`` of a single node: ``IndexStore`` on one ``KVStore``."""

    index: IndexStore[Any]
    thread_min: int = 1024  # chunks this large are written in a thread

    @property
    def kv(self) -> KVStore:
        kv: KVStore = self.index.kv
        return kv

    # --- value keys and index entries --------------------------------------------------------

    async def allocate(self, provider: bytes, context_id: bytes) -> bytes:
        return self.index.allocate(provider, context_id)

    async def allocated(self, provider: bytes, context_id: bytes) -> bytes | None:
        return self.index.allocated(provider, context_id)

    async def add_multihashes(self, vk: bytes, multihashes: Sequence[bytes]) -> None:
        writes = IndexStore.put_multihashes(vk, multihashes)
        if len(multihashes) >= self.thread_min:
            await trio.to_thread.run_sync(self.kv.write_batch, writes)
        else:
            self.kv.write_batch(writes)

    # --- one provider's writes ---------------------------------------------------------------

    def _epoch(self, provider: bytes, key: bytes | None = None) -> int:
        raw = self.kv.get(epoch_key(provider) if key is None else key)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def _check(self, provider: bytes, token: int | None, key: bytes | None = None) -> None:
        """Refuse ``token`` unless it is the epoch at ``key`` (default: the provider's)."""
        if token is not None and (epoch := self._epoch(provider, key)) != token:
            raise StoreFenced(provider, token, epoch)

    def _fenced(
        self, provider: bytes, token: int | None, writes: list[Write], key: bytes | None = None
    ) -> None:
        with _fencing:
            self._check(provider, token, key)
            self.kv.write_batch(writes)

    def _move_epoch(self, owner: bytes, token: int, key: bytes) -> None:
        with _fencing:
            epoch = self._epoch(owner, key)
            if token < epoch:
                raise StoreFenced(owner, token, epoch)
            if token > epoch:
                self.kv.write_batch([(key, token.to_bytes(8, "big"))])

    async def put_value(
        self,
        vk: bytes,
        provider: bytes,
        context_id: bytes,
        metadata: bytes,
        *,
        token: int | None = None,
    ) -> None:
        self._fenced(provider, token, IndexStore.put_value_at(vk, provider, context_id, metadata))

    async def remove_value(
        self, vk: bytes, provider: bytes, context_id: bytes, *, token: int | None = None
    ) -> None:
        self._fenced(provider, token, IndexStore.remove_value(vk, provider, context_id))

    async def put_provider(
        self, provider: bytes, record: ProviderRecord, *, token: int | None = None
    ) -> None:
        self._fenced(provider, token, IndexStore.put_provider(provider, record))

    async def epoch(self, provider: bytes) -> int:
        return self._epoch(provider)

    async def set_epoch(self, provider: bytes, token: int) -> None:
        self._move_epoch(provider, token, epoch_key(provider))

    @staticmethod
    def commit_writes(commit: AdCommit) -> list[Write]:
        """The batch ``commit_ad`` writes once its checks pass."""
        p = commit.provider
        writes: list[Write] = []
        for v in commit.values:
            if isinstance(v, PutValue):
                writes += IndexStore.put_value_at(v.vk, p, v.context_id, v.metadata)
            else:
                writes += IndexStore.remove_value(v.vk, p, v.context_id)
        if commit.record is not None:
            writes += IndexStore.put_provider(p, commit.record)
        writes += [(done_key(p, commit.ad), _enc.encode(commit.done)), (latest_key(p), commit.ad)]
        return writes

    async def commit_ad(
        self, commit: AdCommit, token: int, extra: Sequence[Write] = ()
    ) -> CommitOutcome:
        """``IndexBackend.commit_ad``, with ``extra`` writes in the same batch (when applied)."""
        p = commit.provider
        with _fencing:
            self._check(p, token)
            if self.kv.get(done_key(p, commit.ad)) is not None:
                return "already"
            if commit.previous is not None and self.kv.get(done_key(p, commit.previous)) is None:
                raise AdOutOfOrder(p, commit.ad, commit.previous)
            self.kv.write_batch([*self.commit_writes(commit), *extra])
        return "applied"

    # --- reads -------------------------------------------------------------------------------

    async def value(self, vk: bytes) -> ValueRecord | None:
        return self.index.value(vk)

    async def provider(self, provider: bytes) -> ProviderRecord | None:
        return self.index.provider(provider)

    async def providers(self) -> list[tuple[bytes, ProviderRecord]]:
        return list(self.index.providers())  # key order: provider byte order

    async def lookup(self, multihash: bytes) -> list[ValueRecord]:
        return self.index.lookup(multihash)

    async def lookup_many(self, multihashes: Sequence[bytes]) -> list[list[ValueRecord]]:
        return self.index.lookup_many(multihashes)

    async def done(self, provider: bytes, ad: bytes) -> DoneMark | None:
        raw = self.kv.get(done_key(provider, ad))
        return None if raw is None else _done_dec.decode(raw)

    async def latest(self, provider: bytes) -> bytes | None:
        return self.kv.get(latest_key(provider))

    # --- a publisher's state -----------------------------------------------------------------

    async def publisher_epoch(self, publisher: bytes) -> int:
        return self._epoch(publisher, pub_epoch_key(publisher))

    async def set_publisher_epoch(self, publisher: bytes, token: int) -> None:
        self._move_epoch(publisher, token, pub_epoch_key(publisher))

    async def put_cursor(self, publisher: bytes, ad: bytes, *, token: int | None = None) -> None:
        writes: list[Write] = [(pub_cursor_key(publisher), ad)]
        self._fenced(publisher, token, writes, pub_epoch_key(publisher))

    async def cursor(self, publisher: bytes) -> bytes | None:
        return self.kv.get(pub_cursor_key(publisher))

    async def put_announce(
        self, publisher: bytes, announce: Announce, *, token: int | None = None
    ) -> None:
        writes: list[Write] = [(pub_announce_key(publisher), _enc.encode(announce))]
        self._fenced(publisher, token, writes, pub_epoch_key(publisher))

    async def announce(self, publisher: bytes) -> Announce | None:
        raw = self.kv.get(pub_announce_key(publisher))
        return None if raw is None else _announce_dec.decode(raw)

    async def publishers(self) -> list[bytes]:
        return [key[2 : 2 + key[1]] for key, _ in self.kv.scan(b"N")]

    async def aclose(self) -> None:
        """Nothing to release: the caller owns (and closes) the ``KVStore``."""
