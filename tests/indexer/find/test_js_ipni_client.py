"""A real JS IPNI content-routing client finds the providers of indexed CIDs on our find server.

The client is libp2p's ``@libp2p/ipni-content-routing`` (pinned in ``tests/js/package.json``,
installed by ``npm ci`` there; the fixture installs it when missing).  ``tests/js/ipni.mjs`` runs
its ``findProviders`` against ``serve_find`` over a LevelDB index built by the real ingester, and
prints what it yields, each request it made and a copy of each answer.

What the client does, read from its source (2.0.2): ``GET {base}/cid/{cid}?cascade=ipfs-dht``
with ``Accept: application/x-ndjson`` only, yields the lines whose ``Metadata`` is exactly
bitswap (``gBI=``), and swallows every failure (logged, nothing yielded).  It never asks for
JSON, so the JSON path is checked here two other ways over the same index: our ``/cid`` JSON
answer holds exactly the results the client got as NDJSON lines, and the real delegated routing
client (``tests/js/providers.mjs``, Helia's) reads the same providers from a non-streaming
(JSON-only) routing server, as ``tests/indexer/routing/test_js_client.py`` does for its index.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import base58
import trio

from indexer.routing import routing_handler
from sync import Link, PrivateKey
from sync.model.cid import RAW, encode_uvarint
from sync.model.metadata import bitswap, graphsync_filecoinv1, ipfs_gateway_http
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder, key, link, multihash
from tests.conftest import JS
from tests.indexer.find.conftest import find_rig

NDJSON = "application/x-ndjson"
DAG_PB = 0x70

P1, P2, P3, E = (key(n) for n in (701, 702, 703, 704))
P1_ADDRS = ("/ip4/10.7.0.1/tcp/4001", "/dns4/p1.example.com/tcp/443/wss")
P2_ADDRS = ("/ip6/2001:db8::7:2/tcp/4001", "/ip4/10.7.0.2/udp/4001/quic-v1")
P3_ADDRS = ("/ip4/10.7.0.3/tcp/4001",)
E_ADDRS = ("/dns4/e.example.com/tcp/443/https",)
BITSWAP, GATEWAY = bitswap(), ipfs_gateway_http()
GRAPHSYNC = graphsync_filecoinv1(link(b"piece-7"), True, False)
X, Y, Z, MISSING = (multihash(n) for n in (7001, 7002, 7003, 7099))

# The CIDs the client is given, in three forms: CIDv1 raw (base32), CIDv0, CIDv1 dag-pb.
X_CID = str(Link(b"\x01" + encode_uvarint(RAW) + X))
Y_CID = base58.b58encode(Y).decode()
Z_CID = str(Link(b"\x01" + encode_uvarint(DAG_PB) + Z))
MISSING_CID = str(Link(b"\x01" + encode_uvarint(RAW) + MISSING))
CIDS = [X_CID, Y_CID, Z_CID, MISSING_CID]


def chains() -> list[ChainBuilder]:
    """X: P1, P2 (bitswap), P3 (graphsync); Y: P1; Z: P2 (gateway) with E (bitswap) beside it."""
    one, two, three = ChainBuilder(), ChainBuilder(), ChainBuilder()
    one.add(P1, [X, Y], context_id=b"p1", metadata=BITSWAP, addresses=P1_ADDRS)
    two.add(P2, [X], context_id=b"p2", metadata=BITSWAP, addresses=P2_ADDRS)
    two.add(
        P2,
        [Z],
        context_id=b"p2z",
        metadata=GATEWAY,
        addresses=P2_ADDRS,
        extended=[(P2, (), b""), (E, E_ADDRS, BITSWAP)],
    )
    three.add(P3, [X], context_id=b"p3", metadata=GRAPHSYNC, addresses=P3_ADDRS)
    return [one, two, three]


def peer(k: PrivateKey) -> str:
    return str(k.peer_id())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# What the client yields per CID: bitswap providers only, by peer ID, with their addresses.
FOUND: dict[str, dict[str, list[str]]] = {
    X_CID: {peer(P1): list(P1_ADDRS), peer(P2): list(P2_ADDRS)},
    Y_CID: {peer(P1): list(P1_ADDRS)},
    Z_CID: {peer(E): list(E_ADDRS)},
    MISSING_CID: {},
}
# What the server sends per indexed CID: (provider, ContextID, Metadata) of each NDJSON line.
SENT: dict[str, set[tuple[str, str, str]]] = {
    X_CID: {
        (peer(P1), b64(b"p1"), "gBI="),
        (peer(P2), b64(b"p2"), "gBI="),
        (peer(P3), b64(b"p3"), b64(GRAPHSYNC)),
    },
    Y_CID: {(peer(P1), b64(b"p1"), "gBI=")},
    Z_CID: {(peer(P2), b64(b"p2z"), b64(GATEWAY)), (peer(E), b64(b"p2z"), "gBI=")},
}


async def run_node(node: str, script: str, *args: str) -> list[dict[str, Any]]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [node, str(JS / script), *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def found(answer: dict[str, Any]) -> dict[str, list[str]]:
    out = {p["id"]: p["multiaddrs"] for p in answer["providers"]}
    assert len(out) == len(answer["providers"]), "a provider was yielded twice"
    assert all(p["protocols"] == [] for p in answer["providers"])
    return out


async def test_ipni_client_finds_the_bitswap_providers_over_ndjson(
    tmp_path: Path, node: str
) -> None:
    """Per CID, the client yields exactly the bitswap providers with their addresses, from one
    NDJSON request whose answer holds every provider (graphsync and gateway ones too, which the
    client skips), with no error logged; for a CID not indexed it yields nothing and does not
    throw: our 404 ``no results for query`` (storetheindex's text) is, to this client, one line it
    cannot parse, which it logs and drops.  Our JSON answer to ``/cid`` holds the same results."""
    async with find_rig(tmp_path, chains()) as rig:
        answers = await run_node(node, "ipni.mjs", rig.base, *CIDS)
        assert [a["cid"] for a in answers] == CIDS
        for answer in answers:
            cid = answer["cid"]
            assert found(answer) == FOUND[cid], cid
            [request] = answer["requests"]
            assert request["url"] == f"{rig.base}/cid/{cid}?cascade=ipfs-dht"
            assert request["accept"] == NDJSON
            if cid == MISSING_CID:
                assert (request["status"], request["body"]) == (404, "no results for query\n")
                [error] = answer["errors"]
                assert "findProviders errored: SyntaxError" in error, error
                continue
            assert (request["status"], request["contentType"], answer["errors"]) == (
                200,
                NDJSON,
                [],
            )
            body = request["body"]
            assert body.endswith("\n")
            lines = [json.loads(line) for line in body.splitlines()]
            sent = {(r["Provider"]["ID"], r["ContextID"], r["Metadata"]) for r in lines}
            assert (sent, len(lines)) == (SENT[cid], len(SENT[cid])), cid
            for line in lines:
                want = {peer(P1): P1_ADDRS, peer(P2): P2_ADDRS, peer(P3): P3_ADDRS}
                assert line["Provider"]["Addrs"] == list(want.get(line["Provider"]["ID"], E_ADDRS))
            r = await rig.client.get(f"/cid/{cid}", headers={"accept": "application/json"})
            assert r.headers["content-type"] == "application/json; charset=utf-8"
            [result] = r.json()["MultihashResults"]
            assert result["ProviderResults"] == lines


async def test_delegated_routing_client_finds_the_same_providers_in_json(
    tmp_path: Path, node: str, nursery: trio.Nursery
) -> None:
    """Over the same index, Helia's delegated routing client, served JSON only
    (``streaming=False``), yields for each CID exactly the providers the IPNI client saw sent:
    the bitswap ones with the addresses the IPNI client yielded, the others with their protocol;
    nothing for the CID not indexed."""
    async with find_rig(tmp_path, chains()) as rig:
        handler = routing_handler(rig.index, streaming=False)
        listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        answers = await run_node(
            node, "providers.mjs", base, json.dumps([{"cid": c} for c in CIDS])
        )
        assert [a["cid"] for a in answers] == CIDS
        protocols = {
            X_CID: {
                peer(P1): ["transport-bitswap"],
                peer(P2): ["transport-bitswap"],
                peer(P3): ["transport-graphsync-filecoinv1"],
            },
            Y_CID: {peer(P1): ["transport-bitswap"]},
            Z_CID: {peer(P2): ["transport-ipfs-gateway-http"], peer(E): ["transport-bitswap"]},
            MISSING_CID: {},
        }
        for answer in answers:
            cid = answer["cid"]
            got = {r["ID"]: (r["Addrs"], r["Protocols"]) for r in answer["records"]}
            assert len(got) == len(answer["records"]), cid
            assert {p: protos for p, (_, protos) in got.items()} == protocols[cid], cid
            bitswap_peers = {
                p: a for p, (a, protos) in got.items() if "transport-bitswap" in protos
            }
            assert bitswap_peers == FOUND[cid], cid
