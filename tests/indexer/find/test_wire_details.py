"""Find wire details as go-libipni/storetheindex answer them, on a real server over LevelDB.

- ``/cid/{cid}`` takes a CIDv1 in every multibase go-multibase decodes and refuses the ones it
  does not (base45, proquint, base32z).
- ``ProviderInfo`` writes ``ExtendedProviders``, ``Lag`` (staged ads not yet applied),
  ``Inactive`` and ``LastErrorTime`` from the registry and staging area; a record written before
  the new fields existed still decodes.
- ``OPTIONS`` on every route is a CORS preflight; every answer carries
  ``Access-Control-Allow-Origin: *``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import multibase as py_multibase
import pytest
import trio
from multiformats import multibase

from indexer.find import ROUTES, serve_find
from indexer.find.info import rfc3339
from staging import StagedAd, StagingArea
from store import KV, IndexStore, ProviderRecord
from store.index import ExtendedProviderRecord
from sync.model.cid import RAW, encode_uvarint
from tests.builders import ChainBuilder, key, link, multihash
from tests.indexer.find.conftest import FIXTURE_TIME, find_rig

ENCODINGS = [
    "base2", "base8", "base10", "base16", "base16upper", "base32", "base32upper", "base32pad",
    "base32padupper", "base32hex", "base32hexupper", "base32hexpad", "base32hexpadupper",
    "base36", "base36upper", "base58btc", "base58flickr", "base64", "base64url", "base64pad",
    "base64urlpad",
]  # fmt: skip


def _slashless_multihash() -> bytes:
    """A multihash whose CID has no ``/`` in standard base64 (a path cannot carry one: Go's
    ``path.Base`` and our router both split there)."""
    for seed in range(1000):
        raw = b"\x01" + encode_uvarint(RAW) + multihash(seed)
        if "/" not in base64.b64encode(raw).decode():
            return multihash(seed)
    raise AssertionError("no such multihash")


async def test_cid_in_every_multibase_go_multibase_decodes(tmp_path: Path) -> None:
    mh = _slashless_multihash()
    chain = ChainBuilder()
    chain.add(key(1), [mh, multihash(2001)])
    raw = b"\x01" + encode_uvarint(RAW) + mh
    async with find_rig(tmp_path, [chain]) as rig:
        want = (await rig.client.get(f"/multihash/{mh.hex()}")).content
        assert want.startswith(b'{"MultihashResults"')
        texts = {name: multibase.encode(raw, name) for name in ENCODINGS}
        texts["base256emoji"] = py_multibase.encode("base256emoji", raw).decode()
        texts["base32 mixed case"] = "b" + texts["base32"][1:].upper()  # Go's is case-blind
        for name, text in texts.items():
            r = await rig.client.get(f"/cid/{text}")
            assert (r.status_code, r.content) == (200, want), (name, text)
        for name, text in [
            ("base32z", multibase.encode(raw, "base32z")),
            ("proquint", multibase.encode(raw, "proquint")),
            ("base45", "R" + "ABC"),
            ("base64 padded under m", "m" + base64.b64encode(raw + b"x").decode()),
            ("unknown prefix", "q" + texts["base32"][1:]),
            ("empty after prefix", "b"),
        ]:
            r = await rig.client.get(f"/cid/{text}")
            assert r.status_code == 400 and r.text.startswith("find: "), (name, r.text)


class OldProviderRecord(msgspec.Struct, frozen=True):
    """``ProviderRecord`` as written before ``last_error_time`` and ``inactive`` existed."""

    addresses: list[str] = msgspec.field(default_factory=list)
    publisher: bytes | None = None
    publisher_addrs: list[str] = msgspec.field(default_factory=list)
    last_ad: bytes | None = None
    last_ad_time: float | None = None
    extended: list[ExtendedProviderRecord] = msgspec.field(default_factory=list)
    extended_override: bool = False
    context_extended: dict[str, list[ExtendedProviderRecord]] = msgspec.field(default_factory=dict)
    last_error: str | None = None
    context_override: dict[str, bool] = msgspec.field(default_factory=dict)


@asynccontextmanager
async def serving(kv: KV) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_find, IndexStore(kv), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base) as client:
            yield client
        nursery.cancel_scope.cancel()


def stage(kv: KV, publisher: bytes, provider: bytes, count: int) -> None:
    """``count`` ads of ``provider`` staged by ``publisher``'s walk, none applied."""
    area = StagingArea(kv, clock=lambda: FIXTURE_TIME)
    base = area.commit_seq()
    walk = area.begin_walk(publisher, ["/ip4/127.0.0.1/tcp/1/http"], link(900).raw)
    ads = [(provider, pos, StagedAd(link(900 + pos).raw, b"{}")) for pos in range(count)]
    area.spill(walk, ads)
    assert area.commit_walk(walk, {provider: count}, base_seq=base) == {provider: count}


async def test_provider_info_lag_inactive_last_error_time_extended(tmp_path: Path) -> None:
    busy, idle, old = (key(n).peer_id() for n in (11, 12, 13))
    extra = key(14).peer_id()
    with KV(tmp_path / "db") as kv:
        record = ProviderRecord(
            addresses=["/ip4/10.0.0.1/tcp/4001"],
            publisher=busy.raw,
            last_ad=link(1).raw,
            last_ad_time=FIXTURE_TIME,
            extended=[ExtendedProviderRecord(str(extra), ["/dns4/x/tcp/1"], b"\x80\x12")],
            last_error="fetch failed: 404",
            last_error_time=FIXTURE_TIME + 60,
        )
        writes = IndexStore.put_provider(busy.raw, record)
        writes += IndexStore.put_provider(idle.raw, ProviderRecord(["/dns4/i"], inactive=True))
        legacy = OldProviderRecord(["/dns4/o"], last_error="old error")  # no time kept then
        writes += [(b"r" + old.raw, msgspec.msgpack.encode(legacy))]
        kv.write_batch(writes)
        stage(kv, busy.raw, busy.raw, 3)
        async with serving(kv) as client:
            r = await client.get(f"/providers/{busy}")
            assert r.status_code == 200
            info = r.json()
            assert info["Lag"] == 3  # three ads staged, none applied yet
            assert info["LastError"] == "fetch failed: 404"
            assert info["LastErrorTime"] == rfc3339(FIXTURE_TIME + 60) == "2023-06-28T12:22:06Z"
            assert info["ExtendedProviders"] == {
                "Providers": [{"ID": str(extra), "Addrs": ["/dns4/x/tcp/1"]}],
                "Metadatas": ["gBI="],
            }
            assert "Inactive" not in info  # omitempty: active
            assert list(info) == [
                "AddrInfo",
                "LastAdvertisement",
                "LastAdvertisementTime",
                "Lag",
                "Publisher",
                "ExtendedProviders",
                "FrozenAt",
                "LastError",
                "LastErrorTime",
            ]  # fmt: skip  (go-libipni's field order)
            inactive = (await client.get(f"/providers/{idle}")).json()
            assert inactive["Inactive"] is True and "Lag" not in inactive
            before = (await client.get(f"/providers/{old}")).json()
            assert before["LastError"] == "old error" and "LastErrorTime" not in before
            assert "Inactive" not in before and "Lag" not in before
            listed = {p["AddrInfo"]["ID"]: p for p in (await client.get("/providers")).json()}
            assert listed == {str(busy): info, str(idle): inactive, str(old): before}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_options_is_a_cors_preflight_on_every_route(tmp_path: Path, route: str) -> None:
    with KV(tmp_path / "db") as kv:
        async with serving(kv) as client:
            path = route.replace("{multihash}", "x").replace("{cid}", "x")
            path = path.replace("{peerid}", "x")
            r = await client.options(path, headers={"origin": "http://example.com"})
            methods = ", ".join(ROUTES[route])
            assert r.status_code == 200
            assert r.headers["allow"] == methods
            assert r.headers["access-control-allow-origin"] == "*"
            assert r.headers["access-control-allow-methods"] == f"{methods}, OPTIONS"
            assert r.headers["access-control-allow-headers"] == "Content-Type, Accept"
            # every answer, success or error, carries the origin header
            for method, target in [("GET", "/health"), ("GET", "/providers/x"), ("GET", "/no")]:
                answer = await client.request(method, target)
                assert answer.headers["access-control-allow-origin"] == "*", target
