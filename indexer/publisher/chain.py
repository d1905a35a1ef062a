"""A persistent IPNI publisher: builds, signs and stores an advertisement chain.

Rules this module keeps:

- The identity is an Ed25519 key in ``<data-dir>/identity.key`` (libp2p protobuf, mode 0600);
  the chain lives in ``<data-dir>/publisher.db`` (see ``pubstore``).  The publisher is its own
  provider: every ad is signed by the same key that signs the head.
- Every operation validates all of its input before writing anything; a refused operation raises
  a ``PublisherError`` (or a ``ModelError`` for bad values) and leaves the chain as it was.
- ``add`` builds the EntryChunk chain (``chunk_size`` multihashes per chunk; the first chunk holds
  the first multihashes) and writes chunks as it goes, reporting progress; the ad, the new head
  and the new SignedHead are then committed in one synced batch.
- Removal ads carry ``IsRm`` and ``NoEntries``; metadata updates carry ``NoEntries``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from indexer.publisher.store import ChainRecord, ContextRecord, PublisherConfig, PublisherStore, b64
from store import KV
from sync.crypto.keys import PrivateKey
from sync.crypto.signing import sign_advertisement
from sync.errors import (
    AlreadyInitialized,
    BadCid,
    NotInitialized,
    PublisherError,
    SchemaError,
    UnknownContext,
)
from sync.ipnisync.head import SignedHead
from sync.model.blocks import encode_block
from sync.model.cid import DAG_CBOR, DAG_JSON, Link, check_multihash
from sync.model.peer import PeerId
from sync.model.schema import NO_ENTRIES, Advertisement, EntryChunk, ExtendedProvider, Provider

__all__ = ["CODECS", "ExtraProvider", "Published", "Publisher"]

CODECS = {"dag-json": DAG_JSON, "dag-cbor": DAG_CBOR}
KEY_FILE = "identity.key"
DB_DIR = "publisher.db"

Progress = Callable[[int], None]


class Published(msgspec.Struct, frozen=True):
    """What one publish produced: returned by ``Publisher``, and the JSON a serving publisher
    answers a publish request with (``indexer.publisher.ops``; bytes as base64)."""

    cid: str  # the new ad's CID (``link``)
    seq: int
    kind: str
    context_id: bytes
    count: int
    chunks: int

    @property
    def link(self) -> Link:
        return Link.parse(self.cid)


@dataclass(frozen=True, slots=True)
class ExtraProvider:
    """An extended provider to list on an ad, with the key it signs with."""

    key: PrivateKey
    addresses: tuple[str, ...]
    metadata: bytes


class Publisher:
    """A publisher over its data directory.  Use ``init`` once, then ``open``."""

    def __init__(self, data_dir: Path, key: PrivateKey, kv: KV) -> None:
        self.data_dir = data_dir
        self.key = key
        self._peer_id = key.peer_id()
        self.store = PublisherStore(kv)

    @property
    def codec(self) -> int:
        return CODECS[self.store.config().codec]

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @classmethod
    def init(
        cls, data_dir: str | Path, addresses: Sequence[str] = (), codec: str = "dag-json"
    ) -> Publisher:
        if codec not in CODECS:
            raise PublisherError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
        path = Path(data_dir)
        if (path / KEY_FILE).exists():
            raise AlreadyInitialized(f"{path} already holds a publisher ({KEY_FILE} exists)")
        path.mkdir(parents=True, exist_ok=True)
        key = PrivateKey.generate()
        fd = os.open(path / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.marshal())
        publisher = cls(path, key, KV(path / DB_DIR))
        publisher.store.set_config(PublisherConfig(addresses=list(addresses), codec=codec))
        return publisher

    @classmethod
    def open(cls, data_dir: str | Path) -> Publisher:
        path = Path(data_dir)
        try:
            key = PrivateKey.unmarshal((path / KEY_FILE).read_bytes())
        except FileNotFoundError:
            raise NotInitialized(
                f"no publisher in {path} (run: indexer publisher init --data-dir {path})"
            ) from None
        return cls(path, key, KV(path / DB_DIR, create=True))

    def close(self) -> None:
        self.store.kv.close()

    # --- reads -----------------------------------------------------------------------------

    def head(self) -> Link | None:
        return self.store.head()

    def signed_head(self) -> bytes | None:
        return self.store.signed_head()

    def block(self, link: Link) -> bytes | None:
        return self.store.block(link)

    def gzipped_block(self, link: Link, raw: bytes) -> bytes | None:
        return self.store.gzipped_block(link, raw)

    def chain(self, limit: int = 0) -> list[ChainRecord]:
        """The chain, newest first: the newest ``limit`` ads (all of them when 0)."""
        return list(itertools.islice(self.store.chain(), limit or None))

    # --- writes ----------------------------------------------------------------------------

    def add(
        self,
        context_id: bytes,
        multihashes: Sequence[bytes],
        metadata: bytes,
        addresses: Sequence[str] | None = None,
        *,
        extended: Sequence[ExtraProvider] = (),
        override: bool = False,
        progress: Progress | None = None,
    ) -> Published:
        """Publish ``multihashes`` under ``context_id``."""
        if not multihashes:
            raise PublisherError("no multihashes to publish")
        if not metadata:
            raise SchemaError("an advertisement with entries needs metadata")
        for i, mh in enumerate(multihashes):
            try:
                check_multihash(mh)
            except BadCid as exc:
                raise BadCid(f"multihash {i} is malformed: {exc}") from None
        addrs = tuple(addresses if addresses is not None else self.store.config().addresses)
        ep = self._extended(extended, override)
        draft = self._ad(context_id, entries=NO_ENTRIES, metadata=metadata, addresses=addrs, ep=ep)
        draft.validate()  # context ID and metadata limits, before any block is written
        entries, chunks = self._write_chunks(multihashes, progress)
        prior = self.store.context(context_id)
        count = len(multihashes) + (prior.count if prior and not prior.removed else 0)
        ad = replace(draft, entries=entries)
        return self._commit(ad, ep=ep, extended=extended, kind="add", count=count, chunks=chunks)

    def remove(self, context_id: bytes) -> Published:
        """Publish the removal of everything under ``context_id``."""
        self._live_context(context_id)
        ad = self._ad(context_id, entries=NO_ENTRIES, metadata=b"", addresses=(), is_rm=True)
        return self._commit(ad, kind="remove")

    def update_metadata(self, context_id: bytes, metadata: bytes) -> Published:
        """Publish new metadata for ``context_id`` without re-sending its entries."""
        prior = self._live_context(context_id)
        if not metadata:
            raise SchemaError("new metadata must not be empty")
        addrs = tuple(self.store.config().addresses)
        ad = self._ad(context_id, entries=NO_ENTRIES, metadata=metadata, addresses=addrs)
        return self._commit(ad, kind="metadata", count=prior.count)

    # --- internals -------------------------------------------------------------------------

    def _live_context(self, context_id: bytes) -> ContextRecord:
        record = self.store.context(context_id)
        if record is None or record.removed:
            state = "already removed" if record else "never published"
            name = context_id.decode(errors="replace")
            raise UnknownContext(f"context ID {name!r} is {state}")
        return record

    def _ad(
        self,
        context_id: bytes,
        *,
        entries: Link,
        metadata: bytes,
        addresses: tuple[str, ...],
        is_rm: bool = False,
        ep: ExtendedProvider | None = None,
    ) -> Advertisement:
        return Advertisement(
            provider=str(self.peer_id),
            addresses=addresses,
            entries=entries,
            context_id=context_id,
            metadata=metadata,
            is_rm=is_rm,
            previous_id=self.store.head(),
            extended_provider=ep,
        )

    def _extended(
        self, extended: Sequence[ExtraProvider], override: bool
    ) -> ExtendedProvider | None:
        if not extended:
            return None
        providers = [Provider(str(e.key.peer_id()), e.addresses, e.metadata) for e in extended]
        if all(p.id != str(self.peer_id) for p in providers):
            providers.insert(0, Provider(str(self.peer_id), (), b""))
        return ExtendedProvider(providers=tuple(providers), override=override)

    def _write_chunks(self, mhs: Sequence[bytes], progress: Progress | None) -> tuple[Link, int]:
        size = max(1, self.store.config().chunk_size)
        starts = list(range(0, len(mhs), size))
        nxt: Link | None = None
        for start in reversed(starts):  # last chunk first, so each can link to the next
            chunk = EntryChunk(entries=tuple(mhs[start : start + size]), next=nxt)
            nxt, raw = encode_block(chunk.to_node(), self.codec)
            self.store.put_blocks([(nxt, raw)])
            if progress is not None:
                progress(len(chunk.entries))
        assert nxt is not None
        return nxt, len(starts)

    def _commit(
        self,
        ad: Advertisement,
        *,
        kind: str,
        ep: ExtendedProvider | None = None,
        extended: Sequence[ExtraProvider] = (),
        count: int = 0,
        chunks: int = 0,
    ) -> Published:
        keys = {str(e.key.peer_id()): e.key for e in extended}
        signed = sign_advertisement(ad, self.key, keys if ep else None)
        link, raw = encode_block(signed.to_node(), self.codec)
        head = SignedHead.create(link, self.key, self.store.config().topic)
        seq = self.store.last_seq() + 1
        context = ContextRecord(ad=str(link), removed=ad.is_rm, count=count)
        record = ChainRecord(seq, str(link), b64(ad.context_id), kind, count)
        self.store.commit_ad(
            link, raw, signed_head=head.encode(), chain=record, context=(ad.context_id, context)
        )
        return Published(str(link), seq, kind, ad.context_id, count, chunks)
