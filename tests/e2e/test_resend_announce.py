"""``ingest.resend_direct_announce`` (storetheindex's ResendDirectAnnounce): an announce taken
over HTTP is re-published on gossipsub with ``OrigPeer`` naming the publisher, as a second
py-libp2p host subscribed to the topic sees it."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from sync import Message, PrivateKey, encode_block
from sync.announce.gossip import open_gossip, receive_announces
from sync.net.p2p import open_host, peer_info
from tests.e2e.test_daemon import Daemon


async def test_an_http_announce_is_re_published_with_orig_peer(tmp_path: Path) -> None:
    config = tmp_path / "indexer.toml"
    config.write_text("[ingest]\nresend_direct_announce = true\n")
    daemon = Daemon(tmp_path / "idx", "--config", str(config), "--p2p-addr", "/ip4/127.0.0.1/tcp/0")
    try:
        [daemon_addr] = daemon.info["p2p_addrs"]
        publisher = PrivateKey.generate().peer_id()
        addr = "/ip4/127.0.0.1/tcp/9/http"  # nothing there: the sync fails, the announce stands
        got: Message | None = None
        with trio.fail_after(60):
            async with (
                open_host(PrivateKey.generate(), ["/ip4/127.0.0.1/tcp/0"]) as host,
                open_gossip(host) as pubsub,
                receive_announces(pubsub) as announces,
                httpx.AsyncClient(timeout=5) as client,
            ):
                await host.connect(peer_info(daemon_addr))
                for attempt in range(20):  # until the subscriptions have propagated
                    head, _ = encode_block({"head": attempt})
                    body = Message.create(head, [addr], publisher).to_cbor()
                    put = await client.put(f"{daemon.info['ingest_url']}/announce", content=body)
                    assert put.status_code == 204, put.text
                    with trio.move_on_after(1):
                        async for sender, message in announces:
                            assert sender == daemon.info["peer_id"]  # the relay signed it
                            got = message
                            break
                    if got is not None:
                        break
        assert got is not None, "no re-published announce arrived"
        assert got.orig_peer == str(publisher)
        assert got.addresses() == [addr] and got.publisher() is None  # no /p2p/: OrigPeer says
    finally:
        assert daemon.stop() == 0
