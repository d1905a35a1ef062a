"""Clients older than IPIP-417 (boxo < 0.13, kubo <= 0.22) still find bitswap providers.

Such a client keeps only ``Schema: "bitswap"`` records and drops every ``peer`` record (boxo
v0.12 ``contentrouter.readProviderResponses``).  ``old_client_providers`` reads an answer the
same way; for a request from such a client each bitswap peer's ``peer`` record is followed by
its legacy ``bitswap`` record, and newer clients (which read both schemas) get none.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from indexer.routing import routing_handler
from indexer.routing.handler import pre_ipip417_client
from sync.net.httpserver import Request
from tests.indexer.routing.conftest import (
    A_ADDRS,
    B_ADDRS,
    E1_ADDRS,
    E2_ADDRS,
    GATEWAY_MH,
    SHARED,
    World,
    cid,
    serve,
)

OLD_KUBO = "kubo/0.22.0/3f884d3"
OLD_BOXO = "github.com/ipfs/boxo/routing/http/client@v0.12.0"
NEW_AGENTS = [
    "",
    "kubo/0.23.0/desktop",
    "kubo/0.35.0",
    "github.com/ipfs/boxo/routing/http/client@v0.13.0",
    "github.com/ipfs/boxo/routing/http/client@unknown",
    "node",
    "curl/8.5.0",
]


def old_client_records(body: bytes, ndjson: bool) -> list[dict[str, Any]]:
    """The records an old boxo client keeps: ``bitswap`` schema only, with an ID."""
    if ndjson:
        records = [json.loads(line) for line in body.decode().splitlines() if line]
    else:
        records = json.loads(body)["Providers"]
    return [r for r in records if r.get("Schema") == "bitswap" and r.get("ID")]


async def old_client_providers(
    base: str, mh: bytes, agent: str, ndjson: bool = False
) -> dict[str, list[str]]:
    """What an old client yields: the peers (ID -> addresses) of the bitswap records."""
    headers = {"user-agent": agent, "accept": "application/x-ndjson" if ndjson else "*/*"}
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{base}/routing/v1/providers/{cid(mh)}", headers=headers)
    assert r.status_code == 200
    out: dict[str, list[str]] = {}
    for record in old_client_records(r.content, ndjson):
        assert record["Protocol"] == "transport-bitswap"
        assert record["ID"] not in out, "a peer twice"
        out[record["ID"]] = record["Addrs"]
    return out


@pytest.mark.parametrize("ndjson", [False, True])
@pytest.mark.parametrize("agent", [OLD_KUBO, OLD_BOXO])
async def test_an_old_client_finds_every_bitswap_provider(
    base_url: str, world: World, agent: str, ndjson: bool
) -> None:
    found = await old_client_providers(base_url, SHARED, agent, ndjson)
    assert found == {
        world.peer("a"): list(A_ADDRS),
        world.peer("e2"): list(E2_ADDRS),
        world.peer("b"): list(B_ADDRS),
        world.peer("c"): [],
    }  # D's metadata does not decode: it is no bitswap provider
    gateway = await old_client_providers(base_url, GATEWAY_MH, agent, ndjson)
    # A offers gateway and bitswap, E1 bitswap, E2 only the gateway here: not for an old client
    assert gateway == {world.peer("a"): list(A_ADDRS), world.peer("e1"): list(E1_ADDRS)}


async def test_each_legacy_record_follows_its_peer_record(base_url: str, world: World) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(
            f"{base_url}/routing/v1/providers/{cid(SHARED)}", headers={"user-agent": OLD_KUBO}
        )
    records = r.json()["Providers"]
    schemas = [(rec["Schema"], rec["ID"]) for rec in records]
    a, e2, b, c, d = (world.peer(n) for n in ("a", "e2", "b", "c", "d"))
    assert sorted(schemas) == sorted(
        [("peer", p) for p in (a, e2, b, c, d)] + [("bitswap", p) for p in (a, e2, b, c)]
    )
    for i, rec in enumerate(records):
        if rec["Schema"] == "bitswap":
            before = records[i - 1]
            assert before["Schema"] == "peer" and before["ID"] == rec["ID"]
            assert "transport-bitswap" in before["Protocols"]
            # boxo's deprecated BitswapRecord, its fields in its order
            assert json.dumps(rec) == json.dumps(
                {
                    "Schema": "bitswap",
                    "Protocol": "transport-bitswap",
                    "ID": rec["ID"],
                    "Addrs": before["Addrs"],
                }
            )


@pytest.mark.parametrize("agent", NEW_AGENTS)
async def test_newer_clients_get_peer_records_only(base_url: str, agent: str) -> None:
    assert await old_client_providers(base_url, SHARED, agent) == {}
    assert await old_client_providers(base_url, SHARED, agent, ndjson=True) == {}


async def test_filters_mean_a_newer_client_and_the_cap_counts_legacy_records(
    nursery: trio.Nursery, base_url: str, world: World
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        url = f"{base_url}/routing/v1/providers/{cid(SHARED)}?filter-protocols=transport-bitswap"
        r = await client.get(url, headers={"user-agent": OLD_KUBO})
        assert {rec["Schema"] for rec in r.json()["Providers"]} == {"peer"}
        capped = await serve(nursery, routing_handler(world.index, max_json=3))
        r = await client.get(
            f"{capped}/routing/v1/providers/{cid(SHARED)}", headers={"user-agent": OLD_KUBO}
        )
        assert [rec["Schema"] for rec in r.json()["Providers"]] == ["peer", "bitswap", "peer"]
        never = await serve(nursery, routing_handler(world.index, legacy=lambda _: False))
        assert await old_client_providers(never, SHARED, OLD_KUBO) == {}


@pytest.mark.parametrize(
    ("agent", "query", "old"),
    [
        (OLD_KUBO, {}, True),
        ("kubo/0.18.1/", {}, True),
        ("go-ipfs/0.12.0/", {}, True),
        (OLD_BOXO, {}, True),
        ("github.com/ipfs/boxo/routing/http/client@v0.10.3", {}, True),
        (OLD_KUBO, {"filter-addrs": ["tcp"]}, False),
        *((agent, {}, False) for agent in NEW_AGENTS),
    ],
)
def test_which_clients_are_older_than_ipip_417(
    agent: str, query: dict[str, list[str]], old: bool
) -> None:
    request = Request("GET", "/routing/v1/providers/x", query, {"user-agent": agent})
    assert pre_ipip417_client(request) is old
