"""``indexer publisher serve --p2p-listen`` seen from another py-libp2p host on loopback:
the chain is fetched over ``/http/1.1`` streams and new heads arrive on gossipsub."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio

from sync import Link, PrivateKey, SignedHead, load_advertisement
from sync.announce.gossip import open_gossip, receive_announces
from sync.ipnisync.protocol import IPNI_PATH
from sync.net.p2p import open_host, peer_info
from sync.net.p2phttp import fetch_over_libp2p
from tests.e2e.test_publisher_cli import INDEXER, mh_lines, ok


async def test_serve_over_libp2p_and_gossipsub(tmp_path: Path) -> None:
    data = tmp_path / "pub"
    peer = ok("init", "--data-dir", str(data))["peer_id"]
    ok("add", "--data-dir", str(data), "--context-id", "a", "--multihashes", "-",
       stdin=mh_lines(0, 10))  # fmt: skip
    args = ["publisher", "serve", "--data-dir", str(data), "--json"]
    args += ["--p2p-listen", "/ip4/127.0.0.1/tcp/0"]
    proc = await trio.lowlevel.open_process([INDEXER, *args], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(4096)
        info = json.loads(line)
        [addr] = info["p2p_multiaddrs"]
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and addr.endswith(f"/p2p/{peer}")
        with trio.fail_after(60):
            async with (
                open_host(PrivateKey.generate(), ["/ip4/127.0.0.1/tcp/0"]) as host,
                open_gossip(host) as pubsub,
                receive_announces(pubsub) as announces,
            ):
                await host.connect(peer_info(addr))
                status, _, raw = await fetch_over_libp2p(host, addr, f"{IPNI_PATH}/head")
                assert status == 200
                head = SignedHead.decode(raw)
                assert str(head.verify()) == peer and str(head.head) == info["head"]
                status, _, block = await fetch_over_libp2p(host, addr, f"{IPNI_PATH}/{head.head}")
                assert status == 200
                assert load_advertisement(head.head, block).context_id == b"a"

                for attempt in range(5):  # gossip needs the subscription to have propagated
                    await trio.sleep(1)
                    added = await trio.run_process(
                        [INDEXER, "publisher", "add", "--data-dir", str(data), "--context-id",
                         f"b{attempt}", "--multihashes", "-", "--json"],
                        stdin=mh_lines(100 + attempt, 1).encode(),
                        capture_stdout=True,
                    )  # fmt: skip
                    new_head = Link.parse(json.loads(added.stdout)["cid"])
                    with trio.move_on_after(5):
                        async for sender, message in announces:
                            if message.cid == new_head:
                                assert sender == peer
                                assert message.publisher() is not None
                                return
                raise AssertionError("no gossipsub announce arrived")
    finally:
        proc.terminate()
        with trio.move_on_after(20):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
