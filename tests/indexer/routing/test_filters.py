"""IPIP-484 filters over real TCP on the ingested index, plus their parsing rules and fuzzing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.routing import BadFilter, Filters, PeerRecord, routing_handler
from sync.net.httpserver import Request
from tests.indexer.routing.conftest import A_ADDRS, SHARED, World, cid

GS = "transport-graphsync-filecoinv1"
BITSWAP = "transport-bitswap"


async def providers(base: str, query: str) -> tuple[int, dict[str, list[str]], dict[str, Any]]:
    """(status, {peer: addrs}, {peer: record}) of SHARED under ``query``, in JSON and NDJSON."""
    url = f"{base}/routing/v1/providers/{cid(SHARED)}?{query}"
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(url)
        stream = await client.get(url, headers={"accept": "application/x-ndjson"})
    assert stream.status_code == resp.status_code
    records = resp.json()["Providers"]
    assert records == [json.loads(line) for line in stream.text.splitlines()]
    return resp.status_code, {r["ID"]: r["Addrs"] for r in records}, {r["ID"]: r for r in records}


def peers(w: World, *names: str) -> set[str]:
    return {w.peer(n) for n in names}


async def test_filter_protocols(base_url: str, world: World) -> None:
    w = world
    cases = {
        f"filter-protocols={BITSWAP}": peers(w, "a", "e2", "b", "c"),
        f"filter-protocols={GS}": peers(w, "a", "e2"),
        f"filter-protocols={GS.upper()}": peers(w, "a", "e2"),  # case-insensitive
        "filter-protocols=unknown": peers(w, "d"),  # metadata that does not decode
        f"filter-protocols=unknown,{GS}": peers(w, "a", "e2", "d"),
        f"filter-protocols=unknown%2C%20{GS}%2C": peers(w, "a", "e2", "d"),  # %2C, blanks
        "filter-protocols=transport-ipfs-gateway-http": set(),
        f"filter-protocols=!{BITSWAP}": set(),  # no negation: an opaque name no one carries
        "filter-protocols=": peers(w, "a", "e2", "b", "c", "d"),  # empty: no filter
        "filter-protocols=,": peers(w, "a", "e2", "b", "c", "d"),
    }
    for query, want in cases.items():
        status, got, records = await providers(base_url, query)
        assert set(got) == want, query
        assert status == (200 if want else 404), query
    _, _, records = await providers(base_url, f"filter-protocols={GS}")
    assert records[w.peer("a")]["Protocols"].count(BITSWAP) == 1  # returned unchanged


async def test_filter_addrs(base_url: str, world: World) -> None:
    w = world
    a_ip4_tcp, a_ip6, a_tls, a_webtransport = A_ADDRS
    everyone_else = {
        w.peer("e2"): ["/ip4/10.0.0.2/tcp/4002/ws"],
        w.peer("b"): ["/ip4/10.0.0.3/tcp/4001"],
    }
    everyone_else[w.peer("d")] = ["/ip4/10.0.0.4/tcp/4001"]
    without_ip6 = [a_ip4_tcp, a_tls, a_webtransport]
    cases: dict[str, dict[str, list[str]]] = {
        "filter-addrs=ip6": {w.peer("a"): [a_ip6]},
        "filter-addrs=IP6": {w.peer("a"): [a_ip6]},
        "filter-addrs=webtransport,tls": {w.peer("a"): [a_tls, a_webtransport]},
        "filter-addrs=!ip6": {w.peer("a"): without_ip6, **everyone_else},
        "filter-addrs=!ip6,unknown": {w.peer("a"): without_ip6, **everyone_else, w.peer("c"): []},
        "filter-addrs=!tcp": {w.peer("a"): [a_webtransport]},
        "filter-addrs=!ip6,!quic-v1,tcp": {w.peer("a"): [a_ip4_tcp, a_tls], **everyone_else},
        "filter-addrs=unknown": {w.peer("c"): []},
        "filter-addrs=ws,unknown": {w.peer("e2"): ["/ip4/10.0.0.2/tcp/4002/ws"], w.peer("c"): []},
        "filter-addrs=webrtc-direct": {},
    }
    for query, want in cases.items():
        status, got, _ = await providers(base_url, query)
        assert got == want, query
        assert status == (200 if want else 404), query


async def test_filters_combine_and_records_keep_their_fields(base_url: str, world: World) -> None:
    query = f"filter-addrs=ip6,ws&filter-protocols={GS}"
    status, got, records = await providers(base_url, query)
    assert status == 200
    assert got == {world.peer("a"): [A_ADDRS[1]], world.peer("e2"): ["/ip4/10.0.0.2/tcp/4002/ws"]}
    assert set(records[world.peer("a")]["Protocols"]) == {BITSWAP, GS}
    assert records[world.peer("a")][BITSWAP] == "gBI="


async def test_a_filter_given_twice_is_a_400(base_url: str) -> None:
    for query in ("filter-addrs=tcp&filter-addrs=ip6", f"filter-protocols={GS}&filter-protocols=x"):
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{base_url}/routing/v1/providers/{cid(SHARED)}?{query}")
        assert resp.status_code == 400 and "given 2 times" in resp.text


def test_parsing_rules() -> None:
    rec = PeerRecord("x", ["/ip4/1.2.3.4/tcp/1", "/ip6/::1/udp/1/quic-v1"], ["Transport-Bitswap"])
    keep = Filters.parse({"filter-addrs": [" TCP , "], "filter-protocols": ["transport-bitswap"]})
    assert keep.apply(rec) == PeerRecord("x", ["/ip4/1.2.3.4/tcp/1"], ["Transport-Bitswap"])
    assert Filters.parse({}).apply(rec) is rec
    assert Filters.parse({"filter-addrs": ["!udp"]}).apply(rec) == PeerRecord(
        "x", ["/ip4/1.2.3.4/tcp/1"], ["Transport-Bitswap"]
    )
    bad_addr = PeerRecord("x", ["not a multiaddr"], [])
    assert Filters.parse({"filter-addrs": ["!udp"]}).apply(bad_addr) is None
    assert Filters.parse({"filter-protocols": ["unknown"]}).apply(bad_addr) is bad_addr
    with pytest.raises(BadFilter):
        Filters.parse({"filter-addrs": ["tcp", "udp"]})


path_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)


@given(arg=path_text, query=path_text, accept=st.sampled_from(["", "application/x-ndjson"]))
async def test_no_input_makes_a_500(world: World, arg: str, query: str, accept: str) -> None:
    handler = routing_handler(world.index)
    for raw in (arg, quote(arg, safe="")):
        request = Request(
            "GET", f"/routing/v1/providers/{raw}", parse_qs(query), {"accept": accept}
        )
        resp = await handler(request)
        assert resp.status in (200, 400, 404), (raw, query)
        if not isinstance(resp.body, bytes):
            async for _ in resp.body:
                pass
