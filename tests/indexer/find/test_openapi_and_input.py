"""The OpenAPI document matches the routes; no input, however malformed, gets a 500."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import base58
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.find import OPENAPI, ROUTES, find_handler
from indexer.find.model import AddrInfo, ProviderResult, encode, encode_line
from indexer.find.openapi import openapi_json
from indexer.find.request import b58decode
from indexer.routing import ROUTES as ROUTING_ROUTES
from indexer.routing.filters import FILTER_ADDRS, FILTER_PROTOCOLS
from store import KV, IndexStore, ProviderRecord, value_key
from sync.net.httpserver import Handler, Request
from tests.builders import key, multihash

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_openapi_document_is_valid_and_lists_every_route() -> None:
    document = json.loads(openapi_json())
    assert document == json.loads(json.dumps(OPENAPI))
    assert document["openapi"].startswith("3.0.") and document["info"]["title"]
    listed = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = ROUTES | ROUTING_ROUTES  # the daemon mounts delegated routing beside the find API
    assert set(ROUTING_ROUTES).isdisjoint(ROUTES)
    assert listed == {(path, m) for path, methods in served.items() for m in methods}
    for path, ops in document["paths"].items():
        assert set(ops) <= METHODS
        templated = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, path
            assert op["responses"] and all(re.fullmatch(r"[1-5]\d\d", c) for c in op["responses"])
            assert all("description" in r for r in op["responses"].values())
    for ref in refs(document):
        assert isinstance(resolve(document, ref), dict), ref


def test_openapi_routing_path_lists_its_filters_media_types_and_statuses() -> None:
    document = json.loads(openapi_json())
    for path in ROUTING_ROUTES:
        op = document["paths"][path]["get"]
        query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        assert query == {FILTER_PROTOCOLS, FILTER_ADDRS}
        assert set(op["responses"]) == {"200", "400", "404"}
        for status in ("200", "404"):
            media = op["responses"][status]["content"]
            assert set(media) == {"application/json", "application/x-ndjson"}
            answer = resolve(document, media["application/json"]["schema"]["$ref"])
            line = resolve(document, media["application/x-ndjson"]["schema"]["$ref"])
            item = answer["properties"]["Providers"]["items"]["$ref"]
            assert item == media["application/x-ndjson"]["schema"]["$ref"]  # the same records
            # a peer record, or (for clients older than IPIP-417) a legacy bitswap record
            peer, legacy = (resolve(document, one["$ref"]) for one in line["oneOf"])
            assert peer["properties"]["Schema"]["enum"] == ["peer"]
            assert legacy["properties"]["Schema"]["enum"] == ["bitswap"]
            assert legacy["required"] == ["Schema", "Protocol", "ID", "Addrs"]


def test_json_is_escaped_as_go_escapes_it() -> None:
    value = ProviderResult(b"", b"\x01", AddrInfo("id", ["/dns4/a&b<c>/\u2028\u2029"]))
    expected = (
        b'{"Metadata":"AQ==","Provider":{"ID":"id","Addrs":'
        b'["/dns4/a\\u0026b\\u003cc\\u003e/\\u2028\\u2029"]}}'
    )
    assert encode(value) == expected and encode_line(value) == expected + b"\n"


PATHS = ["/multihash/", "/multihash", "/cid/", "/providers/", "/providers", "/stats", "/x/"]
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
PREFIXES = ["Qm", "12D3KooW", "bafy", "bafz", "z", "f01", "k51", "1", "m", "u"]
ARGS = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=40).map(bytes.hex),
    st.tuples(st.sampled_from(PREFIXES), st.text(B58, max_size=50)).map("".join),
)
ACCEPTS = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["application/x-ndjson"]))
BODIES = st.one_of(
    st.binary(max_size=60),
    st.lists(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())).map(
        lambda items: json.dumps({"Multihashes": items}).encode()
    ),
)


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handler]:
    """A find handler over a small index written directly (no ingest: examples must be fast)."""
    kv = KV(tmp_path_factory.mktemp("find-input") / "db")
    provider = key(551).peer_id().raw
    mhs = [multihash(i) for i in range(5)]
    record = ProviderRecord(addresses=["/ip4/1.2.3.4/tcp/1"], publisher=provider)
    kv.write_batch(
        [
            *IndexStore.put_value(provider, b"ctx", b"\x80\x12"),
            *IndexStore.put_multihashes(value_key(provider, b"ctx"), mhs),
            *IndexStore.put_provider(provider, record),
        ]
    )
    yield find_handler(IndexStore(kv), "test")
    kv.close()


@settings(max_examples=300)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "BREW"]),
    path=st.sampled_from(PATHS),
    arg=ARGS,
    accept=ACCEPTS,
    body=BODIES,
)
def test_no_input_gets_a_500(
    handler: Handler, method: str, path: str, arg: str, accept: str | None, body: bytes
) -> None:
    headers = {} if accept is None else {"accept": accept}
    request = Request(method, path + arg, {}, headers, body)

    async def ask() -> int:
        return (await handler(request)).status

    assert trio.run(ask) < 500


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40).map(lambda raw: base58.b58encode(raw).decode()),
        st.text(alphabet=_B58 + "0OIl +/\t\u00e9\u2028", max_size=16),
    )
)
def test_the_find_base58_decoder_answers_as_the_library(text: str) -> None:
    """``request.b58decode`` (what path arguments are decoded with) is ``base58.b58decode``."""
    try:
        want: bytes | None = base58.b58decode(text)
    except ValueError:
        want = None
    try:
        got: bytes | None = b58decode(text)
    except ValueError:
        got = None
    assert got == want
