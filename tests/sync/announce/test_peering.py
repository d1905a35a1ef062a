"""Bootstrap and peering (``sync.announce.peering``) with real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from sync import Link, Message, PrivateKey
from sync.announce.gossip import open_gossip, publish_announce, receive_announces
from sync.announce.peeraddrs import parse_peer_addrs
from sync.announce.peering import bootstrap, keep_peering
from sync.net.p2p import host_addrs, open_host
from tests.builders import link

LISTEN = ["/ip4/127.0.0.1/tcp/0"]


async def _until(check: Callable[[], bool], limit: float = 20) -> None:
    with trio.fail_after(limit):
        while not check():  # noqa: ASYNC110 -- polls the swarm: nothing signals a connection
            await trio.sleep(0.05)


def _connected(host: IHost, other: IHost) -> bool:
    return bool(host.get_network().get_connections(other.get_id()))


async def test_a_bootstrap_peer_delivers_the_gossip_announces_it_publishes() -> None:
    message = Message.create(Link.parse(str(link(b"ad"))), ["/ip4/127.0.0.1/tcp/9/http"])
    with trio.fail_after(60):
        async with (
            open_host(PrivateKey.generate(), LISTEN) as indexer,
            open_host(PrivateKey.generate(), LISTEN) as relay,
            open_gossip(relay) as relay_pubsub,
            open_gossip(indexer) as pubsub,  # as the daemon: gossip first, then bootstrap
            receive_announces(pubsub) as announces,
            trio.open_nursery() as nursery,
        ):
            peers = parse_peer_addrs(host_addrs(relay))
            nursery.start_soon(bootstrap, indexer, peers, 4)
            await _until(lambda: _connected(indexer, relay))
            got: list[tuple[str, Message]] = []

            async def read() -> None:
                got.append(await announces.__anext__())
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            while not got:  # until the subscription has propagated to the relay
                await publish_announce(relay_pubsub, message)
                await trio.sleep(0.5)
    assert got == [(str(relay.get_id()), message)]


async def test_a_failed_bootstrap_dial_is_logged_not_raised() -> None:
    async with open_host(PrivateKey.generate(), LISTEN) as host:
        addr = f"/ip4/127.0.0.1/tcp/1/p2p/{PrivateKey.generate().peer_id()}"
        with trio.move_on_after(1.5) as scope:
            await bootstrap(host, parse_peer_addrs([addr]), 1, period=0.2, dial_timeout=1)
        assert scope.cancelled_caught  # still running: the failed dials did not end it
        assert not host.get_network().get_connections_map()


async def test_a_peering_peer_that_drops_is_reconnected() -> None:
    with trio.fail_after(60):
        async with (
            open_host(PrivateKey.generate(), LISTEN) as indexer,
            open_host(PrivateKey.generate(), LISTEN) as peer,
            trio.open_nursery() as nursery,
        ):
            peers = parse_peer_addrs(host_addrs(peer))
            nursery.start_soon(
                lambda: keep_peering(indexer, peers, first_delay=0.1, check_every=30)
            )
            await _until(lambda: _connected(indexer, peer))
            first = indexer.get_network().get_connections(peer.get_id())
            await peer.disconnect(indexer.get_id())  # the peer drops us
            await _until(lambda: not _connected(peer, indexer))
            await _until(
                lambda: (
                    _connected(indexer, peer)
                    and indexer.get_network().get_connections(peer.get_id()) != first
                )
            )
            assert _connected(peer, indexer)
            nursery.cancel_scope.cancel()
    assert ID(peers[0].peer_id.raw) == peer.get_id()
