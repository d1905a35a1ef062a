"""Schemathesis against the find server's own ``/openapi.json``: no 5xx, answers as documented.

A real find server (delegated routing mounted beside it, as the daemon does) on 127.0.0.1 over a
really ingested chain whose multihashes include the document's example multihash, and whose
provider record is also stored under the example peer ID, so the documented examples reach real
200 answers.  The installed ``schemathesis`` CLI runs as a subprocess with a fixed seed and a
bounded number of examples per operation; the server records every status it answered.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import base58
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.find import find_handler
from indexer.find.openapi import EXAMPLES, OPENAPI, PATTERNS
from indexer.find.request import (
    BadInput,
    batch_multihashes,
    parse_cid,
    parse_multihash_text,
    parse_peer,
)
from indexer.routing import PREFIX, routing_handler
from store import IndexStore
from sync import Link, PeerId
from sync.model.metadata import bitswap, ipfs_gateway_http
from sync.net.httpserver import Request, Response, serve_tcp
from tests.builders import ChainBuilder, key, multihash
from tests.indexer.find.conftest import find_rig

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
EXAMPLE_MH = base58.b58decode(EXAMPLES["multihash"])
# Per operation; the run is ~1,600 requests, about 13 s here.  Both can be changed to explore.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261201"))
# Every check but negative_data_rejection: the server knowingly accepts more than the patterns
# describe (any whole multihash: "11" is an empty identity multihash), so a schema-violating
# request may rightly get a 404 "no results" instead of a 4xx.
EXCLUDED = "negative_data_rejection"


def test_examples_match_their_patterns_and_name_one_multihash() -> None:
    for kind, example in EXAMPLES.items():
        assert re.search(PATTERNS[kind], example), kind
    assert Link.parse(EXAMPLES["cid"]).multihash.raw == EXAMPLE_MH
    assert parse_multihash_text(EXAMPLES["multihash"]) == EXAMPLE_MH
    assert str(PeerId.parse(EXAMPLES["peerid"])) == EXAMPLES["peerid"]
    [batch] = OPENAPI["paths"]["/multihash"]["post"]["requestBody"]["content"].values()
    assert batch_multihashes(json.dumps(batch["example"]).encode()) == [EXAMPLE_MH]
    assert re.search(PATTERNS["batch"], batch["example"]["Multihashes"][0])


def _inner(pattern: str) -> str:
    assert pattern.startswith("^") and pattern.endswith("$")
    return pattern[1:-1]


@settings(max_examples=300)
@given(
    mh=st.from_regex(_inner(PATTERNS["multihash"]), fullmatch=True),
    cid=st.from_regex(_inner(PATTERNS["cid"]), fullmatch=True),
    peer=st.from_regex(_inner(PATTERNS["peerid"]), fullmatch=True),
    batch=st.lists(st.from_regex(_inner(PATTERNS["batch"]), fullmatch=True), max_size=3),
)
def test_every_string_a_pattern_allows_is_accepted(
    mh: str, cid: str, peer: str, batch: list[str]
) -> None:
    assert not isinstance(parse_multihash_text(mh), BadInput), mh
    assert not isinstance(parse_cid(cid), BadInput), cid
    assert not isinstance(parse_peer(peer), BadInput), peer
    body = json.dumps({"Multihashes": batch}).encode()
    assert not isinstance(batch_multihashes(body), BadInput), batch


async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    provider, extended = key(601), key(602)
    chain = ChainBuilder()
    eps = [
        (extended, ("/ip4/209.94.92.6/tcp/24123",), bitswap()),
        (provider, ("/ip4/209.94.92.6/tcp/7575/http",), ipfs_gateway_http()),
    ]
    addrs = ("/ip4/209.94.92.6/tcp/24001",)
    chain.add(provider, None, context_id=b"", metadata=b"", addresses=addrs, extended=eps)
    mhs = [EXAMPLE_MH, *(multihash(i) for i in range(20))]
    chain.add(provider, mhs, context_id=b"ctx", metadata=bitswap(), addresses=addrs)
    answered: Counter[tuple[str, int]] = Counter()  # ("GET /multihash/", 200): count
    async with find_rig(tmp_path, [chain]) as rig:
        record = rig.index.provider(provider.peer_id().raw)
        assert record is not None and rig.index.lookup(EXAMPLE_MH)
        example_peer = PeerId.parse(EXAMPLES["peerid"]).raw
        rig.index.kv.write_batch(IndexStore.put_provider(example_peer, record))
        find, routing = find_handler(rig.index, "test"), routing_handler(rig.index)

        async def handle(request: Request) -> Response:  # the daemon's mount, recorded
            response = await (routing if request.path.startswith(PREFIX) else find)(request)
            first, sub, _ = request.path.lstrip("/").partition("/")
            answered[(f"{request.method} /{first}{'/' if sub else ''}", response.status)] += 1
            return response

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, handle, "127.0.0.1", 0)
            base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            command = [
                SCHEMATHESIS, "run", f"{base}/openapi.json", "--checks", "all",
                "--exclude-checks", EXCLUDED, "--max-examples", str(MAX_EXAMPLES),
                "--seed", str(SEED), "--generation-database", "none", "--no-color",
                "--workers", "1", "--request-timeout", "10",
            ]  # fmt: skip
            with trio.fail_after(180):
                done = await trio.run_process(
                    command, capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path
                )
            nursery.cancel_scope.cancel()
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-8000:]
    assert "0 generated" not in output and " passed" in output, output[-3000:]
    errors = {k: n for k, n in answered.items() if k[1] >= 500}
    assert errors == {}, errors
    assert answered.total() >= 8 * MAX_EXAMPLES, answered  # it really ran
    # Schema-valid requests got past the input checks to real answers, on every operation.
    for route in (
        "GET /multihash/", "POST /multihash", "GET /cid/", "GET /providers", "GET /providers/",
        "GET /routing/", "GET /stats", "GET /health", "GET /openapi.json",
    ):  # fmt: skip
        assert answered[(route, 200)] > 0, (route, sorted(answered.items()))
