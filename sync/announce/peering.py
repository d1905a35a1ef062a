"""Gossip connectivity of a py-libp2p host: bootstrap peers and peering peers (storetheindex's
``Bootstrap`` and ``Peering``, i.e. kubo's bootstrapper and peering service).

Imports py-libp2p: import this module lazily (see ``sync.net.p2p``).

Rules this module keeps:

- ``bootstrap``: at start, and every ``period`` seconds, if the host is connected to fewer than
  ``min_peers`` peers it dials (concurrently, each within ``dial_timeout``) as many bootstrap
  peers it is not connected to as are missing, in random order (kubo ``bootstrap.Bootstrap``
  with ``MinPeerThreshold``, 30 s period).  A failed dial is logged, never raised.
- ``keep_peering``: each peering peer is kept connected, one task per peer: dialled at start;
  when it drops (a network notifee reports its last connection closed, or a periodic check
  finds none) it is redialled after ``first_delay`` seconds, and after each failed dial the
  delay grows by a random factor in [1, 2) up to ``max_delay`` (kubo's peering service: 5 s,
  10 min).  A successful dial resets the delay.  Nothing here ends the caller; failures are
  logged.
- Both must run after ``open_gossip`` is entered (the Pubsub learns of peers by connection), and
  end when their nursery is cancelled.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import multiaddr
import structlog
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from sync.announce.peeraddrs import PeerAddrs

__all__ = ["bootstrap", "keep_peering"]

log = structlog.get_logger(__name__)

BOOTSTRAP_PERIOD = 30.0
DIAL_TIMEOUT = 10.0
FIRST_DELAY = 5.0
MAX_DELAY = 600.0


def _info(peer: PeerAddrs) -> PeerInfo:
    return PeerInfo(ID(peer.peer_id.raw), [multiaddr.Multiaddr(a) for a in peer.addrs])


def _connected(host: IHost, peer: ID) -> bool:
    return bool(host.get_network().get_connections(peer))


async def _dial(host: IHost, peer: PeerAddrs, limit: float, role: str) -> bool:
    """Connect to ``peer``; False (logged) on failure."""
    try:
        with trio.fail_after(limit):
            await host.connect(_info(peer))
    except Exception as exc:  # noqa: BLE001 -- any dial failure: logged, retried or skipped
        why = str(exc) or repr(exc)
        log.warning(f"{role} peer not reached", peer=str(peer.peer_id), error=why)
        return False
    log.info(f"{role} peer connected", peer=str(peer.peer_id))
    return True


async def bootstrap(
    host: IHost,
    peers: Sequence[PeerAddrs],
    min_peers: int,
    *,
    period: float = BOOTSTRAP_PERIOD,
    dial_timeout: float = DIAL_TIMEOUT,
) -> None:
    """Keep ``min_peers`` connections by dialling bootstrap peers (runs until cancelled)."""
    if not peers or min_peers <= 0:
        return
    while True:
        have = len(host.get_network().get_connections_map())
        if have < min_peers:
            idle = [p for p in peers if not _connected(host, ID(p.peer_id.raw))]
            random.shuffle(idle)
            async with trio.open_nursery() as nursery:
                for peer in idle[: min_peers - have]:
                    nursery.start_soon(_dial, host, peer, dial_timeout, "bootstrap")
        await trio.sleep(period)


class _Drops(INotifee):
    """Wakes the task of a peering peer when its last connection closes."""

    def __init__(self, host: IHost, peers: Sequence[ID]) -> None:
        self._host = host
        self.events = {peer: trio.Event() for peer in peers}

    def rearm(self, peer: ID) -> trio.Event:
        self.events[peer] = trio.Event()
        return self.events[peer]

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if peer in self.events and not _connected(self._host, peer):
            self.events[peer].set()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


async def keep_peering(
    host: IHost,
    peers: Sequence[PeerAddrs],
    *,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
    check_every: float = BOOTSTRAP_PERIOD,
    dial_timeout: float = DIAL_TIMEOUT,
) -> None:
    """Keep every peer in ``peers`` connected (runs until cancelled)."""
    if not peers:
        return
    drops = _Drops(host, [ID(p.peer_id.raw) for p in peers])
    host.get_network().register_notifee(drops)

    async def keep(peer: PeerAddrs) -> None:
        pid = ID(peer.peer_id.raw)
        delay = first_delay
        wait = 0.0  # dial at once at start
        while True:
            await trio.sleep(wait)
            dropped = drops.rearm(pid)
            if _connected(host, pid) or await _dial(host, peer, dial_timeout, "peering"):
                delay = first_delay
                with trio.move_on_after(check_every):  # a missed notification costs one period
                    await dropped.wait()
                if not _connected(host, pid):
                    log.info("peering peer dropped", peer=str(peer.peer_id), redial_in=delay)
                    wait = delay
                else:
                    wait = 0.0
            else:
                wait = delay
                delay = min(max_delay, delay * (1 + random.random()))

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(keep, peer)
