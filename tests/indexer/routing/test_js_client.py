"""A real JS delegated routing client finds the providers of indexed CIDs, in NDJSON and JSON.

The client is Helia's ``@helia/delegated-routing-v1-http-api-client`` (pinned in
``tests/js/package.json``, installed by ``npm ci`` there; the fixture installs it when missing).
``tests/js/providers.mjs`` runs its ``getProviders`` against our server and prints what it yields.
The client always asks for NDJSON first, so its JSON path is driven by a server with
``streaming=False`` (a non-streaming server, which the spec allows); a wrapper records which
content type each answer had, so both paths are known to have run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from indexer.routing import routing_handler
from sync.net.httpserver import Handler, Request, Response
from tests.conftest import JS
from tests.indexer.routing.conftest import (
    A_ADDRS,
    E1_ADDRS,
    E2_ADDRS,
    GATEWAY_MH,
    MISSING,
    SHARED,
    World,
    cid,
    record,
    serve,
    shared_records,
)

GS = "transport-graphsync-filecoinv1"


def recording(handler: Handler, seen: list[tuple[int, str | None]]) -> Handler:
    async def handle(request: Request) -> Response:
        response = await handler(request)
        seen.append((response.status, response.content_type))
        return response

    return handle


async def run_client(node: str, base: str, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    script = str(JS / "providers.mjs")
    with trio.fail_after(60):
        done = await trio.run_process(
            [node, script, base, json.dumps(queries)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def as_client_sees(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Our records as the client yields them: ``Protocols`` always present, in any order here."""
    return {peer: r | {"Protocols": sorted(r.get("Protocols", []))} for peer, r in records.items()}


def by_peer(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["ID"]: r | {"Protocols": sorted(r["Protocols"])} for r in records}
    assert len(out) == len(records), "a peer was yielded twice"
    return out


def queries_and_answers(w: World) -> list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    shared = shared_records(w)
    a, e2 = w.peer("a"), w.peer("e2")
    gateway, bitswap = {"transport-ipfs-gateway-http": "oBIA"}, {"transport-bitswap": "gBI="}
    return [
        ({"cid": cid(SHARED)}, shared),
        ({"cid": cid(SHARED), "filterProtocols": [GS]}, {a: shared[a], e2: shared[e2]}),
        (
            {"cid": cid(SHARED), "filterAddrs": ["!ip6", "unknown"]},
            {**shared, a: shared[a] | {"Addrs": [A_ADDRS[0], *A_ADDRS[2:]]}},
        ),
        ({"cid": cid(SHARED), "filterProtocols": ["unknown"]}, {w.peer("d"): shared[w.peer("d")]}),
        (
            {"cid": cid(GATEWAY_MH)},
            {
                a: record(a, A_ADDRS, **gateway, **bitswap),
                w.peer("e1"): record(w.peer("e1"), E1_ADDRS, **bitswap),
                e2: record(e2, E2_ADDRS, **gateway),
            },
        ),
        ({"cid": cid(MISSING)}, {}),  # our 404: the client yields nothing
    ]


@pytest.mark.parametrize(
    ("streaming", "content_type"), [(True, "application/x-ndjson"), (False, "application/json")]
)
async def test_helia_client_finds_the_providers(
    nursery: trio.Nursery, world: World, node: str, streaming: bool, content_type: str
) -> None:
    seen: list[tuple[int, str | None]] = []
    base = await serve(nursery, recording(routing_handler(world.index, streaming=streaming), seen))
    cases = queries_and_answers(world)
    answers = await run_client(node, base, [query for query, _ in cases])
    assert [answer["cid"] for answer in answers] == [query["cid"] for query, _ in cases]
    for (query, want), answer in zip(cases, answers, strict=True):
        assert by_peer(answer["records"]) == as_client_sees(want), query
    assert seen == [(200, content_type)] * (len(cases) - 1) + [(404, content_type)]
