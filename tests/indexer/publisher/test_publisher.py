"""The persistent publisher library, on a real LevelDB in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from indexer.publisher.chain import ExtraProvider, Publisher
from indexer.publisher.store import PublisherConfig
from sync import (
    DAG_CBOR,
    NO_ENTRIES,
    Advertisement,
    BadCid,
    FieldTooLarge,
    SchemaError,
    SignedHead,
    load_advertisement,
    load_entry_chunk,
    verify_advertisement,
)
from sync.errors import AlreadyInitialized, NotInitialized, PublisherError, UnknownContext
from sync.model.metadata import bitswap
from tests.builders import key, multihash


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[Publisher]:
    p = Publisher.init(tmp_path / "pub", ["/ip4/127.0.0.1/tcp/4001"])
    yield p
    p.close()


def walk(pub: Publisher) -> list[tuple[Advertisement, list[bytes]]]:
    """Every ad from the head back, verified, with the multihashes of its entry chain."""
    out = []
    link = pub.head()
    while link is not None:
        raw = pub.block(link)
        assert raw is not None
        ad = load_advertisement(link, raw)
        assert verify_advertisement(ad).signer == pub.peer_id
        mhs: list[bytes] = []
        nxt = ad.entries if ad.has_entries else None
        while nxt is not None:
            chunk = load_entry_chunk(nxt, pub.block(nxt) or b"")
            mhs += chunk.entries
            nxt = chunk.next
        out.append((ad, mhs))
        link = ad.previous_id
    return out


def test_chain_of_three_verifies_back_to_genesis(pub: Publisher) -> None:
    first = pub.add(b"a", [multihash(i) for i in range(5)], bitswap())
    pub.add(b"b", [multihash(i) for i in range(5, 7)], bitswap())
    third = pub.remove(b"a")
    chain = walk(pub)
    assert [ad.context_id for ad, _ in chain] == [b"a", b"b", b"a"]
    removal, _ = chain[0]
    assert removal.is_rm and removal.entries == NO_ENTRIES
    assert chain[2][1] == [multihash(i) for i in range(5)]
    assert chain[2][0].previous_id is None
    assert pub.head() == third.link and first.seq == 1 and third.seq == 3
    head = SignedHead.decode(pub.signed_head() or b"")
    assert head.head == third.link and head.verify() == pub.peer_id
    assert head.topic == "/indexer/ingest/mainnet"
    assert [r.kind for r in pub.chain()] == ["remove", "add", "add"]
    assert [r.seq for r in pub.chain(2)] == [3, 2]


def test_entries_are_chunked_in_order(pub: Publisher) -> None:
    pub.store.set_config(PublisherConfig(chunk_size=3, addresses=["/ip4/1.2.3.4/tcp/1"]))
    seen: list[int] = []
    result = pub.add(b"ctx", [multihash(i) for i in range(10)], bitswap(), progress=seen.append)
    assert result.chunks == 4 and sum(seen) == 10
    [(ad, mhs)] = walk(pub)
    assert mhs == [multihash(i) for i in range(10)]
    assert ad.addresses == ("/ip4/1.2.3.4/tcp/1",)


def test_metadata_update_and_extended_providers(pub: Publisher) -> None:
    pub.add(b"c", [multihash(1)], bitswap())
    pub.update_metadata(b"c", b"\xa0\x12\x00")
    other = key(5)
    pub.add(
        b"d",
        [multihash(2)],
        bitswap(),
        extended=[ExtraProvider(other, ("/ip4/9.9.9.9/tcp/9",), b"\x80\x12")],
    )
    chain = walk(pub)
    ep = chain[0][0].extended_provider
    assert ep is not None
    assert [p.id for p in ep.providers] == [str(pub.peer_id), str(other.peer_id())]
    update = chain[1][0]
    assert update.entries == NO_ENTRIES and update.metadata == b"\xa0\x12\x00"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.add(b"x", [], bitswap()), PublisherError),
        (lambda p: p.add(b"x", [b"\x12\x20short"], bitswap()), BadCid),
        (lambda p: p.add(b"x", [multihash(1)], b""), SchemaError),
        (lambda p: p.add(b"x" * 65, [multihash(1)], bitswap()), FieldTooLarge),
        (lambda p: p.add(b"x", [multihash(1)], b"m" * 1025), FieldTooLarge),
        (lambda p: p.remove(b"never"), UnknownContext),
        (lambda p: p.update_metadata(b"never", bitswap()), UnknownContext),
    ],
)
def test_refused_operations_leave_the_chain_unchanged(
    pub: Publisher, call: Callable[[Publisher], object], error: type[Exception]
) -> None:
    pub.add(b"keep", [multihash(1)], bitswap())
    before = (pub.head(), pub.signed_head(), pub.chain())
    with pytest.raises(error):
        call(pub)
    assert (pub.head(), pub.signed_head(), pub.chain()) == before


def test_removed_context_cannot_be_removed_twice(pub: Publisher) -> None:
    pub.add(b"c", [multihash(1)], bitswap())
    pub.remove(b"c")
    with pytest.raises(UnknownContext, match="already removed"):
        pub.remove(b"c")
    pub.add(b"c", [multihash(2)], bitswap())  # a removed context can be published again
    pub.remove(b"c")


def test_state_survives_reopen_and_init_is_once(tmp_path: Path) -> None:
    pub = Publisher.init(tmp_path / "p")
    pub.add(b"c", [multihash(1)], bitswap())
    peer, head = pub.peer_id, pub.head()
    pub.close()
    with pytest.raises(AlreadyInitialized):
        Publisher.init(tmp_path / "p")
    again = Publisher.open(tmp_path / "p")
    assert (again.peer_id, again.head()) == (peer, head)
    assert oct((tmp_path / "p" / "identity.key").stat().st_mode & 0o777) == "0o600"
    again.close()
    with pytest.raises(NotInitialized, match="publisher init"):
        Publisher.open(tmp_path / "elsewhere")


def test_dag_cbor_publisher(tmp_path: Path) -> None:
    pub = Publisher.init(tmp_path / "cbor", codec="dag-cbor")
    result = pub.add(b"c", [multihash(i) for i in range(4)], bitswap())
    assert result.link.codec == DAG_CBOR
    [(ad, mhs)] = walk(pub)
    assert mhs == [multihash(i) for i in range(4)] and ad.entries.codec == DAG_CBOR
    head = SignedHead.decode(pub.signed_head() or b"")  # heads are always dag-json
    assert head.head == result.link
    pub.close()
    with pytest.raises(PublisherError, match="codec"):
        Publisher.init(tmp_path / "other", codec="json")


def test_a_blocks_gzip_encoding_is_kept_or_made_once(
    pub: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept when written; made and kept for a block written before (the key deleted here); a
    store that refuses that write still gives the encoding; a short block has none."""
    import gzip

    from store import StoreError

    pub.add(b"a", [multihash(i) for i in range(100)], bitswap())
    head = pub.head()
    assert head is not None
    ad = load_advertisement(head, pub.block(head) or b"")
    raw = pub.block(ad.entries) or b""
    kept = pub.gzipped_block(ad.entries, raw)
    assert kept is not None and gzip.decompress(kept) == raw
    pub.store.kv.delete(b"z/" + ad.entries.raw)
    made = pub.gzipped_block(ad.entries, raw)
    assert made is not None and pub.store.kv.get(b"z/" + ad.entries.raw) == made
    pub.store.kv.delete(b"z/" + ad.entries.raw)

    def refuse(key: bytes, value: bytes, sync: bool = False) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(pub.store.kv, "put", refuse)
    refused = pub.gzipped_block(ad.entries, raw)
    assert refused is not None and gzip.decompress(refused) == raw
    assert pub.store.kv.get(b"z/" + ad.entries.raw) is None
    assert pub.gzipped_block(ad.entries, b"short") is None
