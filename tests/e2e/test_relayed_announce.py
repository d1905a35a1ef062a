"""A relayed gossipsub announce (go-libipni's re-published form, ``OrigPeer`` set) from a second
py-libp2p host: the daemon syncs the original publisher, not the relay that sent it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from sync import Link, Message, PrivateKey
from sync.announce.gossip import open_gossip, publish_announce
from sync.net.p2p import host_addrs, open_host, peer_info
from tests.e2e.test_daemon import Daemon
from tests.e2e.test_publisher_cli import Serving, mh_lines, ok


async def announce_until_found(
    pubsub: Any, message: Message, client: httpx.AsyncClient, url: str
) -> list[str]:
    """Publish ``message`` once a second (at most 30 times) until ``url`` (a find) answers; the
    providers it names ([] if it never did)."""
    for _ in range(30):
        await publish_announce(pubsub, message)
        r = await client.get(url)
        if r.status_code == 200:
            [result] = r.json()["MultihashResults"]
            return [p["Provider"]["ID"] for p in result["ProviderResults"]]
        await trio.sleep(1)
    return []


def relayed_announce(serving: Serving, head: str, publisher: str) -> Message:
    """The announce storetheindex re-publishes for an HTTP one: the publisher's addresses
    without /p2p/, the publisher in ``OrigPeer``, to be sent (and signed) by the relay."""
    http_addr = serving.info["http_multiaddr"].split("/p2p/")[0]
    message = Message.create(Link.parse(head), [http_addr])
    return Message(message.cid, message.addrs, orig_peer=publisher)


async def test_a_relayed_announce_syncs_the_original_publisher(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "idx", "--p2p-addr", "/ip4/127.0.0.1/tcp/0")
    try:
        [daemon_addr] = daemon.info["p2p_addrs"]
        pub = ok("init", "--data-dir", str(tmp_path / "pub"))["peer_id"]
        added = ok("add", "--data-dir", str(tmp_path / "pub"), "--context-id", "r",
                   "--multihashes", "-", stdin=mh_lines(300, 3))  # fmt: skip
        serving = Serving(tmp_path / "pub")  # HTTP only: the relay is the one on gossipsub
        try:
            message = relayed_announce(serving, added["cid"], pub)
            [last] = mh_lines(302, 1).split()
            url = f"{daemon.info['find_url']}/multihash/{last}"
            relay_key = PrivateKey.generate()
            found: list[str] = []
            with trio.fail_after(60):
                async with (
                    open_host(relay_key, ["/ip4/127.0.0.1/tcp/0"]) as host,
                    open_gossip(host) as pubsub,
                    httpx.AsyncClient(timeout=5) as client,
                ):
                    await host.connect(peer_info(daemon_addr))
                    # until the daemon's subscription has propagated
                    found = await announce_until_found(pubsub, message, client, url)
            assert found == [pub]
            assert str(relay_key.peer_id()) != pub
        finally:
            serving.stop()
    finally:
        assert daemon.stop() == 0


async def test_a_bootstrap_peer_of_the_config_relays_an_announce_the_daemon_syncs(
    tmp_path: Path,
) -> None:
    """The daemon dials its ``[p2p] bootstrap_peers`` itself; nobody connects to it."""
    pub = ok("init", "--data-dir", str(tmp_path / "pub"))["peer_id"]
    added = ok("add", "--data-dir", str(tmp_path / "pub"), "--context-id", "b",
               "--multihashes", "-", stdin=mh_lines(400, 2))  # fmt: skip
    serving = Serving(tmp_path / "pub")
    relay_key = PrivateKey.generate()
    try:
        message = relayed_announce(serving, added["cid"], pub)
        [last] = mh_lines(401, 1).split()
        found: list[str] = []
        with trio.fail_after(60):
            async with (
                open_host(relay_key, ["/ip4/127.0.0.1/tcp/0"]) as host,
                open_gossip(host) as pubsub,
                httpx.AsyncClient(timeout=5) as client,
            ):
                config = tmp_path / "config.toml"
                config.write_text(f"[p2p]\nbootstrap_peers = {json.dumps(host_addrs(host))}\n")
                daemon = Daemon(
                    tmp_path / "idx", "--p2p-addr", "/ip4/127.0.0.1/tcp/0",
                    "--config", str(config),
                )  # fmt: skip
                try:
                    url = f"{daemon.info['find_url']}/multihash/{last}"
                    # until the daemon has dialled us and subscribed
                    found = await announce_until_found(pubsub, message, client, url)
                finally:
                    assert daemon.stop() == 0
        assert found == [pub]
    finally:
        serving.stop()
