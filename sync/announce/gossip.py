"""Announces over gossipsub (go-libipni ``announce/gossiptopic``), on py-libp2p.

Imports py-libp2p: import this module lazily (see ``sync.net.p2p``).

Rules this module keeps:

- Topic ``/indexer/ingest/mainnet``; the message data is exactly ``Message.to_cbor()``; the
  announcing peer is the message's signed ``from`` field (strict signing, as go-libp2p-pubsub's
  default ``StrictSign``), not the peer that relayed it.
- The router speaks ``/meshsub/1.1.0`` and ``/meshsub/1.0.0`` and uses go-libp2p-pubsub's
  defaults (D=6, Dlo=5, Dhi=12, 1 s heartbeat after 100 ms, 60 s fanout TTL, gossip window 3 of
  history 5).  py-libp2p's own defaults differ: a 120 s heartbeat, and "adaptive gossip" that can
  stretch it to 60 s or more; adaptive gossip is turned off so the mesh forms in about a second.
- Spam protection: py-libp2p drops (and penalizes) a peer's messages beyond
  ``max_messages_per_topic_per_second`` (default 10) on any topic.  The limit is one number for
  all topics in py-libp2p 0.8.1, so ``open_gossip`` raises it for every topic (announce relays
  forward many publishers' announces).
- Gotchas kept by the callers: ``open_gossip`` must be entered before peers are connected (the
  Pubsub learns of peers through a network notifee), and a subscription buffers only 32 messages
  and drops the rest silently, so ``receive_announces`` must be read in its own task and each item
  handed off without awaiting slow work.
- An undecodable payload is logged and skipped; it never ends the iteration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from sync.announce.message import ANNOUNCE_TOPIC, Message
from sync.errors import ModelError

__all__ = [
    "ANNOUNCE_TOPIC",
    "GOSSIPSUB_PROTOCOLS",
    "AnnounceReceiver",
    "open_gossip",
    "publish_announce",
    "receive_announces",
]

log = structlog.get_logger(__name__)

GOSSIPSUB_PROTOCOLS = (PROTOCOL_ID_V11, PROTOCOL_ID)


def _router(max_rate: float) -> GossipSub:
    return GossipSub(
        protocols=list(GOSSIPSUB_PROTOCOLS),
        degree=6,
        degree_low=5,
        degree_high=12,
        time_to_live=60,
        gossip_window=3,
        gossip_history=5,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        prune_back_off=60,
        unsubscribe_back_off=10,
        adaptive_gossip_enabled=False,
        max_messages_per_topic_per_second=max_rate,
    )


@asynccontextmanager
async def open_gossip(host: IHost, *, max_rate: float = 1000.0) -> AsyncIterator[Pubsub]:
    """A running GossipSub + Pubsub on ``host``; enter it before connecting any peer.

    ``max_rate`` is the spam-protection limit: messages per second accepted from one peer on one
    topic.
    """
    router = _router(max_rate)
    pubsub = Pubsub(host, router)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield pubsub


async def publish_announce(pubsub: Pubsub, msg: Message, topic: str = ANNOUNCE_TOPIC) -> None:
    """Publish ``msg`` (its CBOR form) on ``topic``."""
    await pubsub.publish(topic, msg.to_cbor())


class AnnounceReceiver:
    """Decoded announces from one topic subscription: ``(publisher peer ID, Message)`` pairs.

    Subscribes on first use (or on ``await receiver.subscribe()``, to be subscribed before anything
    is published); ``aclose`` unsubscribes.
    """

    def __init__(self, pubsub: Pubsub, topic: str) -> None:
        self._pubsub = pubsub
        self._topic = topic
        self._sub: ISubscriptionAPI | None = None

    async def subscribe(self) -> None:
        if self._sub is None:
            self._sub = await self._pubsub.subscribe(self._topic)

    async def aclose(self) -> None:
        if self._sub is not None:
            self._sub = None
            await self._pubsub.unsubscribe(self._topic)

    async def __aenter__(self) -> AnnounceReceiver:
        await self.subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AnnounceReceiver:
        return self

    async def __anext__(self) -> tuple[str, Message]:
        await self.subscribe()
        assert self._sub is not None
        while True:
            try:
                raw = await self._sub.get()
            except (trio.EndOfChannel, trio.ClosedResourceError):  # unsubscribed
                raise StopAsyncIteration from None
            sender = str(ID(raw.from_id))
            try:
                return sender, Message.from_cbor(raw.data)
            except ModelError as exc:
                log.warning(
                    "undecodable announce skipped",
                    topic=self._topic,
                    peer=sender,
                    size=len(raw.data),
                    error=str(exc),
                )


def receive_announces(pubsub: Pubsub, topic: str = ANNOUNCE_TOPIC) -> AnnounceReceiver:
    """An async iterator of ``(publisher peer ID, Message)``; read it in its own task."""
    return AnnounceReceiver(pubsub, topic)
