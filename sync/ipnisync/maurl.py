"""A publisher's multiaddrs -> how to reach it (go-libipni ``maurl.ToURL``, ``mautil``).

Rules this module keeps:

- Addresses (go-libipni ``maurl.ToURL``): a multiaddr with an ``http`` or ``https`` component is
  an HTTP address.  ``/ip4|ip6|dns|dns4|dns6/<h>[/tcp/<p>]`` gives the host (an IPv6 one in
  brackets), ``/https`` or ``/tls[/sni/..]/http`` the ``https`` scheme, ``/http-path/<escaped>``
  a path prefix; ``/ipni/v1/ad`` is always appended (the spec's implicit namespace).  Any other
  component in an HTTP address is a ``BadMultiaddr``.  Every other multiaddr is a libp2p
  address.  A trailing ``/p2p/<id>`` is stripped and must name the expected publisher (a bare
  ``/p2p/<id>`` adds no address: the libp2p host may already know the peer).
- Public addresses (``refuse_private_addrs``): ``address_range`` names the non-public range an IP
  is in (loopback, private, link-local, unique-local, unspecified, CGNAT, documentation,
  multicast, reserved...; IPv4-mapped, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
  address inside), ``None`` for a public one.  ``is_public(addr)`` says whether the fetcher may
  dial a multiaddr with the option on: an IP literal must be public; a DNS name in an HTTP address
  is kept and its resolved addresses are checked when connecting (``fetcher.py``: only public
  ones are dialled, so a name cannot rebind between check and connect); a DNS name in a libp2p
  address is refused, because py-libp2p resolves and dials it where we cannot check; any other
  first component (``/unix``, ``/ip6zone``, ``/onion3``...) is refused.  A bare ``/p2p/<id>``
  names nothing to dial and is kept.  ``publisher_endpoint(..., refuse_private=True)`` drops the
  refused addresses and raises ``AddressRefused`` when that leaves none.
- Legacy ``httpath`` (go-libipni ``maurl``: code ``0x300200``, the URL-escaped path as its
  bytes, from before multiaddr had ``http-path``): py-multiaddr does not know it (and its
  registry is locked), so it is translated here, never registered: ``/httpath/<escaped>`` in
  text becomes ``/http-path/<escaped>`` (``canonical``), and in binary ``known_multiaddr``
  rewrites the component as ``http-path`` with the unescaped path, the same address.
- Unknown codes (go-libipni ``message.GetAddrs``): a binary multiaddr with a protocol code
  py-multiaddr does not know cannot be split (its size is unknown), so ``known_multiaddr``
  returns ``None`` for it and the caller skips that address; any other malformation is
  ``BadMultiaddr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

import multiaddr

from sync.errors import AddressRefused, BadMultiaddr, BadPeerId
from sync.ipnisync.protocol import IPNI_PATH
from sync.model.peer import PeerId

__all__ = [
    "HTTPATH",
    "Endpoint",
    "address_range",
    "canonical",
    "is_public",
    "known_multiaddr",
    "publisher_endpoint",
    "refusal",
]

HTTPATH = 0x300200
"""go-libipni's legacy ``httpath`` protocol code (before multiaddr's ``http-path``, 0x01e1)."""
_HTTP_PATH = 0x01E1

_HOSTS = {"ip4", "ip6", "dns", "dns4", "dns6"}
_DNS = {"dns", "dns4", "dns6", "dnsaddr"}
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*rows: tuple[str, str]) -> tuple[tuple[_Net, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in rows)


# Every range that is not global unicast (IANA special-purpose registries, RFC 6890 and later).
_V4 = _nets(
    ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 itself is "any address"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # cloud metadata services live at 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
)
_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo, benchmarking, ORCHID)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def canonical(text: str) -> str:
    """``text`` with a legacy ``/httpath/`` component written as ``/http-path/`` (same value:
    both are the URL-escaped path in text).  Anything it cannot read is left for the parser."""
    from multiaddr.codecs import codec_by_name
    from multiaddr.exceptions import Error
    from multiaddr.protocols import protocol_with_name

    parts = text.split("/")
    at = 1
    while at < len(parts):
        if parts[at] == "httpath":
            parts[at] = "http-path"
            at += 2
            continue
        try:
            proto = protocol_with_name(parts[at])
        except (Error, ValueError):
            break
        if proto.codec is not None and codec_by_name(proto.codec).IS_PATH:
            break  # /unix/<path>: the rest is its value
        at += 1 if proto.codec is None else 2
    return "/".join(parts)


def _uvarint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(raw) and shift <= 63:
        byte = raw[at]
        value, at, shift = value | (byte & 0x7F) << shift, at + 1, shift + 7
        if not byte & 0x80:
            return value, at
    raise BadMultiaddr(f"bad binary multiaddr {raw.hex()}: truncated varint")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def known_multiaddr(raw: bytes) -> bytes | None:
    """The binary multiaddr ``raw`` with a legacy ``httpath`` rewritten as ``http-path``;
    ``None`` when it holds a protocol code py-multiaddr does not know (the address is skipped).

    Only the framing is read here (``BadMultiaddr`` when it is broken); values are checked by
    py-multiaddr when the result is parsed.
    """
    from multiaddr.codecs import codec_by_name
    from multiaddr.exceptions import ProtocolLookupError, ProtocolNotFoundError
    from multiaddr.protocols import protocol_with_code

    out, at = bytearray(), 0
    while at < len(raw):
        start = at
        code, at = _uvarint(raw, at)
        if code == HTTPATH:
            size, at = _uvarint(raw, at)
            path = unquote(raw[at : at + size].decode("utf-8", "replace")).encode()
            out += _varint(_HTTP_PATH) + _varint(len(path)) + path
            at += size
            continue
        try:
            proto = protocol_with_code(code)
        except (ProtocolNotFoundError, ProtocolLookupError):
            return None
        if proto.codec is not None:
            fixed = codec_by_name(proto.codec).SIZE
            if fixed > 0:
                at += fixed // 8
            else:
                size, at = _uvarint(raw, at)
                at += size
        if at > len(raw):
            raise BadMultiaddr(f"bad binary multiaddr {raw.hex()}: truncated /{proto.name}")
        out += raw[start:at]
    return bytes(out)


def address_range(ip: str) -> str | None:
    """The name of the non-public range ``ip`` is in; ``None`` when it is a public address.

    Text that is no IP address is ``"not an IP address"``.  A zone (``fe80::1%eth0``) is never
    public.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv4Address):
        return next((name for net, name in _V4 if addr in net), None)
    if addr.scope_id:
        return "scoped (zone)"
    inner = addr.ipv4_mapped or addr.sixtofour
    if inner is None and addr in _NAT64:
        inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if inner is not None:
        name = address_range(str(inner))
        return None if name is None else f"{name} (IPv4 {inner} inside {addr})"
    return next((name for net, name in _V6 if addr in net), None)


def refusal(addr: str) -> str | None:
    """Why ``refuse_private_addrs`` refuses the multiaddr ``addr``; ``None`` when it may be dialled.

    See the module's rules; a multiaddr that does not parse is refused too (``publisher_endpoint``
    reports it as ``BadMultiaddr`` first).
    """
    try:
        items = [(p.name, v) for p, v in multiaddr.Multiaddr(canonical(addr)).items()]
    except (
        multiaddr.exceptions.Error,
        ValueError,
    ):  # py-multiaddr wraps its codecs' errors in its own
        return "not a multiaddr"
    if items and items[-1][0] == "p2p":
        items.pop()
    if not items:
        return None  # a bare /p2p/<id>: nothing to dial
    (first, value), http = items[0], any(name in ("http", "https") for name, _ in items)
    if first in ("ip4", "ip6"):
        name = address_range(value or "")
        return None if name is None else f"{value} is {name}"
    if first in _DNS:
        host = (value or "").lower().rstrip(".")
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host} is loopback"
        return None if http else f"libp2p dials /{first}/{host} itself: it cannot be checked"
    return f"/{first} is no public address"


def is_public(addr: str) -> bool:
    """May the fetcher dial the multiaddr ``addr`` with ``refuse_private_addrs`` on?"""
    return refusal(addr) is None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach a publisher: HTTP base URLs (``.../ipni/v1/ad``) or else libp2p addresses."""

    publisher: PeerId
    urls: tuple[str, ...] = ()
    libp2p: tuple[str, ...] = ()  # transport multiaddrs, ``/p2p/<publisher>`` stripped


def publisher_endpoint(
    addrs: Sequence[str], publisher: PeerId, *, refuse_private: bool = False
) -> Endpoint:
    """Parse a publisher's multiaddrs; HTTP ones win over libp2p ones.

    With ``refuse_private``, addresses ``is_public`` refuses are dropped, and ``AddressRefused``
    is raised when every address was.
    """
    if not addrs:
        raise BadMultiaddr(f"publisher {publisher} has no addresses")
    urls: list[str] = []
    libp2p: list[str] = []
    refused: list[str] = []
    for text in addrs:
        try:
            ma = multiaddr.Multiaddr(canonical(text))
            items = list(ma.items())
        except (
            multiaddr.exceptions.Error,
            ValueError,
        ) as exc:  # py-multiaddr wraps its codecs' errors
            raise BadMultiaddr(f"bad multiaddr {text!r}: {exc}") from None
        if items and items[-1][0].name == "p2p":
            _check_peer(str(items[-1][1]), publisher, text)
            ma, items = ma.decapsulate_code(items[-1][0].code), items[:-1]
        if refuse_private and (why := refusal(text)) is not None:
            refused.append(f"{text} ({why})")
            continue
        if any(p.name in ("http", "https") for p, _ in items):
            urls.append(_to_url(items, text))
        elif items:
            libp2p.append(str(ma))
    if refused and not urls and not libp2p:
        raise AddressRefused(
            f"publisher {publisher}: every address is refused by refuse_private_addrs: "
            + "; ".join(refused)
        )
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
