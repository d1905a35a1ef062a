"""py-libp2p hosts built from our own keys (TCP + Noise + Yamux).

Importing this module imports py-libp2p (1.3-2 s), so nothing else in ``sync`` imports it at
module import time: the daemon imports it lazily, only when libp2p is configured.

Rules this module keeps:

- The host's identity is our ``PrivateKey`` (Ed25519 or secp256k1) converted without loss, so
  the peer ID py-libp2p reports is exactly ``str(key.peer_id())``.
- Only the stack go-libp2p speaks by default is offered: TCP, Noise (``/noise``) and Yamux
  (``/yamux/1.0.0``).  py-libp2p's defaults would also offer plaintext, secio, TLS and mplex;
  plaintext in particular must never be accepted, so the security and muxer maps are explicit.
- Host addresses are printed in full, ``<transport addr>/p2p/<peer id>``, the form announces and
  ``peer_info`` consume.
- ``open_host`` is an async context manager: the host listens inside the block and is closed
  (listeners, connections, background tasks) when the block exits, also on error.  A fixed TCP
  port that is taken is an ``OSError`` ("cannot listen on ADDR (p2p): ...") before the host
  starts: py-libp2p's listeners set ``SO_REUSEPORT``, so without this check a second host on
  the same port would share it silently (Linux splits the connections between them).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.keys import PrivateKey as Libp2pPrivateKey
from libp2p.crypto.secp256k1 import Secp256k1PrivateKey
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TMuxerOptions, TProtocol, TSecurityOptions
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from sync.crypto.keys import KeyType, PrivateKey
from sync.crypto.protobuf import parse_fields
from sync.errors import BadMultiaddr, UnsupportedKeyType

__all__ = ["host_addrs", "libp2p_keypair", "open_host", "peer_info"]

_CLOSE_TIMEOUT = 5.0


def libp2p_keypair(key: PrivateKey) -> KeyPair:
    """py-libp2p's ``KeyPair`` for ``key`` (Ed25519 or secp256k1)."""
    data = parse_fields(key.marshal())[2][-1]
    assert isinstance(data, bytes)
    private: Libp2pPrivateKey
    if key.key_type is KeyType.ED25519:
        private = Ed25519PrivateKey.from_bytes(data[:32])  # seed || public key
    elif key.key_type is KeyType.SECP256K1:
        private = Secp256k1PrivateKey.from_bytes(data)
    else:  # pragma: no cover - PrivateKey only holds the two types above
        raise UnsupportedKeyType(f"no libp2p host key for {key.key_type.name}")
    return KeyPair(private, private.get_public_key())


def _security(pair: KeyPair) -> TSecurityOptions:
    noise = NoiseTransport(pair, noise_privkey=new_x25519_key_pair().private_key)
    return {TProtocol(NOISE_PROTOCOL_ID): noise}


def _muxers() -> TMuxerOptions:
    return {TProtocol(YAMUX_PROTOCOL_ID): Yamux}


@asynccontextmanager
async def open_host(key: PrivateKey, listen: Sequence[str]) -> AsyncIterator[IHost]:
    """A running host with identity ``key`` listening on ``listen`` (``/ip4/.../tcp/0`` works)."""
    pair = libp2p_keypair(key)
    addrs = [_multiaddr(a) for a in listen]
    for addr in addrs:
        _port_free(addr)
    host = new_host(
        key_pair=pair,
        sec_opt=_security(pair),
        muxer_opt=_muxers(),
        listen_addrs=addrs,
    )
    async with host.run(listen_addrs=addrs):
        try:
            yield host
        finally:
            # Close while the network service still runs: py-libp2p's Swarm.close() closes
            # connections and listeners itself; the service's own exit only cancels their tasks
            # and leaves dialed sockets open until garbage collection.
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                await host.close()


def _port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed TCP port that is taken: bound here WITHOUT ``SO_REUSEPORT``, which
    py-libp2p sets on its listeners, so a second host cannot silently share a port."""
    items = list(addr.items())
    names = [p.name for p, _ in items]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]) or str(items[1][1]) == "0":
        return
    family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((str(items[0][1]), int(str(items[1][1]))))
            sock.listen()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise OSError(f"cannot listen on {addr} (p2p): {why}") from None


def host_addrs(host: IHost) -> list[str]:
    """The host's listen addresses, each ending in ``/p2p/<peer id>``."""
    return [str(a) for a in host.get_addrs()]


def peer_info(addr: str) -> PeerInfo:
    """The peer ID and dial address of a full multiaddr ``.../p2p/<peer id>``."""
    try:
        return info_from_p2p_addr(_multiaddr(addr))
    except BadMultiaddr:
        raise
    except (
        ValueError,
        BaseLibp2pError,
        multiaddr.exceptions.Error,
    ) as exc:  # InvalidAddrError, ID's
        raise BadMultiaddr(f"not a dialable /p2p/ multiaddr {addr!r}: {exc}") from None


def _multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except (multiaddr.exceptions.Error, ValueError) as exc:  # py-multiaddr wraps its codecs' errors
        raise BadMultiaddr(f"bad multiaddr {text!r}: {exc}") from None
