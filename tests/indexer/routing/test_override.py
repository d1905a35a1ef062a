"""A context-level ``Override`` in routing answers: the chain-level extended providers go away.

storetheindex's order (``server/find/server.go``): the provider itself, its context-level
extended providers, then, unless the context sets ``Override``, its chain-level ones.
"""

from __future__ import annotations

import httpx

from tests.indexer.routing.conftest import (
    E1_ADDRS,
    E2_ADDRS,
    F_ADDRS,
    NOT_OVERRIDDEN,
    OVERRIDDEN,
    World,
    cid,
    record,
)

BITSWAP = {"transport-bitswap": "gBI="}


async def providers(base_url: str, mh: bytes, ndjson: bool = False) -> list[dict[str, object]]:
    headers = {"accept": "application/x-ndjson"} if ndjson else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        resp = await client.get(f"/routing/v1/providers/{cid(mh)}", headers=headers)
    assert resp.status_code == 200
    if ndjson:
        return [httpx.Response(200, content=line).json() for line in resp.text.splitlines()]
    found: list[dict[str, object]] = resp.json()["Providers"]
    return found


async def test_override_leaves_out_the_chain_level_extended_providers(
    base_url: str, world: World
) -> None:
    f = record(world.peer("f"), F_ADDRS, **BITSWAP)
    e1 = record(world.peer("e1"), E1_ADDRS, **BITSWAP)
    e2 = record(world.peer("e2"), E2_ADDRS, **BITSWAP)
    for ndjson in (False, True):
        assert await providers(base_url, OVERRIDDEN, ndjson) == [f, e1]
        assert await providers(base_url, NOT_OVERRIDDEN, ndjson) == [f, e1, e2]
