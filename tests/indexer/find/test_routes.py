"""Every route and every status over real HTTP: lookups, batch, NDJSON, errors, health, stats."""

from __future__ import annotations

import base64
from pathlib import Path

import base58
import pytest

from indexer import __version__
from indexer.find.model import FindResponse, Stats, decode
from sync import Link
from sync.model.cid import DAG_JSON
from sync.model.metadata import bitswap
from tests.builders import ChainBuilder, key, multihash
from tests.indexer.find.conftest import FindRig, find_rig

NO_RESULTS = b"no results for query\n"
BAD_MH = b"find: input is not a valid base58 or hex encoded multihash\n"


def b58(mh: bytes) -> str:
    return base58.b58encode(mh).decode()


def b64(mh: bytes) -> str:
    return base64.b64encode(mh).decode()


@pytest.fixture
def chains() -> tuple[ChainBuilder, ChainBuilder]:
    one, two = ChainBuilder(), ChainBuilder()
    eps = [(key(531), (), b""), (key(533), ("/dns4/ep",), b"")]
    one.add(key(531), None, context_id=b"", metadata=b"", extended=eps)
    one.add(key(531), [multihash(i) for i in range(10)], context_id=b"A")
    one.add(key(531), [multihash(i) for i in range(10, 15)], context_id=b"B")
    one.add(key(531), None, context_id=b"B", is_rm=True, metadata=b"")
    two.add(key(532), [multihash(i) for i in range(5, 7)], context_id=b"T")
    return one, two


async def status(
    rig: FindRig,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    json: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    r = await rig.client.request(method, path, content=content, json=json, headers=headers)
    assert r.headers["access-control-allow-origin"] == "*"
    return r.status_code, r.content


async def test_lookups_batch_and_ndjson(tmp_path: Path, chains: tuple[ChainBuilder, ...]) -> None:
    async with find_rig(tmp_path, chains) as rig:
        one, two = str(key(531).peer_id()), str(key(532).peer_id())
        ep = str(key(533).peer_id())
        r = await rig.client.get(f"/multihash/{b58(multihash(5))}", params={"cascade": "ipfs-dht"})
        [result] = decode(r.content, FindResponse).multihash_results
        got = {(p.provider.id, p.context_id) for p in result.provider_results if p.provider}
        assert got == {(one, b"A"), (ep, b"A"), (two, b"T")}  # two has no extended providers
        r = await rig.client.get(f"/multihash/{b58(multihash(5))}", headers={"accept": "*/*"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")

        assert await status(rig, "GET", f"/multihash/{b58(multihash(12))}") == (404, NO_RESULTS)
        ndjson = {"accept": "application/json, application/x-ndjson;q=0.5"}  # NDJSON still wins
        r = await rig.client.get(f"/multihash/{b58(multihash(12))}", headers=ndjson)
        assert (r.status_code, r.content) == (404, NO_RESULTS)  # removed context
        r = await rig.client.get(f"/multihash/{b58(multihash(6))}", headers=ndjson)
        assert r.headers["x-content-type-options"] == "nosniff"
        lines = r.content.split(b"\n")
        assert len(lines) == 4 and lines[-1] == b"" and all(b"\n" not in x for x in lines)

        batch = [multihash(1), multihash(99), multihash(6), multihash(1)]
        r = await rig.client.post("/multihash", json={"Multihashes": [b64(m) for m in batch]})
        found = decode(r.content, FindResponse).multihash_results
        assert [m.multihash for m in found] == [multihash(1), multihash(6), multihash(1)]
        assert [len(m.provider_results) for m in found] == [2, 3, 2]
        many = [b64(multihash(i)) for i in range(40)]  # over the threshold: looked up in a thread
        r = await rig.client.post("/multihash", json={"Multihashes": many})
        assert len(decode(r.content, FindResponse).multihash_results) == 10
        for body in [{"Multihashes": []}, {"Multihashes": None}, {}, {"Multihashes": [many[-1]]}]:
            assert await status(rig, "POST", "/multihash", json=body) == (404, NO_RESULTS)


async def test_every_error_status(tmp_path: Path, chains: tuple[ChainBuilder, ...]) -> None:
    async with find_rig(tmp_path, chains) as rig:
        for path in ["/", "/nope", "/multihash/a/b", "/providers/x/y", "/health/"]:
            assert await status(rig, "GET", path) == (404, b"Not Found\n"), path
        for arg in ["zzz0", "", "1220ab", "12", "0" * 3000, "Qm" + "1" * 5000, "é"]:
            assert await status(rig, "GET", f"/multihash/{arg}") == (400, BAD_MH), arg
        for path in ["/cid/notacid", "/cid/", "/cid", "/cid/" + "z" * 3000, f"/cid/{'b' * 9}"]:
            code, body = await status(rig, "GET", path)
            assert code == 400 and body.startswith(b"find: "), path
        unknown = key(539).peer_id()
        for arg in ["notapeer", "", "1" * 4000, str(Link.make(DAG_JSON, b"x")), "Qm" + "z" * 44]:
            code, body = await status(rig, "GET", f"/providers/{arg}")
            assert code == 400 and body.startswith(b"cannot decode provider id"), arg
        for arg in [str(unknown), unknown.to_cid()]:
            assert await status(rig, "GET", f"/providers/{arg}") == (404, b"provider not found\n")

        for body in [b"{", b"[]", b'{"Multihashes": "x"}', b'{"Multihashes": ["!!"]}']:
            code, text = await status(rig, "POST", "/multihash", content=body)
            assert code == 400 and text.startswith(b"find: bad batch request"), body
        bad = {"Multihashes": [b64(multihash(1)), b64(b"\x12\x20abc")]}
        code, text = await status(rig, "POST", "/multihash", json=bad)
        assert (code, text) == (400, b"find: Multihashes[1] is not a valid multihash\n")
        r = await rig.client.post("/multihash", content=b"x" * ((1 << 20) + 1))
        assert r.status_code == 413  # refused by the HTTP server before the handler runs

        mh = f"/multihash/{b58(multihash(1))}"
        for method, path, allow in [
            ("POST", mh, "GET"),
            ("HEAD", mh, "GET"),
            ("GET", "/multihash", "POST"),
            ("PUT", "/cid/x", "GET"),
            ("DELETE", "/providers", "GET"),
            ("POST", f"/providers/{unknown}", "GET"),
            ("PUT", "/health", "GET"),
            ("POST", "/stats", "GET"),
            ("DELETE", "/openapi.json", "GET"),
        ]:
            r = await rig.client.request(method, path)
            assert (r.status_code, r.headers["allow"]) == (405, allow), (method, path)
        r = await rig.client.options("/multihash")
        assert (r.status_code, r.headers["allow"]) == (200, "POST")

        html = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9"}
        offered = b"accept: application/x-ndjson, application/json, */*\n"
        assert await status(rig, "GET", mh, headers=html) == (406, offered)
        for bad_accept in [";;;;", "", "application/json,", "a/b/c", "text/html; q"]:
            code, text = await status(rig, "GET", mh, headers={"accept": bad_accept})
            assert code == 406 and text.startswith(b"invalid accept header"), bad_accept
        ndjson_only = {"accept": "application/x-ndjson"}
        for method, path in [("POST", "/multihash"), ("GET", "/providers"), ("GET", "/stats")]:
            r = await rig.client.request(method, path, headers=ndjson_only, json={})
            assert (r.status_code, r.text) == (406, "accept: application/json, */*\n")
        browser = {"accept": html["accept"] + ",*/*;q=0.8"}
        assert (await status(rig, "GET", mh, headers=browser))[0] == 200


async def test_health_stats_and_openapi(tmp_path: Path, chains: tuple[ChainBuilder, ...]) -> None:
    async with find_rig(tmp_path, chains) as rig:
        r = await rig.client.get("/health")
        assert (r.status_code, r.text) == (200, f"ready {__version__}\n")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        r = await rig.client.get("/stats")
        assert r.content.startswith(b'{"EntriesEstimate":') and b',"EntriesCount":' in r.content
        stats = decode(r.content, Stats)
        assert stats.entries_count == rig.index.count_keys() == 10 + 2  # B was removed
        assert stats.entries_estimate > 0
        r = await rig.client.get("/openapi.json")
        assert r.status_code == 200 and r.json()["openapi"].startswith("3.")


def test_bitswap_is_the_default_metadata() -> None:
    assert bitswap() == b"\x80\x12"  # what ChainBuilder's ads carry when metadata is not given
