"""A publisher's multiaddrs -> how to reach it (go-libipni ``maurl.ToURL``, ``mautil``).

Rules this module keeps:

- Addresses (go-libipni ``maurl.ToURL``): a multiaddr with an ``http`` or ``https`` component is
  an HTTP address.  ``/ip4|ip6|dns|dns4|dns6/<h>[/tcp/<p>]`` gives the host (an IPv6 one in
  brackets), ``/https`` or ``/tls[/sni/..]/http`` the ``https`` scheme, ``/http-path/<escaped>``
  a path prefix; ``/ipni/v1/ad`` is always appended (the spec's implicit namespace).  Any other
  component in an HTTP address is a ``BadMultiaddr``.  Every other multiaddr is a libp2p
  address.  A trailing ``/p2p/<id>`` is stripped and must name the expected publisher (a bare
  ``/p2p/<id>`` adds no address: the libp2p host may already know the peer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

import multiaddr

from .errors import BadMultiaddr, BadPeerId
from .ipnisync import IPNI_PATH
from .peer import PeerId

__all__ = ["Endpoint", "publisher_endpoint"]

_HOSTS = {"ip4", "ip6", "dns", "dns4", "dns6"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach a publisher: HTTP base URLs (``.../ipni/v1/ad``) or else libp2p addresses."""

    publisher: PeerId
    urls: tuple[str, ...] = ()
    libp2p: tuple[str, ...] = ()  # transport multiaddrs, ``/p2p/<publisher>`` stripped


def publisher_endpoint(addrs: Sequence[str], publisher: PeerId) -> Endpoint:
    """Parse a publisher's multiaddrs; HTTP ones win over libp2p ones."""
    if not addrs:
        raise BadMultiaddr(f"publisher {publisher} has no addresses")
    urls: list[str] = []
    libp2p: list[str] = []
    for text in addrs:
        try:
            ma = multiaddr.Multiaddr(text)
            items = list(ma.items())
        except Exception as exc:  # py-multiaddr raises many types
            raise BadMultiaddr(f"bad multiaddr {text!r}: {exc}") from None
        if items and items[-1][0].name == "p2p":
            _check_peer(str(items[-1][1]), publisher, text)
            ma, items = ma.decapsulate_code(items[-1][0].code), items[:-1]
        if any(p.name in ("http", "https") for p, _ in items):
            urls.append(_to_url(items, text))
        elif items:
            libp2p.append(str(ma))
    if urls:
        return Endpoint(publisher, urls=tuple(urls))
    return Endpoint(publisher, libp2p=tuple(libp2p))


def _check_peer(value: str, publisher: PeerId, text: str) -> None:
    try:
        peer = PeerId.parse(value)
    except BadPeerId as exc:
        raise BadMultiaddr(f"bad /p2p/ in {text!r}: {exc}") from None
    if peer != publisher:
        raise BadMultiaddr(f"{text!r} names peer {peer}, not the publisher {publisher}")


def _to_url(items: list[tuple[multiaddr.protocols.Protocol, str | None]], text: str) -> str:
    (first, host), rest = items[0], items[1:]
    if first.name not in _HOSTS or not host:
        raise BadMultiaddr(f"HTTP multiaddr {text!r} must start with an IP or DNS name")
    host = f"[{host}]" if first.name == "ip6" else host
    scheme, port, prefix = "http", "", ""
    for proto, value in rest:
        if proto.name == "tcp":
            port = f":{value}"
        elif proto.name in ("tls", "https"):
            scheme = "https"
        elif proto.name == "http-path":
            prefix = unquote(value or "").strip("/")
        elif proto.name not in ("sni", "http"):
            raise BadMultiaddr(f"HTTP multiaddr {text!r}: unsupported /{proto.name}")
    path = "/".join(part for part in (prefix, IPNI_PATH.strip("/")) if part)
    return f"{scheme}://{host}{port}/{quote(path, safe='/')}"  # py-multiaddr checked h and p
