"""GET /routing/v1/providers/{cid} over real TCP on a real ingested index: shapes and HTTP rules."""

from __future__ import annotations

import json
from typing import Any

import base58
import httpx
import trio

from indexer.routing import routing_handler
from sync.model.cid import encode_uvarint
from tests.indexer.routing.conftest import (
    A_ADDRS,
    E1_ADDRS,
    E2_ADDRS,
    GATEWAY_MH,
    MISSING,
    ODD,
    ODD_CODE,
    ODD_MH,
    REMOVED,
    SHARED,
    World,
    b64,
    cid,
    record,
    serve,
    shared_records,
)

NDJSON = "application/x-ndjson"
HELIA_ACCEPT = "application/x-ndjson, application/json;q=0.8"  # what the JS client sends


def normalized(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for r in records:
        assert r["ID"] not in out, f"{r['ID']} listed twice"
        out[r["ID"]] = r | ({"Protocols": sorted(r["Protocols"])} if "Protocols" in r else {})
    return out


def expected(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return normalized(list(records.values()))


async def get(
    base: str, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return await client.request(method, path, headers=headers)


def providers_path(mh: bytes) -> str:
    return f"/routing/v1/providers/{cid(mh)}"


async def test_json_answer_has_one_record_per_peer_across_contexts(
    base_url: str, world: World
) -> None:
    resp = await get(base_url, providers_path(SHARED))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert list(body) == ["Providers"]
    assert normalized(body["Providers"]) == expected(shared_records(world))
    first = json.dumps(body["Providers"][0])
    assert first.startswith('{"Schema": "peer", "ID": ')  # the spec's field order
    # A is indexed under two contexts and E2 extends both: still one record each
    assert len(body["Providers"]) == 5


async def test_ndjson_streams_the_same_records_one_per_line(base_url: str, world: World) -> None:
    for accept in (NDJSON, HELIA_ACCEPT, f"text/html, {NDJSON};q=0.5"):
        resp = await get(base_url, providers_path(SHARED), headers={"accept": accept})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == NDJSON
        assert resp.headers["transfer-encoding"] == "chunked"  # streamed, not buffered
        lines = resp.text.splitlines()
        assert resp.text.endswith("\n") and len(lines) == 5
        assert normalized([json.loads(line) for line in lines]) == expected(shared_records(world))


async def test_json_unless_ndjson_is_asked_for(base_url: str) -> None:
    for accept in ("", "*/*", "application/json", f"{NDJSON};q=0", "garbage;;q=x"):
        resp = await get(base_url, providers_path(SHARED), headers={"accept": accept})
        assert resp.headers["content-type"] == "application/json", accept
        assert len(resp.json()["Providers"]) == 5


async def test_extended_providers_context_level_then_chain_level(
    base_url: str, world: World
) -> None:
    resp = await get(base_url, providers_path(GATEWAY_MH))
    got = normalized(resp.json()["Providers"])
    gateway, bitswap = {"transport-ipfs-gateway-http": "oBIA"}, {"transport-bitswap": "gBI="}
    assert got == expected(
        {
            # A's own entry in the context's list brings bitswap beside the value's gateway
            "a": record(world.peer("a"), A_ADDRS, **gateway, **bitswap),
            "e1": record(world.peer("e1"), E1_ADDRS, **bitswap),  # its own metadata
            "e2": record(world.peer("e2"), E2_ADDRS, **gateway),  # chain-level, inherits
        }
    )
    assert [r["ID"] for r in resp.json()["Providers"]] == [world.peer(n) for n in ("a", "e1", "e2")]


async def test_protocols_outside_the_table_are_named_as_go_multicodec_does(
    base_url: str, world: World
) -> None:
    resp = await get(base_url, providers_path(ODD_MH))
    name = f"Code({ODD_CODE})"
    assert normalized(resp.json()["Providers"]) == expected(
        {
            "a": record(world.peer("a"), A_ADDRS, **{name: b64(ODD)}),
            "e2": record(world.peer("e2"), E2_ADDRS, **{name: b64(ODD)}),
        }
    )


async def test_any_cid_form_of_the_multihash_finds_it(base_url: str) -> None:
    v0 = base58.b58encode(SHARED).decode()
    dag_pb_v1 = "z" + base58.b58encode(b"\x01" + encode_uvarint(0x70) + SHARED).decode()
    for text in (v0, dag_pb_v1, cid(SHARED).upper()):  # base58btc v0, base58btc v1, base32upper
        resp = await get(base_url, f"/routing/v1/providers/{text}")
        assert resp.status_code == 200 and len(resp.json()["Providers"]) == 5, text


async def test_no_records_is_404_with_an_empty_answer(base_url: str) -> None:
    for mh in (MISSING, REMOVED):  # never indexed; indexed then its context removed
        resp = await get(base_url, providers_path(mh))
        assert resp.status_code == 404
        assert resp.json() == {"Providers": []}
        assert "max-age=15," in resp.headers["cache-control"]
        resp = await get(base_url, providers_path(mh), headers={"accept": NDJSON})
        assert resp.status_code == 404 and resp.content == b""
        assert resp.headers["content-type"] == NDJSON


async def test_headers_for_caches_and_browsers(base_url: str) -> None:
    resp = await get(base_url, providers_path(SHARED), headers={"accept-encoding": "identity"})
    h = resp.headers
    assert h["vary"] == "Accept" and "content-encoding" not in h
    assert h["cache-control"] == (
        "public, max-age=300, stale-while-revalidate=3600, stale-if-error=3600"
    )
    assert h["last-modified"].endswith(" GMT")
    assert h["access-control-allow-origin"] == "*"
    assert h["x-content-type-options"] == "nosniff"
    gz = await get(base_url, providers_path(SHARED), headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip" and gz.json() == resp.json()
    assert gz.headers["vary"] == "Accept, Accept-Encoding"


async def test_methods(base_url: str) -> None:
    path = providers_path(SHARED)
    head = await get(base_url, path, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    options = await get(base_url, path, method="OPTIONS")
    assert options.status_code == 200
    assert options.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        resp = await get(base_url, path, method=method)
        assert resp.status_code == 405, method
        assert resp.headers["allow"] == "GET, HEAD, OPTIONS"
    bad = await get(base_url, "/routing/v1/providers/notacid", method="POST")
    assert bad.status_code == 405  # the method is judged before the CID


async def test_bad_requests(base_url: str) -> None:
    for path in (
        "/routing/v1/providers/notacid",
        "/routing/v1/providers/bafy",
        "/routing/v1/providers/Qm" + "1" * 44,
        "/routing/v1/providers/zzzz",
        "/routing/v1/providers/",
        "/routing/v1/providers",
        f"{providers_path(SHARED)}/extra",
        "/routing/v1/nonsense",
        "/routing/v1/",
    ):
        resp = await get(base_url, path)
        assert resp.status_code == 400, path
        assert resp.headers["access-control-allow-origin"] == "*"
    resp = await get(base_url, "/routing/v1/providers/notacid")
    assert resp.text.startswith("bad CID")


async def test_unsupported_endpoints_and_foreign_paths(base_url: str, world: World) -> None:
    for path in (
        f"/routing/v1/peers/{world.peer('a')}",
        "/routing/v1/ipns/k51x",
        "/routing/v1/dht/closest/peers/x",
    ):
        assert (await get(base_url, path)).status_code == 501, path
    for path in ("/", "/routing/v2/providers/x", f"/cid/{cid(SHARED)}", "/routing/v1"):
        assert (await get(base_url, path)).status_code == 404, path


async def test_options_json_only_cap_and_empty_status(nursery: trio.Nursery, world: World) -> None:
    url = await serve(nursery, routing_handler(world.index, streaming=False, max_json=2))
    resp = await get(url, providers_path(SHARED), headers={"accept": NDJSON})
    assert resp.headers["content-type"] == "application/json"
    assert len(resp.json()["Providers"]) == 2  # the JSON cap; NDJSON has none
    url = await serve(nursery, routing_handler(world.index, max_json=2))
    resp = await get(url, providers_path(SHARED), headers={"accept": NDJSON})
    assert len(resp.text.splitlines()) == 5
    url = await serve(nursery, routing_handler(world.index, empty_status=200))
    resp = await get(url, providers_path(MISSING))
    assert resp.status_code == 200 and resp.json() == {"Providers": []}  # IPIP-0513
