"""``refuse_private_addrs``: the address table, and the fetcher refusing before it dials.

Every server here is on 127.0.0.1 and counts what reaches it: a refusal must leave it at zero.
"""

from __future__ import annotations

import pytest
import trio

from sync import encode_block
from sync.errors import AddressRefused, FetchFailed
from sync.ipnisync.fetch import HttpFetcher, _tls_context, fetcher_factory, public_tcp_stream
from sync.ipnisync.maurl import Endpoint, address_range, is_public, publisher_endpoint, refusal
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpclient import HttpClient
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import MemorySource, key

KEY = key(0)
PEER = KEY.peer_id()

# (address, the range it is in; None: public)
ADDRESSES = [
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("209.94.92.6", None),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.255", "shared (CGNAT)"),
    ("100.128.0.1", None),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.15.255.255", None),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.1", None),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.168.1.1", "private"),
    ("192.169.0.1", None),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::7f00:1", "IPv4-compatible (deprecated)"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fe80::1%eth0", "scoped (zone)"),
    ("fec0::1", "site-local (deprecated)"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard-only"),
    ("2001::1", "IETF protocol assignments (Teredo, benchmarking, ORCHID)"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside ::ffff:7f00:1)"),
    ("::ffff:10.1.2.3", "private (IPv4 10.1.2.3 inside ::ffff:a01:203)"),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside 64:ff9b::a9fe:a9fe)"),
    ("64:ff9b::808:808", None),
    ("2002:c0a8:101::1", "private (IPv4 192.168.1.1 inside 2002:c0a8:101::1)"),
    ("2002:808:808::1", None),
    ("localhost", "not an IP address"),
    ("", "not an IP address"),
    ("1.2.3", "not an IP address"),
]


@pytest.mark.parametrize(("ip", "expected"), ADDRESSES)
def test_address_table(ip: str, expected: str | None) -> None:
    assert address_range(ip) == expected


# (multiaddr, is it dialled with the option on)
MULTIADDRS = [
    ("/ip4/8.8.8.8/tcp/3104/http", True),
    ("/ip4/8.8.8.8/tcp/4001", True),
    (f"/ip4/8.8.8.8/tcp/4001/p2p/{PEER}", True),
    ("/ip6/2606:4700::1/tcp/443/https", True),
    ("/dns4/pub.example/tcp/443/https", True),  # checked when connecting
    ("/dns/pub.example/tls/sni/pub.example/http", True),
    ("/ip4/127.0.0.1/tcp/3104/http", False),
    ("/ip4/10.0.0.1/tcp/4001", False),
    ("/ip4/0.0.0.0/tcp/3104/http", False),
    ("/ip6/::1/tcp/3104/http", False),
    ("/ip6/::ffff:127.0.0.1/tcp/3104/http", False),
    ("/ip6/fd00::1/tcp/4001", False),
    ("/ip4/169.254.169.254/tcp/80/http/http-path/latest%2Fmeta-data", False),
    ("/dns4/localhost/tcp/3104/http", False),
    ("/dns/LOCALHOST./tcp/3104/http", False),
    ("/dns6/api.localhost/tcp/3104/http", False),
    ("/dns4/pub.example/tcp/4001", False),  # libp2p resolves it where we cannot look
    ("/dnsaddr/bootstrap.example", False),
    ("/unix/tmp/sock", False),
    ("/ip6zone/eth0/ip6/fe80::1/tcp/4001", False),
    (f"/ip4/8.8.8.8/tcp/4001/p2p/{PEER}/p2p-circuit", True),
    (f"/p2p/{PEER}", True),  # names nothing to dial
    ("not a multiaddr", False),
]


@pytest.mark.parametrize(("addr", "public"), MULTIADDRS)
def test_multiaddr_table(addr: str, public: bool) -> None:
    assert is_public(addr) is public
    assert (refusal(addr) is None) is public


def test_endpoint_drops_refused_addresses_and_refuses_when_none_is_left() -> None:
    private, public = "/ip4/10.0.0.1/tcp/3104/http", "/dns4/pub.example/tcp/443/https"
    loopback_p2p = f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"
    assert publisher_endpoint([private, public], PEER, refuse_private=True) == Endpoint(
        PEER, urls=("https://pub.example:443/ipni/v1/ad",)
    )
    # A refused HTTP address falls back to a public libp2p one.
    assert publisher_endpoint([private, "/ip4/8.8.8.8/tcp/4001"], PEER, refuse_private=True) == (
        Endpoint(PEER, libp2p=("/ip4/8.8.8.8/tcp/4001",))
    )
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.1 is private.*127\.0\.0\.1 is loopback"):
        publisher_endpoint([private, loopback_p2p], PEER, refuse_private=True)
    # The option off (the default): every address is kept, as before.
    assert publisher_endpoint([private], PEER).urls == ("http://10.0.0.1:3104/ipni/v1/ad",)


def counting(inner: Handler, seen: list[str]) -> Handler:
    async def handle(request: Request) -> Response:
        seen.append(request.path)
        return await inner(request)

    return handle


@pytest.fixture
def source() -> MemorySource:
    link, raw = encode_block({"hello": "world"})
    src = MemorySource((link, raw))
    src.set_head(link, KEY)
    return src


async def counted(nursery: trio.Nursery, source: MemorySource, seen: list[str]) -> int:
    """Serve ``source`` on 127.0.0.1, noting each request's path in ``seen``; the port."""
    listeners = await nursery.start(
        serve_tcp, counting(ipnisync_handler(source), seen), "127.0.0.1", 0
    )
    return int(listeners[0].socket.getsockname()[1])


async def test_fetcher_refuses_a_loopback_publisher_before_dialling(source: MemorySource) -> None:
    seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await counted(nursery, source, seen)
            addrs = [f"/ip4/127.0.0.1/tcp/{port}/http", f"/dns4/localhost/tcp/{port}/http"]
            with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is loopback"):
                fetcher_factory(refuse_private=True, timeout=5)(PEER, addrs)
            assert seen == []
            # The same publisher with the option off (the default) is fetched.
            async with fetcher_factory(timeout=5)(PEER, addrs) as fetcher:
                head = await fetcher.head()
            assert head is not None and seen == ["/ipni/v1/ad/head"]
            nursery.cancel_scope.cancel()


async def test_connect_time_check_refuses_what_a_name_resolves_to(source: MemorySource) -> None:
    """What a DNS name resolves to is checked when connecting: a URL that reaches the client
    unchecked (as a name resolving to 127.0.0.1 would) is refused, and nothing is sent."""
    seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await counted(nursery, source, seen)
            urls = [f"http://localhost:{port}/ipni/v1/ad", f"http://127.0.0.1:{port}/ipni/v1/ad"]
            async with HttpFetcher(PEER, urls, timeout=5, refuse_private=True) as fetcher:
                with pytest.raises(AddressRefused, match=r"localhost resolves to .*loopback"):
                    await fetcher.head()
            with pytest.raises(AddressRefused, match=r"resolves to 127\.0\.0\.1 "):
                await public_tcp_stream("127.0.0.1", port)
            assert seen == []
            nursery.cancel_scope.cancel()


async def test_redirect_to_a_private_address_is_refused(source: MemorySource) -> None:
    """A publisher that passes the check redirects to 127.0.0.1: the redirect is not followed."""
    inner_seen: list[str] = []
    outer_seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            inner = await nursery.start(
                serve_tcp, counting(ipnisync_handler(source), inner_seen), "127.0.0.1", 0
            )
            inner_port = inner[0].socket.getsockname()[1]

            async def redirect(request: Request) -> Response:
                target = f"http://127.0.0.1:{inner_port}{request.path}"
                return Response(302, headers=(("location", target),))

            outer = await nursery.start(serve_tcp, counting(redirect, outer_seen), "127.0.0.1", 0)
            outer_port = outer[0].socket.getsockname()[1]

            async def connect(host: str, port: int) -> trio.abc.Stream:
                if port == outer_port:  # stands in for a public publisher
                    return await trio.open_tcp_stream(host, port)
                return await public_tcp_stream(host, port)

            client = HttpClient(timeout=5, ssl_context=_tls_context(), connect=connect)
            url = f"http://127.0.0.1:{outer_port}/ipni/v1/ad"
            async with HttpFetcher(PEER, [url], opener=client) as fetcher:
                with pytest.raises(AddressRefused, match=r"resolves to 127\.0\.0\.1"):
                    await fetcher.head()
            assert outer_seen == ["/ipni/v1/ad/head"] and inner_seen == []
            nursery.cancel_scope.cancel()


async def test_a_refused_address_moves_on_and_failures_stay_fetch_failed(
    source: MemorySource,
) -> None:
    """Refused at connect time, then a dead address: FetchFailed (transient), not a refusal."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(source), "127.0.0.1", 0)
            live = listeners[0].socket.getsockname()[1]
            refused = f"http://127.0.0.1:{live}/ipni/v1/ad"

            async def connect(host: str, port: int) -> trio.abc.Stream:
                if port == live and host == "127.0.0.2":
                    raise OSError("connection refused (stands in for a dead public address)")
                return await public_tcp_stream(host, port)

            client = HttpClient(timeout=5, ssl_context=_tls_context(), connect=connect)
            dead = f"http://127.0.0.2:{live}/ipni/v1/ad"
            async with HttpFetcher(PEER, [refused, dead], opener=client) as fetcher:
                with pytest.raises(FetchFailed, match=r"resolves to 127\.0\.0\.1") as info:
                    await fetcher.head()
            assert not isinstance(info.value, AddressRefused)
            nursery.cancel_scope.cancel()
