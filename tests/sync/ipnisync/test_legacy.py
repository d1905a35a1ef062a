"""Legacy publishers as go-libipni still reads them: real HTTP servers on 127.0.0.1.

- A publisher that serves ipnisync at its root (before ``/ipni/v1/ad``): a 404 or 403 under the
  IPNI path is retried at the root, and the root is kept for that publisher.
- The old ``httpath`` multiaddr component (go-libipni ``maurl``), in text and in binary.
- Announce addresses with a protocol code nobody knows are skipped, not the whole announce.
"""

from __future__ import annotations

from collections import Counter

import multiaddr
import pytest
import trio

from sync import Message, PrivateKey, encode_block
from sync.errors import BadMultiaddr, BlockNotFound, FetchFailed
from sync.ipnisync.fetch import open_fetcher
from sync.ipnisync.maurl import HTTPATH, Endpoint, canonical, known_multiaddr, publisher_endpoint
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import MemorySource

KEY = PrivateKey.generate()
PEER = KEY.peer_id()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def go_httpath(base: str, escaped: str) -> bytes:
    """``base`` + go-libipni's ``/httpath/<escaped>``, as Go encodes it (the escaped bytes)."""
    raw = escaped.encode()
    return bytes(multiaddr.Multiaddr(base).to_bytes()) + _varint(HTTPATH) + _varint(len(raw)) + raw


def legacy_source() -> tuple[MemorySource, bytes, bytes]:
    link, raw = encode_block({"legacy": True})
    source = MemorySource((link, raw))
    source.set_head(link, KEY)
    return source, link.raw, raw


def logged(inner: Handler, paths: list[str], refuse: int = 404) -> Handler:
    """``inner``, recording each request's path; anything under ``/ipni/`` gets ``refuse``."""

    async def handle(request: Request) -> Response:
        paths.append(request.path)
        if request.path.startswith("/ipni/"):
            return Response.text(refuse, "no such route")
        return await inner(request)

    return handle


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"


@pytest.mark.parametrize("refuse", [404, 403])
async def test_a_root_publisher_is_fetched_at_its_root_and_kept_there(refuse: int) -> None:
    source, _, raw = legacy_source()
    link = source.head_link
    assert link is not None
    paths: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, logged(ipnisync_handler(source, prefix=""), paths, refuse))
            async with open_fetcher([addr], PEER, timeout=5) as fetcher:
                head = await fetcher.head()
                assert head is not None and head.head == link
                assert await fetcher.block(link) == raw
                assert await fetcher.head() == head
                unknown, _ = encode_block({"not": "there"})
                with pytest.raises(BlockNotFound):
                    await fetcher.block(unknown)  # 404 at the root too: not found
            nursery.cancel_scope.cancel()
    # one try under the IPNI path; from the first 200 at the root, only the root
    assert paths == ["/ipni/v1/ad/head", "/head", f"/{link}", "/head", f"/{unknown}"]


async def test_a_modern_publisher_never_falls_back_and_a_404_everywhere_is_not_found() -> None:
    source, _, raw = legacy_source()
    link = source.head_link
    assert link is not None
    seen: Counter[str] = Counter()
    inner = ipnisync_handler(source)

    async def handle(request: Request) -> Response:
        seen[request.path] += 1
        return await inner(request)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, handle)
            async with open_fetcher([addr], PEER, timeout=5) as fetcher:
                unknown, _ = encode_block({"not": "there"})
                with pytest.raises(BlockNotFound):
                    await fetcher.block(unknown)  # tried under the path, then at the root
                assert await fetcher.block(link) == raw  # the IPNI path is still used
                assert (await fetcher.head()) is not None
            nursery.cancel_scope.cancel()
    assert seen == Counter(
        {f"/ipni/v1/ad/{unknown}": 1, f"/{unknown}": 1, f"/ipni/v1/ad/{link}": 1,
         "/ipni/v1/ad/head": 1}
    )  # fmt: skip


async def test_a_403_at_the_root_too_is_a_fetch_failure() -> None:
    paths: list[str] = []

    async def forbidden(request: Request) -> Response:
        paths.append(request.path)
        return Response.text(403, "forbidden")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, forbidden)
            async with open_fetcher([addr], PEER, timeout=5) as fetcher:
                with pytest.raises(FetchFailed, match="403"):
                    await fetcher.head()
            nursery.cancel_scope.cancel()
    assert paths == ["/ipni/v1/ad/head", "/head"]


async def test_a_legacy_publisher_behind_an_old_httpath_address() -> None:
    source, _, raw = legacy_source()
    link = source.head_link
    assert link is not None
    paths: list[str] = []
    handler = logged(ipnisync_handler(source, prefix="/old/root"), paths)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            base = await serve(nursery, handler)
            # as a Go publisher announces it: binary, with the old code and escaped bytes
            message = Message(cid=link, addrs=(go_httpath(base, "old%2Froot"),))
            [addr] = message.addresses()
            assert addr == f"{base}/http-path/old%2Froot"
            async with open_fetcher([addr], PEER, timeout=5) as fetcher:
                assert await fetcher.block(link) == raw
            async with open_fetcher([f"{base}/httpath/old%2Froot"], PEER, timeout=5) as text:
                assert (await text.head()) is not None
            nursery.cancel_scope.cancel()
    assert paths == [
        f"/old/root/ipni/v1/ad/{link}",
        f"/old/root/{link}",
        "/old/root/ipni/v1/ad/head",
        "/old/root/head",
    ]


def test_httpath_in_text_is_http_path() -> None:
    assert publisher_endpoint(["/dns/x.org/tcp/80/http/httpath/a%2Fb"], PEER) == Endpoint(
        PEER, urls=("http://x.org:80/a/b/ipni/v1/ad",)
    )
    assert canonical("/dns/httpath/tcp/1/http") == "/dns/httpath/tcp/1/http"  # a host name
    assert canonical("/ip4/1.2.3.4/tcp/1/http/httpath/p") == "/ip4/1.2.3.4/tcp/1/http/http-path/p"


def test_unknown_codes_are_skipped_not_fatal() -> None:
    link, _ = encode_block({"x": 1})
    good = f"/ip4/1.2.3.4/tcp/80/http/p2p/{PEER}"
    strange = bytes(multiaddr.Multiaddr("/ip4/1.2.3.4/tcp/80").to_bytes()) + _varint(0x7777)
    strange += b"\x02zz"
    assert known_multiaddr(strange) is None
    message = Message(cid=link, addrs=(strange, bytes(multiaddr.Multiaddr(good).to_bytes())))
    for decoded in (Message.from_cbor(message.to_cbor()), Message.from_json(message.to_json())):
        assert decoded.addrs == message.addrs  # kept on the wire, as received
        assert decoded.addresses() == [good] and decoded.unknown() == 1
        assert decoded.publisher() == PEER
    truncated = bytes(multiaddr.Multiaddr("/ip4/1.2.3.4").to_bytes())[:3]
    with pytest.raises(BadMultiaddr):
        Message.from_cbor(Message(cid=link, addrs=(truncated,)).to_cbor())


async def test_libp2p_http_path_comes_from_the_well_known_protocols() -> None:
    from sync.ipnisync.fetch import Libp2pFetcher
    from sync.ipnisync.protocol import IPNI_PATH
    from sync.net.p2p import host_addrs, open_host
    from sync.net.p2phttp import serve_http_over_libp2p

    source, _, raw = legacy_source()
    link = source.head_link
    assert link is not None
    other = PrivateKey.generate()
    paths: list[str] = []
    inner = ipnisync_handler(source, prefix="/custom/ipni")

    async def handler(request: Request) -> Response:
        paths.append(request.path)
        return await inner(request)

    loopback = ["/ip4/127.0.0.1/tcp/0"]
    with trio.fail_after(20):
        async with open_host(KEY, loopback) as server, open_host(other, loopback) as client:
            serve_http_over_libp2p(server, handler, {IPNI_PATH: "/custom/ipni", "/x/1": "/x"})
            async with open_fetcher(host_addrs(server), PEER, host=client) as fetcher:
                assert type(fetcher) is Libp2pFetcher
                head = await fetcher.head()
                assert head is not None and head.head == link
                assert await fetcher.block(link) == raw
            assert paths == ["/custom/ipni/head", f"/custom/ipni/{link}"]  # no /ipni/v1/ad
            third = PrivateKey.generate()
            async with open_host(third, loopback) as bare:
                serve_http_over_libp2p(bare, handler, {"/x/1": "/x"})
                async with open_fetcher(host_addrs(bare), third.peer_id(), host=client) as f:
                    with pytest.raises(FetchFailed, match="offers no /ipni/v1/ad"):
                        await f.head()
