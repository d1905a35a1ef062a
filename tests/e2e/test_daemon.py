"""``indexer daemon`` as an operator runs it: real processes, HTTP and gossipsub announces."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from sync import Link, Message, PeerId, PrivateKey
from sync.announce.gossip import open_gossip, publish_announce
from sync.net.p2p import open_host, peer_info
from tests.e2e.test_publisher_cli import INDEXER, Serving, mh_lines, ok


class Daemon:
    def __init__(self, data: Path, *extra: str) -> None:
        args = [INDEXER, "daemon", "--data-dir", str(data), "--json"]
        args += ["--find-addr", "127.0.0.1:0", "--ingest-addr", "127.0.0.1:0"]
        args += ["--admin-addr", "127.0.0.1:0", *extra]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else ""
        self.info: dict[str, Any] = json.loads(line)

    def status(self, publisher: str) -> dict[str, Any] | None:
        """The publisher's row on the admin API (``/sync/status`` has storetheindex's shape)."""
        r = httpx.get(f"{self.info['admin_url']}/publishers/{publisher}", timeout=5)
        return r.json() if r.status_code == 200 else None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


async def wait_processed(daemon: Daemon, publisher: str, head: str, limit: float = 60) -> None:
    with trio.fail_after(limit):
        while True:
            status = await trio.to_thread.run_sync(daemon.status, publisher)
            if status and status["latest_processed"] == head:
                return
            await trio.sleep(0.2)


async def test_http_announce_is_synced_and_indexed(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "idx", "--no-p2p")
    try:
        assert daemon.info["p2p_addrs"] == []
        pub = ok("init", "--data-dir", str(tmp_path / "pub"))["peer_id"]
        added = ok("add", "--data-dir", str(tmp_path / "pub"), "--context-id", "a",
                   "--multihashes", "-", stdin=mh_lines(0, 50))  # fmt: skip
        serving = Serving(tmp_path / "pub", "--announce", daemon.info["ingest_url"])
        try:
            await wait_processed(daemon, pub, added["cid"])
            find = daemon.info["find_url"]
            async with httpx.AsyncClient(timeout=5) as client:
                health = await client.get(f"{find}/health")
                assert health.text.startswith("ready")
                for line in mh_lines(0, 50).split():
                    found = await client.get(f"{find}/multihash/{line}")
                    assert found.status_code == 200, line
                    [result] = found.json()["MultihashResults"]
                    assert [p["Provider"]["ID"] for p in result["ProviderResults"]] == [pub]
                cid = Link(b"\x01\x55" + bytes.fromhex(line))  # a raw CID of the last multihash
                routed = await client.get(f"{find}/routing/v1/providers/{cid}")
                assert [p["ID"] for p in routed.json()["Providers"]] == [pub]
        finally:
            serving.stop()
    finally:
        assert daemon.stop() == 0
    # Restarted on the same data, it knows the publisher and has nothing left to do.
    daemon = Daemon(tmp_path / "idx", "--no-p2p")
    try:
        status = daemon.status(pub)
        assert status is not None and status["latest_processed"] == added["cid"]
    finally:
        daemon.stop()


async def test_gossipsub_announce_triggers_the_same_sync(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "idx", "--p2p-addr", "/ip4/127.0.0.1/tcp/0")
    try:
        [daemon_addr] = daemon.info["p2p_addrs"]
        pub = ok("init", "--data-dir", str(tmp_path / "pub"))["peer_id"]
        added = ok("add", "--data-dir", str(tmp_path / "pub"), "--context-id", "g",
                   "--multihashes", "-", stdin=mh_lines(100, 5))  # fmt: skip
        serving = Serving(tmp_path / "pub")  # serves HTTP; announces nothing by itself
        try:
            http_addr = serving.info["http_multiaddr"]
            message = Message.create(Link.parse(added["cid"]), [http_addr], PeerId.parse(pub))
            with trio.fail_after(60):
                async with (
                    open_host(PrivateKey.generate(), ["/ip4/127.0.0.1/tcp/0"]) as host,
                    open_gossip(host) as pubsub,
                ):
                    await host.connect(peer_info(daemon_addr))
                    for _ in range(20):  # until the daemon's subscription has propagated
                        await publish_announce(pubsub, message)
                        status = await trio.to_thread.run_sync(daemon.status, pub)
                        if status and status["latest_processed"] == added["cid"]:
                            break
                        await trio.sleep(1)
            await wait_processed(daemon, pub, added["cid"], limit=10)
        finally:
            serving.stop()
    finally:
        assert daemon.stop() == 0


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_sync_status_has_storetheindex_shape(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "idx", "--no-p2p")
    ingest = daemon.info["ingest_url"]
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            empty = await client.get(f"{ingest}/sync/status")
            assert (empty.status_code, empty.content) == (204, b"")  # nothing tracked yet
            assert empty.headers["access-control-allow-origin"] == "*"
            pub = ok("init", "--data-dir", str(tmp_path / "pub"))["peer_id"]
            added = ok("add", "--data-dir", str(tmp_path / "pub"), "--context-id", "s",
                       "--multihashes", "-", stdin=mh_lines(200, 3))  # fmt: skip
            serving = Serving(tmp_path / "pub", "--announce", ingest)
            try:
                await wait_processed(daemon, pub, added["cid"])
            finally:
                serving.stop()
            listed = await client.get(f"{ingest}/sync/status")
            assert listed.status_code == 200 and "link" not in listed.headers
            assert listed.headers["content-type"] == "application/json; charset=utf-8"
            assert listed.headers["access-control-allow-origin"] == "*"
            body = listed.json()
            assert list(body) == [pub]  # an object keyed by publisher peer ID
            tracker = body[pub]
            assert tracker["Provider"] == pub
            [scan] = tracker["ScanHistory"]  # a finished phase is archived, as storetheindex does
            assert "Scan" not in tracker and "Ongoing" not in scan
            assert RFC3339.fullmatch(scan["StartTime"]) and RFC3339.fullmatch(scan["EndTime"])
            assert scan["AdsScanned"] == 1 and scan["HeadAd"] == added["cid"]
            assert re.fullmatch(r"(\d+m)?\d+s", scan["Elapsed"])
            [processing] = tracker["ProcessingHistory"]
            assert processing["AdsProcessed"] == processing["AdsTotal"] == 1
            assert "AdsLeft" not in processing and processing["CurrentAd"] == added["cid"]
            assert tracker["DownloadHistory"][0]["MultihashCount"] == 3
            assert set(tracker) <= {
                "Provider", "Scan", "ScanHistory", "Processing", "ProcessingHistory",
                "Download", "DownloadHistory",
            }  # fmt: skip
            one = await client.get(f"{ingest}/sync/status/{pub}")
            assert one.status_code == 200 and one.json() == tracker
            stranger = PrivateKey.generate().peer_id()
            assert (await client.get(f"{ingest}/sync/status/{stranger}")).status_code == 204
            bad = await client.get(f"{ingest}/sync/status/not-a-peer")
            assert bad.status_code == 400 and bad.text.strip() == "Cannot decode peer id"
            ad = await client.get(f"{ingest}/sync/status/ad/{added['cid']}")
            assert ad.status_code == 200 and ad.json() == {"Ad": added["cid"], "Indexed": True}
            other = str(Link(b"\x01\x55" + b"\x12\x20" + bytes(32)))
            assert (await client.get(f"{ingest}/sync/status/ad/{other}")).json() == {
                "Ad": other, "Indexed": False,
            }  # fmt: skip
            bad_ad = await client.get(f"{ingest}/sync/status/ad/nope")
            assert bad_ad.status_code == 400
            assert bad_ad.text.strip() == "Cannot decode advertisement cid"
            options = await client.options(f"{ingest}/sync/status")
            assert options.status_code == 200 and options.headers["allow"] == "GET, HEAD"
            refused = await client.get(f"{ingest}/sync/status", headers={"accept": "text/html"})
            assert refused.status_code == 406
            paged = await client.get(f"{ingest}/sync/status", params={"limit": "1"})
            assert paged.json() == body and "link" not in paged.headers
            assert (await client.get(f"{ingest}/sync/status?limit=0")).status_code == 400
            # the richer row stays on the admin API
            row = daemon.status(pub)
            assert row is not None and row["latest_processed"] == added["cid"]
            assert row["pending_ads"] == 0 and row["last_error"] is None
    finally:
        assert daemon.stop() == 0
