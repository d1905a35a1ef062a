"""Conformance: JSON bodies byte-for-byte as go-libipni marshals them, from a really ingested chain.

The pcache fixtures were produced by Go (go-libipni ``pcache/provider_cache_test.go``): one
``ProviderInfo`` with chain-level extended providers, and the ``ProviderResult``s expected for
ContextID ``lobster`` with metadata ``barreleye``.  We have no keys for their peer IDs, so the
chain is built with our own keys and the same addresses, metadata and structure, and the fixture
text is compared after swapping in our peer IDs, ad CID and publisher address.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from string import Template

import base58
import msgspec

from indexer.find.model import FindResponse, ProviderInfo, ProviderResult, decode, encode
from sync import Link
from sync.model.cid import RAW
from sync.model.metadata import bitswap, ipfs_gateway_http
from tests.builders import ChainBuilder, key, multihash
from tests.indexer.find.conftest import add_broken_entries, find_rig

FIXTURE_PROVIDER = "12D3KooWNSRG5wTShNu6EXCPTkoH7dWsphKAPrbvQchHa5arfsDC"
FIXTURE_EXTENDED = "12D3KooWHf7cahZvAVB36SGaVXc7fiVDoJdRJq42zDRcN2s2512h"
FIXTURE_AD = "baguqeerami47x7t3d4raobz7s2cq5np2fy2lhl3xh2ppiwuevxwbdamuikla"
ADDR = "/ip4/209.94.92.6/tcp/24001"
EP_ADDR = "/ip4/209.94.92.6/tcp/24123"
HTTP_ADDR = "/ip4/209.94.92.6/tcp/7575/http"


def compact(raw: bytes | str) -> bytes:
    return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def fill(template: str, **values: object) -> bytes:
    """The expected body: ``$name`` placeholders replaced (JSON itself never holds ``$``)."""
    return Template(template).substitute({k: str(v) for k, v in values.items()}).encode()


def test_fixtures_parse_into_our_types_and_reencode_byte_for_byte(fixtures_dir: Path) -> None:
    cases: list[tuple[str, type[object]]] = [
        ("pcache-providers-response-ProviderInfo.json", ProviderInfo),
        ("pcache-chain-level-ep-expected-ProviderResults.json", list[ProviderResult]),
    ]
    for name, kind in cases:
        raw = (fixtures_dir / "go-libipni" / name).read_bytes()
        value = decode(raw, kind)
        assert encode(value) == compact(raw), name
    assert b64(bitswap()) == "gBI=" and b64(ipfs_gateway_http()) == "oBIA"


async def test_pcache_chain_level_extended_providers(tmp_path: Path, fixtures_dir: Path) -> None:
    provider, extended = key(501), key(502)
    chain = ChainBuilder()
    eps = [(extended, (EP_ADDR,), bitswap()), (provider, (HTTP_ADDR,), ipfs_gateway_http())]
    chain.add(provider, None, context_id=b"", metadata=b"", addresses=(ADDR,), extended=eps)
    mhs = [multihash(i) for i in range(5)]
    head = chain.add(provider, mhs, context_id=b"lobster", metadata=b"barreleye", addresses=(ADDR,))
    swaps = {
        FIXTURE_PROVIDER: str(provider.peer_id()),
        FIXTURE_EXTENDED: str(extended.peer_id()),
        FIXTURE_AD: str(head),
    }

    def ours(name: str) -> bytes:
        text = (fixtures_dir / "go-libipni" / name).read_text()
        for theirs, mine in swaps.items():
            text = text.replace(theirs, mine)
        return compact(text)

    async with find_rig(tmp_path, [chain]) as rig:
        publisher_addr = rig.publisher_addrs[str(provider.peer_id())]
        info = decode(ours("pcache-providers-response-ProviderInfo.json"), ProviderInfo)
        assert info.publisher is not None
        publisher = msgspec.structs.replace(info.publisher, addrs=[publisher_addr])
        expected_info = encode(msgspec.structs.replace(info, publisher=publisher))

        r = await rig.client.get(f"/providers/{provider.peer_id()}")
        assert r.status_code == 200 and r.content == expected_info
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert r.headers["access-control-allow-origin"] == "*"
        by_cid = await rig.client.get(f"/providers/{provider.peer_id().to_cid()}")
        assert by_cid.content == expected_info
        r = await rig.client.get("/providers")
        assert r.status_code == 200 and r.content == b"[" + expected_info + b"]"

        results = ours("pcache-chain-level-ep-expected-ProviderResults.json")
        for mh in mhs:
            body = b'{"MultihashResults":[{"Multihash":"%s","ProviderResults":%s}]}' % (
                b64(mh).encode(),
                results,
            )
            r = await rig.client.get(f"/multihash/{base58.b58encode(mh).decode()}")
            assert r.status_code == 200 and r.content == body
            assert (await rig.client.get(f"/multihash/{mh.hex()}")).content == body
            cid = Link(b"\x01" + bytes([RAW]) + mh)
            assert (await rig.client.get(f"/cid/{cid}")).content == body
            r = await rig.client.post("/multihash", json={"Multihashes": [b64(mh)]})
            assert r.status_code == 200 and r.content == body

            r = await rig.client.get(f"/cid/{cid}", headers={"accept": "application/x-ndjson"})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/x-ndjson"
            assert r.headers["transfer-encoding"] == "chunked"
            lines = [compact(json.dumps(item)) + b"\n" for item in json.loads(results)]
            assert r.content == b"".join(lines)
        decode(body, FindResponse)  # and the whole body parses as go-libipni's FindResponse


async def test_context_level_extended_providers_and_shapes(tmp_path: Path) -> None:
    """storetheindex's union rule, empty ContextID, no addresses and LastError, byte-exact."""
    main, ctx_ep, chain_ep, bare = key(511), key(512), key(513), key(514)
    chain = ChainBuilder()
    chain_eps = [(main, (), b""), (chain_ep, ("/dns4/c",), b"")]
    chain.add(main, None, context_id=b"", metadata=b"", extended=chain_eps)
    mhs = [multihash(b"ctx-%d" % i) for i in range(3)]
    chain.add(
        main,
        mhs,
        context_id=b"c<1>",
        metadata=bitswap(),
        extended=[(main, (), b""), (ctx_ep, ("/dns4/x",), b"meta-x")],
    )
    add_broken_entries(chain, main, b"broken")
    other = ChainBuilder()
    other.add(bare, [multihash(b"bare")], context_id=b"", metadata=b"\x01", addresses=())
    main_id, ctx_id, chain_id = main.peer_id(), ctx_ep.peer_id(), chain_ep.peer_id()
    async with find_rig(tmp_path, [chain, other]) as rig:
        ids = {"main": main_id, "ctx": ctx_id, "chain": chain_id, "bare": bare.peer_id()}
        r = await rig.client.get(f"/multihash/{base58.b58encode(mhs[0]).decode()}")
        assert r.content == fill(
            '{"MultihashResults":[{"Multihash":"$mh","ProviderResults":['
            '{"ContextID":"YzwxPg==","Metadata":"gBI=","Provider":{"ID":"$main","Addrs":["$addr"]}},'
            '{"ContextID":"YzwxPg==","Metadata":"bWV0YS14","Provider":{"ID":"$ctx","Addrs":["/dns4/x"]}},'
            '{"ContextID":"YzwxPg==","Metadata":"gBI=","Provider":{"ID":"$chain","Addrs":["/dns4/c"]}}'
            "]}]}",
            mh=b64(mhs[0]),
            addr="/ip4/127.0.0.1/tcp/9999",  # make_ad's default provider address
            **ids,
        )

        r = await rig.client.get(f"/providers/{main_id}")
        info = decode(r.content, ProviderInfo)
        assert info.last_error.startswith("SchemaError")
        # LastErrorTime: when the error was recorded, on the applier's clock (the rig's, fixed)
        assert info.last_error_time == info.last_advertisement_time == "2023-06-28T12:21:06Z"
        assert r.content.endswith(b'"LastErrorTime":"2023-06-28T12:21:06Z"}')
        extended = fill(
            '"ExtendedProviders":{"Providers":[{"ID":"$main","Addrs":[]},'
            '{"ID":"$chain","Addrs":["/dns4/c"]}],'
            '"Contextual":[{"Override":false,"ContextID":"c\\u003c1\\u003e","Providers":'
            '[{"ID":"$main","Addrs":[]},{"ID":"$ctx","Addrs":["/dns4/x"]}],'
            '"Metadatas":[null,"bWV0YS14"]}],"Metadatas":[null,null]},"FrozenAt":null,',
            **ids,
        )
        assert extended in r.content

        r = await rig.client.get(f"/multihash/{base58.b58encode(multihash(b'bare')).decode()}")
        assert r.content == fill(
            '{"MultihashResults":[{"Multihash":"$mh","ProviderResults":'
            '[{"Metadata":"AQ==","Provider":{"ID":"$bare","Addrs":[]}}]}]}',
            mh=b64(multihash(b"bare")),
            **ids,
        )
        r = await rig.client.get("/providers")
        assert [p.addr_info.id for p in decode(r.content, list[ProviderInfo])] == sorted(
            [str(main_id), str(bare.peer_id())], key=base58.b58decode
        )


async def test_context_override_suppresses_chain_level_extended_providers(tmp_path: Path) -> None:
    """storetheindex: context-level first, then chain-level unless that context overrides them."""
    main, ctx_ep, chain_ep = key(521), key(522), key(523)
    chain = ChainBuilder()
    chain_eps = [(main, (), b""), (chain_ep, ("/dns4/c",), b"")]
    chain.add(main, None, context_id=b"", metadata=b"", extended=chain_eps)
    ctx_eps = [(main, (), b""), (ctx_ep, ("/dns4/x",), b"")]
    mh_o, mh_n, mh_f = multihash(b"override"), multihash(b"no-override"), multihash(b"flipped")
    chain.add(main, [mh_o], context_id=b"o", extended=ctx_eps, override=True)
    chain.add(main, [mh_n], context_id=b"n", extended=ctx_eps, override=False)
    chain.add(main, [mh_f], context_id=b"f", extended=ctx_eps, override=True)
    chain.add(main, None, context_id=b"f", extended=ctx_eps, override=False)  # flag cleared
    ids = {"main": main.peer_id(), "ctx": ctx_ep.peer_id(), "chain": chain_ep.peer_id()}

    def result(peer: str, addrs: str) -> str:
        return (
            '{"ContextID":"$c","Metadata":"gBI=","Provider":{"ID":"$'
            + peer
            + '","Addrs":['
            + addrs
            + "]}}"
        )

    own, by_ctx, by_chain = (
        result("main", "$a"),
        result("ctx", '"/dns4/x"'),
        result("chain", '"/dns4/c"'),
    )
    addr = '"/ip4/127.0.0.1/tcp/9999"'
    async with find_rig(tmp_path, [chain]) as rig:
        for mh, ctx, results in [
            (mh_o, b"o", [own, by_ctx]),
            (mh_n, b"n", [own, by_ctx, by_chain]),
            (mh_f, b"f", [own, by_ctx, by_chain]),
        ]:
            r = await rig.client.get(f"/multihash/{mh.hex()}")
            assert r.status_code == 200
            assert r.content == fill(
                '{"MultihashResults":[{"Multihash":"$mh","ProviderResults":['
                + ",".join(results)
                + "]}]}",
                mh=b64(mh),
                c=b64(ctx),
                a=addr,
                **ids,
            ), ctx
        r = await rig.client.get(f"/providers/{main.peer_id()}")
        info = decode(r.content, ProviderInfo)
        assert info.extended_providers is not None
        overrides = {c.context_id: c.override for c in info.extended_providers.contextual}
        assert overrides == {"f": False, "n": False, "o": True}
