"""A bounded loop of random requests against a real admin server (it has no OpenAPI document, so
no schemathesis): never a 5xx, never past the token without it, and the server still answers.

The ingester's fetcher factory is the one fake (a seam): it refuses to dial, so a random sync
request can never send traffic anywhere, whatever address it names.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio

from indexer.admin import AdminApi, Metrics
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.policy import LivePolicy
from staging import StagingArea
from store import KV
from sync import PeerId, PrivateKey
from sync.errors import FetchFailed
from sync.ipnisync.fetch import HttpFetcher
from sync.net.httpserver import serve_tcp

TOKEN = "random-requests-token-0123456789"
REQUESTS = int(os.environ.get("ADMIN_FUZZ_REQUESTS", "1500"))
SEED = int(os.environ.get("ADMIN_FUZZ_SEED", "20261201"))
PEERS = [str(PrivateKey.generate().peer_id()) for _ in range(3)]
ROUTES = ["/ingest/sync"] * 4 + ["/ingest/allow", "/ingest/block", "/staging", "/publishers"]
ROUTES += ["/status", "/healthcheck", "/metrics", "/", "/nope", "/ingest"]
JUNK = ["", "/", "//", "/..", "/%00", "/\u00e9", "/x" * 300, "/" + "9" * 3000, "/Qm", "/bafz"]
ADDRS = [
    "/ip4/8.8.8.8/tcp/1/http",  # public: never dialled either (see the module's docstring)
    "/ip4/127.0.0.1/tcp/1/http",
    "/ip4/10.0.0.1/tcp/4001",
    "/dns4/localhost/tcp/1/https",
    "/ip6/::1/tcp/1/http/p2p/" + PEERS[0],
    "not a multiaddr",
    "/ip4/1.2.3.4/tcp/99999/http",
    "",
]


TOKENS = ["none", "right", "right", "wrong"]


def no_dialling(publisher: PeerId, addrs: Sequence[str]) -> HttpFetcher:
    raise FetchFailed("this test never dials")


def pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def junk_text(rng: random.Random) -> str:
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x800)]))
                   for _ in range(rng.randrange(0, 40)))  # fmt: skip


def random_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes, str]:
    """(method, path, query, body, which token: none, right, wrong)."""
    if rng.random() < 0.25:  # a well-formed sync request, so that the loop gets deep too
        body = json.dumps(pick(rng, ADDRS)).encode() if rng.random() < 0.8 else b""
        query = {"depth": pick(rng, ["1", "0", "x"])} if rng.random() < 0.3 else {}
        return "POST", f"/ingest/sync/{pick(rng, PEERS)}", query, body, pick(rng, TOKENS)
    method = pick(rng, ["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"])
    path = pick(rng, ROUTES)
    tail = rng.random()
    if tail < 0.4:
        path += "/" + pick(rng, [*PEERS, PEERS[0].lower(), PEERS[1][:-1], "12D3KooW", "x"])
    elif tail < 0.7:
        path += pick(rng, JUNK)
    query = {}
    if rng.random() < 0.4:
        for name in rng.sample(["depth", "resync", "x"], rng.randrange(1, 3)):
            query[name] = pick(
                rng, ["0", "5", "-1", "1e9", "true", "T", "nope", "", junk_text(rng)]
            )
    body = b""
    shape = rng.random()
    if shape < 0.4:
        body = json.dumps(pick(rng, ADDRS)).encode()
    elif shape < 0.45:
        body = rng.randbytes(rng.randrange(1, 200))
    elif shape < 0.55:
        body = json.dumps([pick(rng, ADDRS)]).encode()
    token = pick(rng, TOKENS)
    return method, path, query, body, token


async def test_random_requests_never_get_a_5xx_nor_pass_without_the_token(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    kv = KV(tmp_path / "indexer")
    ingester = Ingester(kv, no_dialling, config=IngestConfig())
    staging = StagingArea(kv)
    metrics = Metrics(staging, lambda: ingester.syncing)
    peer = PrivateKey.generate().peer_id()
    apis = [  # the same node, with refuse_private_addrs off and on
        AdminApi(
            ingester, staging, LivePolicy(), metrics, peer, tmp_path, token=TOKEN, refuse_private=on
        )
        for on in (False, True)
    ]
    answered: Counter[tuple[str, int]] = Counter()
    headers = {
        "none": {},
        "right": {"authorization": f"Bearer {TOKEN}"},
        "wrong": {"authorization": f"Bearer {TOKEN[::-1]}"},
    }
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            urls = []
            for api in apis:
                listeners = await nursery.start(serve_tcp, api.handler(), "127.0.0.1", 0)
                urls.append(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")
            async with httpx.AsyncClient(timeout=10) as client:
                with trio.fail_after(120):
                    for i in range(REQUESTS):
                        method, path, query, body, token = random_request(rng)
                        r = await client.request(
                            method, pick(rng, urls) + path, params=query, content=body,
                            headers=headers[token],
                        )  # fmt: skip
                        where = (i, method, path[:80], query, body[:80], token, r.text[:200])
                        assert r.status_code < 500, where
                        opened = path.rstrip("/") == "/healthcheck"
                        if token != "right" and not opened:
                            # a HEAD with a body is refused by the HTTP server (400) before
                            # any handler, the token check included, runs
                            refused = method == "HEAD" and bool(body)
                            assert r.status_code == (400 if refused else 401), where
                        answered[(token, r.status_code)] += 1
                    for url in urls:
                        status = await client.get(url + "/status", headers=headers["right"])
                        assert status.status_code == 200  # still answering
            nursery.cancel_scope.cancel()
    finally:
        kv.close()
    # The loop reached past the token into every kind of answer.
    assert {s for (t, s) in answered if t == "right"} >= {200, 202, 400, 403, 404, 405}, answered
