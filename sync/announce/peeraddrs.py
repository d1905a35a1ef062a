"""Peer address lists (bootstrap and peering config): ``<transport multiaddr>/p2p/<peer id>``.

Pure parsing (py-multiaddr, no py-libp2p), so the config can be checked without importing the
libp2p stack.

Rules this module keeps:

- Every entry is a multiaddr whose LAST component is ``/p2p/<peer id>`` with a transport before
  it; anything else (not a multiaddr, no ``/p2p/``, ``/p2p/`` alone, a bad peer ID) is a
  ``BadMultiaddr`` naming the entry.
- Entries of one peer are grouped, in first-seen order (go-libipni ``mautil.ParsePeers``, which
  storetheindex uses for ``Bootstrap.Peers`` and ``Peering.Peers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import multiaddr

from sync.errors import BadMultiaddr, BadPeerId
from sync.model.peer import PeerId

__all__ = ["PeerAddrs", "parse_peer_addrs"]


@dataclass(frozen=True, slots=True)
class PeerAddrs:
    """One peer: its ID and the transport multiaddrs (``/p2p/`` stripped) to dial it on."""

    peer_id: PeerId
    addrs: tuple[str, ...]


def _one(text: str) -> tuple[PeerId, str]:
    try:
        ma = multiaddr.Multiaddr(text)
        items = list(ma.items())
    except (multiaddr.exceptions.Error, ValueError) as exc:
        raise BadMultiaddr(f"not a multiaddr: {text!r} ({exc})") from None
    if len(items) < 2 or items[-1][0].name != "p2p":
        raise BadMultiaddr(f"not <transport multiaddr>/p2p/<peer id>: {text!r}")
    try:
        peer = PeerId.parse(str(items[-1][1]))
    except BadPeerId as exc:
        raise BadMultiaddr(f"bad peer ID in {text!r}: {exc}") from None
    return peer, str(ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{items[-1][1]}")))


def parse_peer_addrs(entries: Sequence[str]) -> list[PeerAddrs]:
    """``entries`` grouped by peer; ``BadMultiaddr`` for the first bad one."""
    grouped: dict[PeerId, list[str]] = {}
    for text in entries:
        peer, addr = _one(text)
        addrs = grouped.setdefault(peer, [])
        if addr not in addrs:
            addrs.append(addr)
    return [PeerAddrs(peer, tuple(addrs)) for peer, addrs in grouped.items()]
