"""The ipnisync block fetcher, against real HTTP and libp2p servers on 127.0.0.1."""

from __future__ import annotations

import gzip
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from indexer.publisher.chain import Publisher
from sync import PrivateKey, SignedHead, encode_block, load_advertisement
from sync.errors import (
    BadMultiaddr,
    BlockNotFound,
    BlockTooLarge,
    DecodeError,
    FetchFailed,
    SignatureError,
)
from sync.ipnisync.fetch import CID_SCHEMA_HEADER, HttpFetcher, Libp2pFetcher, open_fetcher
from sync.ipnisync.maurl import Endpoint, publisher_endpoint
from sync.ipnisync.protocol import IPNI_PATH
from sync.ipnisync.routes import ipnisync_handler
from sync.model.cid import check_block
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response, serve_connection, serve_tcp
from tests.builders import MemorySource, key, multihash

KEY = key(0)
PEER = KEY.peer_id()
OTHER = key(1)
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    """Serve ``handler`` with ``serve_tcp``; return the HTTP multiaddr naming PEER."""
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    return f"/ip4/127.0.0.1/tcp/{port}/http/p2p/{PEER}"


def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Publisher]:
    pub = Publisher.init(tmp_path / "pub")
    yield pub
    pub.close()


# --- multiaddr -> endpoint -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("/ip4/127.0.0.1/tcp/3104/http", "http://127.0.0.1:3104/ipni/v1/ad"),
        ("/ip6/::1/tcp/80/http", "http://[::1]:80/ipni/v1/ad"),
        ("/dns/example.com/tcp/443/https", "https://example.com:443/ipni/v1/ad"),
        ("/dns4/example.com/tls/http", "https://example.com/ipni/v1/ad"),
        ("/dns6/a.io/tcp/8443/tls/sni/a.io/http", "https://a.io:8443/ipni/v1/ad"),
        ("/ip4/1.2.3.4/tcp/80/http/http-path/sub%2Fpath", "http://1.2.3.4:80/sub/path/ipni/v1/ad"),
        ("/dns/x.org/https/http-path/a%20b%2F", "https://x.org/a%20b/ipni/v1/ad"),
        (f"/ip4/1.2.3.4/tcp/9/http/p2p/{PEER}", "http://1.2.3.4:9/ipni/v1/ad"),
        (f"/ip4/1.2.3.4/tcp/9/http/p2p/{PEER.to_cid()}", "http://1.2.3.4:9/ipni/v1/ad"),
    ],
)
def test_http_multiaddr_to_url(addr: str, url: str) -> None:
    assert publisher_endpoint([addr], PEER) == Endpoint(PEER, urls=(url,))


def test_http_preferred_and_libp2p_kept_without_p2p() -> None:
    libp2p = f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}"
    http = "/dns/pub.example/tcp/3104/http"
    assert publisher_endpoint([libp2p, http], PEER) == Endpoint(
        PEER, urls=("http://pub.example:3104/ipni/v1/ad",)
    )
    quic = "/ip4/10.0.0.2/udp/4001/quic-v1"
    assert publisher_endpoint([libp2p, quic, f"/p2p/{PEER}"], PEER) == Endpoint(
        PEER, libp2p=("/ip4/10.0.0.1/tcp/4001", quic)
    )


@pytest.mark.parametrize(
    ("addrs", "message"),
    [
        ([], "no addresses"),
        (["/ip4/1.2.3.4/tcp/99999/http"], "bad multiaddr"),
        (["not a multiaddr"], "bad multiaddr"),
        ([f"/ip4/1.2.3.4/tcp/80/http/p2p/{OTHER.peer_id()}"], "not the publisher"),
        ([f"/ip4/1.2.3.4/tcp/4001/p2p/{OTHER.peer_id()}"], "not the publisher"),
        (["/ip4/1.2.3.4/udp/80/http"], "unsupported /udp"),
        (["/tcp/80/http"], "must start with an IP or DNS name"),
    ],
)
def test_bad_addresses(addrs: list[str], message: str) -> None:
    with pytest.raises(BadMultiaddr, match=message):
        publisher_endpoint(addrs, PEER)


def test_libp2p_only_needs_a_host() -> None:
    with pytest.raises(BadMultiaddr, match="libp2p needs a host"):
        open_fetcher([f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}"], PEER)


def test_import_does_not_load_libp2p() -> None:
    code = "import sys, sync.ipnisync.fetch; sys.exit('libp2p' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- HTTP ------------------------------------------------------------------------------------


async def test_fetch_from_a_real_publisher(publisher: Publisher) -> None:
    connections: list[int] = []
    seen: list[Request] = []
    inner = ipnisync_handler(publisher)

    async def handler(request: Request) -> Response:
        seen.append(request)
        return await inner(request)

    async def on_connection(stream: trio.SocketStream) -> None:
        connections.append(1)
        await serve_connection(stream, handler)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, on_connection, listeners)
            port = listeners[0].socket.getsockname()[1]
            addr = f"/ip4/127.0.0.1/tcp/{port}/http/p2p/{publisher.peer_id}"
            async with open_fetcher([addr], publisher.peer_id, timeout=5) as fetcher:
                assert type(fetcher) is HttpFetcher
                assert await fetcher.head() is None  # 204: nothing published yet
                published = publisher.add(b"c", [multihash(i) for i in range(3000)], bitswap())
                head = await fetcher.head()
                assert head is not None and head.head == published.link
                raw = await fetcher.block(published.link, "Advertisement")
                assert raw == publisher.block(published.link)
                check_block(published.link, raw)
                entries = load_advertisement(published.link, raw).entries
                chunk = await fetcher.block(entries, "EntryChunk")
                check_block(entries, chunk)
                unknown, _ = encode_block({"not": "stored"})
                with pytest.raises(BlockNotFound):
                    await fetcher.block(unknown)
                assert await fetcher.head() == head
            nursery.cancel_scope.cancel()
    # keep-alive, also after a 204 and a 404; the 404 was retried once at the root (go-libipni's
    # fallback for legacy publishers), on the same connection
    assert len(seen) == 7 and len(connections) == 1
    assert seen[5].path == f"/{unknown}" and seen[4].path == f"{IPNI_PATH}/{unknown}"
    assert [r.header(CID_SCHEMA_HEADER) for r in seen[2:5]] == ["Advertisement", "EntryChunk", ""]
    assert all("gzip" in r.header("accept-encoding") for r in seen)
    assert len(chunk) > 3000 * 34  # the gzip-encoded chunk came back decoded


async def test_a_publisher_sends_each_blocks_gzip_encoding_kept_since_it_was_written(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry chunk goes out gzip-encoded as the publisher stored it with the block, not
    compressed again per request; a store that holds no encoding (written before it was
    kept) has it made once, when first served, and kept.  Each decodes to the block."""
    import httpx

    import indexer.publisher.store
    import sync.net.httpconnection

    compressed: list[int] = []

    def counted(body: bytes) -> bytes | None:
        compressed.append(len(body))
        return gzip.compress(body)

    published = publisher.add(b"c", [multihash(i) for i in range(3000)], bitswap())
    monkeypatch.setattr(sync.net.httpconnection, "gzip_encoding", counted)
    monkeypatch.setattr(indexer.publisher.store, "gzip_encoding", counted)
    ad = load_advertisement(published.link, publisher.block(published.link) or b"")
    block = publisher.block(ad.entries) or b""
    kept_key = b"z/" + ad.entries.raw
    kept = publisher.store.kv.get(kept_key)
    assert kept is not None and gzip.decompress(kept) == block
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(publisher), "127.0.0.1", 0)
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}{IPNI_PATH}/"
            bodies = []
            async with httpx.AsyncClient(headers={"accept-encoding": "gzip"}) as client:
                for drop in (False, True, False):
                    if drop:  # as a store written before the encodings were kept
                        publisher.store.kv.delete(kept_key)
                    async with client.stream("GET", url + str(ad.entries)) as response:
                        assert response.headers["content-encoding"] == "gzip"
                        bodies.append(b"".join([part async for part in response.aiter_raw()]))
                    if drop:
                        assert publisher.store.kv.get(kept_key) == bodies[-1]  # kept now
                plain = await client.get(url + str(ad.entries), headers={"accept-encoding": ""})
                assert plain.content == block and "content-encoding" not in plain.headers
            nursery.cancel_scope.cancel()
    assert bodies[0] == kept and compressed == [len(block)]  # made once, for the dropped key
    for body in bodies:
        check_block(ad.entries, gzip.decompress(body))


async def test_http_path_prefix_and_failover() -> None:
    link, raw = encode_block({"hello": "world"})
    source = MemorySource((link, raw))
    source.set_head(link, KEY)
    hang_ups: list[int] = []

    async def hang_up(stream: trio.SocketStream) -> None:  # accepts, then closes at once
        hang_ups.append(1)
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, hang_up, listeners)
            dead = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            handler = ipnisync_handler(source, prefix="/sub/path/ipni/v1/ad")
            addr = (await serve(nursery, handler)).replace("/http/", "/http/http-path/sub%2Fpath/")
            async with open_fetcher([dead, addr], PEER, timeout=5) as fetcher:
                for _ in range(3):
                    head = await fetcher.head()
                    assert head is not None and head.head == link
                    assert await fetcher.block(link) == raw
            assert len(hang_ups) == 1  # tried once; then the live address was kept first
            async with open_fetcher([addr.replace("http-path/sub%2Fpath/", "")], PEER) as bare:
                with pytest.raises(BlockNotFound):
                    await bare.head()  # the handler only answers under the prefix
            async with open_fetcher([dead], PEER) as fetcher:
                with pytest.raises(FetchFailed, match="RemoteProtocolError"):
                    await fetcher.head()
            nursery.cancel_scope.cancel()


async def test_connection_refused_is_fetch_failed() -> None:
    link, _ = encode_block({"a": 1})
    with trio.fail_after(5):
        async with open_fetcher([f"/ip4/127.0.0.1/tcp/{closed_port()}/http"], PEER) as fetcher:
            with pytest.raises(FetchFailed, match="ConnectError"):
                await fetcher.block(link)


async def test_heads_that_must_not_verify() -> None:
    link, _ = encode_block({"ad": 1})
    source = MemorySource()
    good = SignedHead.create(link, KEY)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, ipnisync_handler(source))
            async with open_fetcher([addr], PEER) as fetcher:
                source.set_head(link, key=OTHER)
                with pytest.raises(SignatureError, match="not by the publisher"):
                    await fetcher.head()
                bad_sig = SignedHead(link, good.pubkey, good.sig[:-1] + bytes([good.sig[-1] ^ 1]))
                source.signed = bad_sig.encode()
                with pytest.raises(SignatureError):
                    await fetcher.head()
                source.signed = b'{"head": '
                with pytest.raises(DecodeError):
                    await fetcher.head()
                source.signed = good.encode()
                assert await fetcher.head() == good
            nursery.cancel_scope.cancel()


MISBEHAVIOURS = [
    *("head", "unavailable", "empty", "redirect", "slow", "drip", "infinite", "at-cap"),
    *("over-cap", "lying-length", "bomb", "bad-gzip", "cut-gzip", "brotli", "missing"),
]
LINKS = {name: encode_block({"misbehave": name})[0] for name in MISBEHAVIOURS}
NAMES = {str(link): name for name, link in LINKS.items()}


async def bad_server(request: Request) -> Response:
    """A misbehaviour for each block in LINKS (and a 500 for the head)."""
    what = NAMES.get(request.path.rsplit("/", 1)[1], "head")
    if what == "head":
        return Response.text(500, "internal error")
    if what == "unavailable":
        return Response.text(503, "busy")
    if what == "empty":
        return Response(204)
    if what == "redirect":
        return Response(302, headers=(("location", request.path),))
    if what == "slow":
        await trio.sleep(10)
    if what == "drip":

        async def drip() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x"
                await trio.sleep(0.05)

        return Response(200, drip())
    if what == "infinite":

        async def forever() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536

        return Response(200, forever())
    if what in ("at-cap", "over-cap"):
        return Response(200, b"x" * ((1 << 20) + (what == "over-cap")))
    if what == "lying-length":  # says how big before sending it: refused before reading

        async def trickle() -> AsyncIterator[bytes]:
            yield b"x"
            await trio.sleep(10)

        return Response(200, trickle(), headers=(("content-length", str(8 << 20)),))
    if what == "bomb":
        return Response(200, b"\0" * (8 << 20), compressible=True)
    if what == "bad-gzip":
        return Response(200, b"not gzip at all", headers=(("content-encoding", "gzip"),))
    if what == "cut-gzip":
        cut = gzip.compress(b"x" * 1000)[:-8]  # no CRC/length trailer
        return Response(200, cut, headers=(("content-encoding", "gzip"),))
    if what == "brotli":
        return Response(200, b"xx", headers=(("content-encoding", "br"),))
    return Response.text(404, "not found")


@pytest.mark.parametrize(
    ("what", "error", "message"),
    [
        ("unavailable", FetchFailed, "status 503"),
        ("empty", FetchFailed, "status 204"),
        ("redirect", FetchFailed, "TooManyRedirects"),
        ("missing", BlockNotFound, "404"),
        ("slow", FetchFailed, "Timeout|TooSlow"),
        ("drip", FetchFailed, "TooSlow"),  # each byte in time, the whole too slow
        ("infinite", BlockTooLarge, "over the"),
        ("over-cap", BlockTooLarge, "over the"),
        ("bomb", BlockTooLarge, "over the"),
        ("lying-length", BlockTooLarge, "8388608 bytes"),
        ("bad-gzip", FetchFailed, "bad gzip"),
        ("cut-gzip", FetchFailed, "truncated gzip"),
        ("brotli", FetchFailed, "unsupported content-encoding"),
    ],
)
async def test_misbehaving_publisher(what: str, error: type[Exception], message: str) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, bad_server)
            async with open_fetcher([addr], PEER, max_block=1 << 20, timeout=1.0) as fetcher:
                with pytest.raises(error, match=message):
                    await fetcher.block(LINKS[what])
            nursery.cancel_scope.cancel()


async def test_cap_boundary_and_head_500() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            addr = await serve(nursery, bad_server)
            async with open_fetcher([addr], PEER, max_block=1 << 20) as fetcher:
                assert len(await fetcher.block(LINKS["at-cap"])) == 1 << 20
                with pytest.raises(FetchFailed, match="status 500"):
                    await fetcher.head()
            nursery.cancel_scope.cancel()


# --- libp2p ----------------------------------------------------------------------------------


async def test_fetch_over_libp2p() -> None:
    from sync.net.p2p import host_addrs, open_host
    from sync.net.p2phttp import serve_http_over_libp2p

    small_link, small = encode_block({"hello": "world"})
    big_link, big = encode_block({"padding": "x" * 70_000})
    huge_link, huge = encode_block({"padding": random.randbytes(400_000)})  # past the transport cap
    source = MemorySource((small_link, small), (big_link, big), (huge_link, huge))
    with trio.fail_after(20):
        async with open_host(KEY, LOOPBACK) as server, open_host(OTHER, LOOPBACK) as client:
            addrs = host_addrs(server)
            async with open_fetcher(addrs, PEER, host=client, max_block=65536) as fetcher:
                assert type(fetcher) is Libp2pFetcher
                with pytest.raises(FetchFailed):  # no /http/1.1 handler yet
                    await fetcher.head()
                serve_http_over_libp2p(server, ipnisync_handler(source), {IPNI_PATH: IPNI_PATH})
                assert await fetcher.head() is None
                source.set_head(small_link, KEY)
                head = await fetcher.head()
                assert head is not None and head.head == small_link
                assert await fetcher.block(small_link, "Advertisement") == small
                with pytest.raises(BlockNotFound):
                    await fetcher.block(encode_block({"x": 1})[0])
                with pytest.raises(BlockTooLarge):
                    await fetcher.block(big_link)
                with pytest.raises(BlockTooLarge, match="response body over") as caught:
                    await fetcher.block(huge_link)  # the transport's own ResponseTooLarge...
                assert type(caught.value) is BlockTooLarge  # ...translated by the opener
                assert str(huge_link) in str(caught.value)
            wrong = PrivateKey.generate().peer_id()
            bare = [a.rsplit("/p2p/", 1)[0] for a in addrs]
            async with open_fetcher(bare, wrong, host=client, timeout=5) as impostor:
                with pytest.raises(FetchFailed):  # the host at addrs is not `wrong`
                    await impostor.head()
