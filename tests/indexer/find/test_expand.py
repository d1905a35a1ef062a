"""Extended-provider expansion, storetheindex's ``server/find/extended_providers_test.go`` cases.

These drive ``provider_results`` with registry records directly, so they also cover what the
ingest path cannot produce (metadata on the main provider's own extended-provider entries);
``test_conformance.py`` covers the same rules end to end.
"""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
import trio

from indexer.find.expand import Finder, context_override, provider_results
from indexer.find.model import AddrInfo, ProviderResult, go_string
from store import KV, IndexStore, ProviderRecord, ValueRecord, value_key
from store.index import ExtendedProviderRecord as Ep
from tests.builders import key, multihash

MAIN = str(key(541).peer_id())
EP1 = str(key(542).peer_id())
EP2 = str(key(543).peer_id())
CTX = b"test-context-id-1"
MD = b"test-metadata-1"
VALUE = ValueRecord(key(541).peer_id().raw, CTX, MD)


KEY = base64.b64encode(CTX).decode()


def record(
    chain: list[Ep], contextual: list[Ep] | None = None, override: bool = False
) -> ProviderRecord:
    per_context = {} if contextual is None else {KEY: contextual}
    return ProviderRecord(
        addresses=["/ip4/1.1.1.1/tcp/1"],
        extended=chain,
        context_extended=per_context,
        context_override={KEY: True} if override else {},
    )


def result(peer: str, addrs: list[str], metadata: bytes = MD) -> ProviderResult:
    return ProviderResult(CTX, metadata, AddrInfo(peer, addrs))


MAIN_RESULT = result(MAIN, ["/ip4/1.1.1.1/tcp/1"])


def test_extended_provider_has_its_own_metadata_context_level_first() -> None:
    rec = record([Ep(EP1, ["/a"], b"ep1-md")], [Ep(EP2, ["/b"], b"ep2-md")])
    assert provider_results(MAIN, rec, VALUE) == [
        MAIN_RESULT,
        result(EP2, ["/b"], b"ep2-md"),
        result(EP1, ["/a"], b"ep1-md"),
    ]


def test_extended_provider_inherits_the_main_metadata() -> None:
    rec = record([Ep(EP1, ["/a"], b"")], [Ep(EP2, ["/b"], b"")])
    assert provider_results(MAIN, rec, VALUE) == [
        MAIN_RESULT,
        result(EP2, ["/b"]),
        result(EP1, ["/a"]),
    ]


def test_other_contexts_get_only_chain_level_ones() -> None:
    rec = record([Ep(EP1, ["/a"], b"")], [Ep(EP2, ["/b"], b"")])
    other = ValueRecord(VALUE.provider, b"test-context-id-2", MD)
    assert provider_results(MAIN, rec, other) == [
        ProviderResult(b"test-context-id-2", MD, AddrInfo(MAIN, ["/ip4/1.1.1.1/tcp/1"])),
        ProviderResult(b"test-context-id-2", MD, AddrInfo(EP1, ["/a"])),
    ]


def test_context_override_drops_chain_level_ones() -> None:
    rec = record([Ep(EP1, ["/a"], b"")], [Ep(EP2, ["/b"], b"")], override=True)
    assert context_override(rec, KEY)
    assert provider_results(MAIN, rec, VALUE) == [MAIN_RESULT, result(EP2, ["/b"])]
    other = ValueRecord(VALUE.provider, b"test-context-id-2", MD)  # only its own context
    assert [r.provider.id for r in provider_results(MAIN, rec, other) if r.provider] == [MAIN, EP1]


def test_an_override_without_context_level_providers_overrides_nothing() -> None:
    rec = msgspec.structs.replace(record([Ep(EP1, ["/a"], b"")]), context_override={KEY: True})
    assert not context_override(rec, KEY)
    assert provider_results(MAIN, rec, VALUE) == [MAIN_RESULT, result(EP1, ["/a"])]


def test_main_provider_entries_only_when_their_metadata_differs() -> None:
    same, empty = Ep(MAIN, ["/same"], MD), Ep(MAIN, ["/empty"], b"")
    rec = record([same, empty, Ep(MAIN, ["/chain"], b"chain-md")], [same, empty])
    assert provider_results(MAIN, rec, VALUE) == [
        MAIN_RESULT,
        result(MAIN, ["/chain"], b"chain-md"),
    ]
    rec = record([same], [Ep(MAIN, ["/ctx"], b"ctx-md")])
    assert provider_results(MAIN, rec, VALUE) == [MAIN_RESULT, result(MAIN, ["/ctx"], b"ctx-md")]


def test_peer_ids_print_as_base58_and_bad_ones_are_skipped() -> None:
    as_cid = key(542).peer_id().to_cid()
    rec = record([Ep(as_cid, ["/a"], b""), Ep("not-a-peer", ["/x"], b"")])
    assert provider_results(MAIN, rec, VALUE) == [MAIN_RESULT, result(EP1, ["/a"])]


def test_go_string_replaces_each_invalid_byte() -> None:
    assert go_string(b"lobster") == "lobster"
    assert go_string(b"a\xe2\x80b\xffc\xed\xa0\x80") == "a\ufffd\ufffdb\ufffdc\ufffd\ufffd\ufffd"


def test_finder_reuses_expanded_results_only_while_nothing_changed(tmp_path: Path) -> None:
    """Cached expansions never outlive the registry record or the value they came from."""
    mh, other = multihash(1), multihash(2)
    provider = key(541).peer_id().raw
    with KV(tmp_path / "db") as kv:
        kv.write_batch(
            [
                *IndexStore.put_provider(
                    provider, ProviderRecord(addresses=["/ip4/1.1.1.1/tcp/1"])
                ),
                *IndexStore.put_value(provider, CTX, MD),
                *IndexStore.put_multihashes(value_key(provider, CTX), [mh, other]),
            ]
        )
        finder = Finder(IndexStore(kv))

        def addrs() -> list[list[str]]:
            found = trio.run(finder.results, mh)
            return [r.provider.addrs for r in found if r.provider is not None]

        assert addrs() == addrs() == [["/ip4/1.1.1.1/tcp/1"]]  # the second answer: reused
        kv.write_batch(IndexStore.put_provider(provider, ProviderRecord(addresses=["/dns4/x"])))
        assert addrs() == [["/dns4/x"]]
        kv.write_batch(IndexStore.put_value(provider, CTX, b"new"))
        assert [r.metadata for r in trio.run(finder.find, [mh, other])[1].provider_results] == [
            b"new"
        ]
        kv.write_batch(IndexStore.remove_context(provider, CTX))
        assert addrs() == [] and trio.run(finder.find, [mh, other]) == []
