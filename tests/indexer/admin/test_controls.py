"""storetheindex's admin controls over real HTTP: remove a provider, mark an ad processed,
import providers, ingest rates, log levels (issue 13).

The node of ``test_api`` (a real publisher behind a gate, a real LevelDB, the ingester, the
admin API) plus a real find server over the same LevelDB, so removal is checked with a real
find query.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import base58
import httpx
import msgspec
import pytest
import structlog
import trio

from indexer.admin import AdminApi
from indexer.find import find_handler
from indexer.logs import LOG_LEVELS, configure_logging
from store import KV, IndexStore, ProviderRecord
from sync import Link, PrivateKey
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import link, multihash
from tests.indexer.admin.test_api import Node, _until, running


class FindNode(Node):
    """``test_api``'s node, with a find server over its LevelDB; entries may be made to 404."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.fail_entries = False
        self.find = ""
        self.usage = 50.0  # the data disk's use the admin API sees (percent)

    def _gated(self, inner: Handler) -> Handler:
        gated = super()._gated(inner)
        ads = {record.cid for record in self.pub.chain()}

        async def handle(request: Request) -> Response:
            cid = request.path.rsplit("/", 1)[-1]
            if self.fail_entries and cid not in ads | {"head"}:
                return Response.text(404, "gone")
            return await gated(request)

        return handle

    async def start(self, nursery: trio.Nursery) -> None:
        await super().start(nursery)
        api = AdminApi(self.ingester, self.staging, self.policy, self.metrics,
                       PrivateKey.generate().peer_id(), Path("."), freeze_at_percent=95.0,
                       usage=lambda: self.usage)  # fmt: skip
        admin = await nursery.start(serve_tcp, api.handler(), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{admin[0].socket.getsockname()[1]}"  # freeze-aware
        served = await nursery.start(
            serve_tcp, find_handler(IndexStore(self.kv), "test"), "127.0.0.1", 0
        )
        self.find = f"http://127.0.0.1:{served[0].socket.getsockname()[1]}"


@pytest.fixture
async def fnode(tmp_path: Path) -> AsyncIterator[tuple[FindNode, httpx.AsyncClient]]:
    async with running(FindNode(tmp_path)) as started:
        yield started


async def _inside_the_oldest_ad(n: FindNode, client: httpx.AsyncClient) -> Any:
    """Sync ``n``'s three ads and wait until its worker is inside the oldest, held at its first
    entry chunk (the worker starts once the sync has closed its fetcher: wait for that too);
    the provider's staging row."""
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202
    raw = n.pub.peer_id.raw
    [row] = await _until(
        lambda rows: rows and rows[0]["pending_ads"] == 3 and n.ingester.applying(raw),
        client, "/staging",
    )  # fmt: skip
    assert n.ingester.applying(raw)
    return row


def b58(mh: bytes) -> str:
    return base58.b58encode(mh).decode()


async def _found(find: httpx.AsyncClient, path: str) -> None:
    with trio.fail_after(20):
        while True:
            if (await find.get(path)).status_code == 200:
                return
            await trio.sleep(0.02)


async def _indexed(n: FindNode, client: httpx.AsyncClient) -> None:
    n.gate.set()
    r = await client.post(f"/ingest/sync/{n.peer}", json=n.addr)
    assert r.status_code == 202, r.text
    await _until(lambda row: row["pending_ads"] == 0 and row["latest_processed"], client,
                 f"/publishers/{n.peer}")  # fmt: skip


async def test_remove_provider_drops_its_content_from_find_and_blocks_it(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    await _indexed(n, client)
    async with httpx.AsyncClient(base_url=n.find, timeout=10) as find:
        for i in range(3):
            assert (await find.get(f"/multihash/{b58(multihash(10 * i))}")).status_code == 200
        assert (await find.get(f"/providers/{n.peer}")).status_code == 200
        r = await client.delete(f"/removeprovider/{n.peer}?block=true")
        assert r.status_code == 200, r.text
        assert r.json() == {"Provider": n.peer, "Blocked": True, "Contexts": 3, "StagedAds": 0,
                            "Registered": True}  # fmt: skip
        for i in range(3):
            for j in range(7):
                gone = await find.get(f"/multihash/{b58(multihash(10 * i + j))}")
                assert gone.status_code == 404, gone.text
        assert (await find.get(f"/providers/{n.peer}")).status_code == 404
    assert n.ingester.index.provider(n.pub.peer_id.raw) is None
    assert not n.ingester.index.has_contexts(n.pub.peer_id.raw)
    # Blocked: a sync of it is refused; a second removal finds nothing.
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 403
    again = await client.delete(f"/removeprovider/{n.peer}")
    assert again.status_code == 404 and "not found" in again.text


async def test_remove_without_block_lets_it_be_indexed_again(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    await _indexed(n, client)
    r = await client.delete(f"/removeprovider/{n.peer}?block=false")
    assert r.status_code == 200 and r.json()["Blocked"] is False
    # Not blocked: its next ad is indexed (and registers it again); the removed stay gone.
    n.pub.add(b"ctx0", [multihash(500)], bitswap())  # a context reused: a fresh value key
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202
    async with httpx.AsyncClient(base_url=n.find, timeout=10) as find:
        await _found(find, f"/multihash/{b58(multihash(500))}")
        assert (await find.get(f"/multihash/{b58(multihash(0))}")).status_code == 404
        assert (await find.get(f"/providers/{n.peer}")).status_code == 200


async def test_remove_drops_staged_work_and_waits_for_the_ad_in_flight(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    await _inside_the_oldest_ad(n, client)
    answers: list[httpx.Response] = []

    async def remove() -> None:
        answers.append(await client.delete(f"/removeprovider/{n.peer}"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove)
        await _until(lambda rows: rows == [], client, "/staging")  # the stacks went at once...
        assert answers == []  # ...but the removal waits for the ad in flight
        n.gate.set()
    [r] = answers
    assert r.status_code == 200, r.text
    assert r.json()["StagedAds"] == 3 and r.json()["Contexts"] == 1  # what the ad in flight wrote
    async with httpx.AsyncClient(base_url=n.find, timeout=10) as find:
        assert (await find.get(f"/multihash/{b58(multihash(0))}")).status_code == 404
    assert not n.ingester.index.has_contexts(n.pub.peer_id.raw)
    await n.ingester.wait_idle()
    assert n.staging.providers() == []


async def test_mark_processed_pops_a_stuck_ad_between_attempts(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    n.ingester.config = msgspec.structs.replace(
        n.ingester.config, retry_base=60.0, retry_max=60.0, max_attempts=100
    )
    n.fail_entries = True
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202
    [row] = await _until(lambda rows: rows and rows[0]["attempts"] >= 1, client, "/staging")
    oldest, newest = n.pub.chain()[-1].cid, n.pub.chain()[0].cid
    assert row["next_ad"] == oldest and not n.ingester.applying(n.pub.peer_id.raw)
    # An ad that is not the provider's, a bad CID, an unknown provider.
    other = str(PrivateKey.generate().peer_id())
    r = await client.put(f"/markadprocessed/{n.peer}", params={"cid": str(link(99))})
    assert r.status_code == 409 and "not staged" in r.text, r.text
    assert (await client.put(f"/markadprocessed/{n.peer}?cid=nope")).status_code == 400
    r = await client.put(f"/markadprocessed/{other}", params={"cid": oldest})
    assert r.status_code == 404
    r = await client.put(f"/markadprocessed/{n.peer}", params={"cid": oldest})
    assert r.status_code == 200, r.text
    assert r.json() == {"Provider": n.peer, "Ad": oldest, "Popped": [oldest]}
    [row] = (await client.get("/staging")).json()
    assert row["pending_ads"] == 2 and row["next_ad"] != oldest
    done = n.staging.done(Link.parse(oldest).raw)
    assert done is not None and done.ok
    again = await client.put(f"/markadprocessed/{n.peer}", params={"cid": oldest})
    assert again.status_code == 409 and "already processed" in again.text
    # The newest pops the one left before it too; nothing of them was indexed.
    r = await client.put(f"/markadprocessed/{n.peer}", params={"cid": newest})
    assert (
        r.status_code == 200 and len(r.json()["Popped"]) == 2 and r.json()["Popped"][-1] == newest
    )
    assert (await client.get("/staging")).json() == []
    async with httpx.AsyncClient(base_url=n.find, timeout=10) as find:
        assert (await find.get(f"/multihash/{b58(multihash(20))}")).status_code == 404
    pub = (await client.get(f"/publishers/{n.peer}")).json()
    assert pub["latest_processed"] == newest


async def test_mark_processed_refuses_an_ad_being_applied(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    row = await _inside_the_oldest_ad(n, client)
    r = await client.put(f"/markadprocessed/{n.peer}", params={"cid": row["next_ad"]})
    assert r.status_code == 409 and "right now" in r.text
    assert r.text.count("\n") == 1


async def test_telemetry_counts_each_providers_ingest(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    assert (await client.get("/telemetry/providers")).status_code == 204
    await _indexed(n, client)
    every = (await client.get("/telemetry/providers")).json()
    rate = every[n.peer]
    assert rate["Count"] == 21 and rate["Samples"] == 3 and rate["Elapsed"] > 0
    assert (await client.get(f"/telemetry/providers/{n.peer}")).json() == rate
    other = str(PrivateKey.generate().peer_id())
    unknown = await client.get(f"/telemetry/providers/{other}")
    assert unknown.status_code == 404 and other in unknown.text
    assert (await client.get("/telemetry/providers/nope")).status_code == 400
    # Read: the next ad starts the rate afresh (storetheindex's rate.Map).
    n.pub.add(b"ctx9", [multihash(900 + j) for j in range(4)], bitswap())
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202
    fresh = await _until(lambda r: r["Samples"] == 1, client, f"/telemetry/providers/{n.peer}")
    assert fresh["Count"] == 4


async def test_import_providers_from_another_indexers_find_server(
    fnode: tuple[FindNode, httpx.AsyncClient], tmp_path: Path
) -> None:
    n, client = fnode
    other_kv = KV(tmp_path / "other")
    theirs = [PrivateKey.generate().peer_id() for _ in range(2)]
    blocked_one = PrivateKey.generate().peer_id()
    index = IndexStore(other_kv)
    for peer in [*theirs, blocked_one]:
        record = ProviderRecord(["/ip4/127.0.0.1/tcp/1/http"], peer.raw, [])
        other_kv.write_batch(index.put_provider(peer.raw, record))
    n.policy.block(blocked_one)
    try:
        async with trio.open_nursery() as nursery:
            served = await nursery.start(serve_tcp, find_handler(index, "t"), "127.0.0.1", 0)
            url = f"http://127.0.0.1:{served[0].socket.getsockname()[1]}"
            body = {"indexer": base64.b64encode(url.encode()).decode()}  # storetheindex's form
            r = await client.post("/importproviders", json=body)
            assert r.status_code == 200, r.text
            assert sorted(r.json()["Imported"]) == sorted(str(p) for p in theirs)
            assert r.json()["Skipped"] == 1 and r.json()["From"] == url
            for peer in theirs:
                got = n.ingester.index.provider(peer.raw)
                assert got is not None and got.publisher == peer.raw
            assert n.ingester.index.provider(blocked_one.raw) is None
            # Registered already: skipped; a plain URL string is taken too.
            again = await client.post("/importproviders", json={"indexer": url})
            assert again.json()["Imported"] == [] and again.json()["Skipped"] == 3
            nursery.cancel_scope.cancel()
    finally:
        other_kv.close()
    for raw, status in [(b"", 400), (b"{}", 400), (b'{"indexer": "ftp://x"}', 400),
                         (b'{"indexer": "http://127.0.0.1:1"}', 502)]:  # fmt: skip
        r = await client.post("/importproviders", content=raw)
        assert r.status_code == status, (raw, r.text)
        assert r.text.count("\n") == 1


@pytest.fixture
def logging_configured() -> Iterator[None]:
    configure_logging(json=True, cache=False)  # pytest's process: other tests capture logs
    yield
    LOG_LEVELS.reset(logging.INFO)
    structlog.reset_defaults()


async def test_log_level_changes_at_run_time(
    fnode: tuple[FindNode, httpx.AsyncClient], logging_configured: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, client = fnode
    probe = structlog.get_logger("probe13")
    probe.debug("before")
    assert capsys.readouterr().err == ""  # below the level: dropped
    r = await client.post("/config/log/level", params={"probe.*": "debug", "admin": "warn"})
    assert r.status_code == 200, r.text
    [p, a] = r.json()
    assert p == {"Subsystem": "probe.*", "Level": "debug", "Matched": ["probe13"]}
    assert a["Level"] == "warn"
    assert LOG_LEVELS.level_of("probe13") == logging.DEBUG
    assert LOG_LEVELS.level_of("admin") == logging.WARNING
    probe.debug("after")
    err = capsys.readouterr().err
    assert '"after"' in err and '"before"' not in err
    names = (await client.get("/config/log/subsystems")).text.split()
    assert "probe13" in names and names == sorted(names)
    for params, says in [({}, "at least one"), ({"x": "loud"}, "unknown level"),
                         ({"(": "debug"}, "bad subsystem")]:  # fmt: skip
        bad = await client.post("/config/log/level", params=params)
        assert bad.status_code == 400 and says in bad.text, bad.text
    assert LOG_LEVELS.level_of("x") == logging.INFO  # nothing changed by a refused request


async def test_freeze_at_the_usage_threshold_stops_ingest_and_keeps_find(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    status = (await client.get("/status")).json()
    assert status["Frozen"] is False and "FrozenAt" not in status and status["Usage"] == 50.0
    await _indexed(n, client)
    n.usage = 95.0  # the threshold reached: the next look freezes
    status = (await client.get("/status")).json()
    assert status["Frozen"] is True and status["FrozenAt"].endswith("Z")
    assert n.staging.frozen_at() is not None  # durable
    n.usage = 10.0  # freed: it stays frozen until told
    assert (await client.get("/status")).json()["Frozen"] is True
    # No sync starts; an announce is still recorded (the intake's write), to replay later.
    n.pub.add(b"ctx7", [multihash(700)], bitswap())
    refused = await client.post(f"/ingest/sync/{n.peer}", json=n.addr)
    assert refused.status_code == 409 and "frozen" in refused.text
    head = n.pub.head()
    assert head is not None
    n.ingester.record_announce(n.pub.peer_id, head, [n.addr])
    n.ingester.request_sync(n.pub.peer_id, [n.addr], head)
    assert n.ingester.syncing == []
    assert [r.head for _, r in n.staging.unsynced_announces()] == [head.raw]
    async with httpx.AsyncClient(base_url=n.find, timeout=10) as find:
        assert (await find.get(f"/multihash/{b58(multihash(0))}")).status_code == 200
        assert (await find.get(f"/multihash/{b58(multihash(700))}")).status_code == 404
        thawed = await client.delete("/freeze")
        assert thawed.status_code == 200 and thawed.json() == {"Frozen": False, "FrozenAt": None}
        await _found(find, f"/multihash/{b58(multihash(700))}")  # the announce was replayed
    assert n.staging.frozen_at() is None


async def test_freeze_stops_workers_before_their_next_ad(
    fnode: tuple[FindNode, httpx.AsyncClient],
) -> None:
    n, client = fnode
    await _inside_the_oldest_ad(n, client)
    frozen = await client.put("/freeze")
    assert frozen.status_code == 200 and frozen.json()["Frozen"] is True
    n.gate.set()  # the ad in hand finishes; the next two wait
    with trio.fail_after(20):
        while n.ingester.applying(n.pub.peer_id.raw):
            await n.ingester.wait_changed()
    [row] = (await client.get("/staging")).json()
    assert row["pending_ads"] == 2
    assert (await client.get("/freeze")).status_code == 405
    assert (await client.delete("/freeze")).status_code == 200
    await _until(lambda rows: rows == [], client, "/staging")
