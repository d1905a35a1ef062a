"""libp2p hosts, HTTP over libp2p and announce gossip, with real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import gzip
import json

import httpcore
import pytest
import trio
from structlog.testing import capture_logs

from sync import KeyType, Message, PrivateKey, PublicKey, SignedHead, encode_block
from sync.announce.gossip import ANNOUNCE_TOPIC, open_gossip, publish_announce, receive_announces
from sync.errors import TransportFailed
from sync.ipnisync.protocol import IPNI_PATH
from sync.ipnisync.routes import ipnisync_handler
from sync.model.cid import check_block
from sync.net.p2p import host_addrs, libp2p_keypair, open_host, peer_info
from sync.net.p2phttp import (
    HTTP_PROTOCOL,
    WELL_KNOWN_PROTOCOLS,
    Libp2pBackend,
    fetch_over_libp2p,
    libp2p_client,
    serve_http_over_libp2p,
    well_known_body,
)
from tests.builders import MemorySource

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
PROTOCOLS = {IPNI_PATH: IPNI_PATH + "/"}


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.SECP256K1])
async def test_host_identity_is_our_key(key_type: KeyType) -> None:
    key = PrivateKey.generate(key_type)
    pair = libp2p_keypair(key)
    assert pair.public_key.serialize() == key.public_key().marshal()
    signature = pair.private_key.sign(b"data")  # py-libp2p signs, we verify
    assert PublicKey.unmarshal(pair.public_key.serialize()).verify(b"data", signature)
    with trio.fail_after(10):
        async with open_host(key, LOOPBACK) as host, open_host(PrivateKey.generate(), []) as dialer:
            assert str(host.get_id()) == str(key.peer_id())
            addrs = host_addrs(host)
            assert addrs and all(a.startswith("/ip4/127.0.0.1/tcp/") for a in addrs)
            assert all(a.endswith(f"/p2p/{key.peer_id()}") for a in addrs)
            assert str(peer_info(addrs[0]).peer_id) == str(key.peer_id())
            await dialer.connect(peer_info(addrs[0]))  # Noise checks the key signs as the ID
            assert [str(p) for p in dialer.get_connected_peers()] == [str(key.peer_id())]


async def test_a_second_host_cannot_share_a_taken_port() -> None:
    """py-libp2p's listeners set SO_REUSEPORT; ``open_host`` refuses a taken port anyway."""
    with trio.fail_after(10):
        async with open_host(PrivateKey.generate(), LOOPBACK) as first:
            taken = host_addrs(first)[0].rpartition("/p2p/")[0]
            with pytest.raises(OSError, match=rf"^cannot listen on {taken} \(p2p\): .*in use"):
                async with open_host(PrivateKey.generate(), [taken]):
                    pass  # pragma: no cover - the host must not start
            assert host_addrs(first)[0].startswith(taken)  # the first one is unharmed


async def test_ipnisync_over_libp2p() -> None:
    key = PrivateKey.generate()
    source = MemorySource()
    small_link, small = encode_block({"hello": "world"})
    big_link, big = encode_block({"padding": "x" * 4096})  # over the gzip threshold
    with trio.fail_after(20):
        async with open_host(key, LOOPBACK) as a, open_host(PrivateKey.generate(), LOOPBACK) as b:
            serve_http_over_libp2p(a, ipnisync_handler(source), PROTOCOLS)
            addr = host_addrs(a)[0]

            status, headers, body = await fetch_over_libp2p(b, addr, f"{IPNI_PATH}/head")
            assert (status, body) == (204, b"")
            assert headers["cache-control"] == "no-cache, no-store, must-revalidate"

            source.blocks = {small_link: small, big_link: big}
            source.head_link = big_link
            signed = SignedHead.create(big_link, key, ANNOUNCE_TOPIC)
            source.signed = signed.encode()

            status, headers, body = await fetch_over_libp2p(b, addr, f"{IPNI_PATH}/head")
            assert (status, body) == (200, signed.encode())
            assert headers["content-type"] == "application/vnd.ipld.dag-json"
            assert headers["etag"] == f'"{big_link}"'
            decoded = SignedHead.decode(body)
            assert decoded.head == big_link and decoded.verify() == key.peer_id()

            status, headers, body = await fetch_over_libp2p(b, addr, f"{IPNI_PATH}/{small_link}")
            assert (status, body) == (200, small)
            assert headers["cache-control"] == "public, max-age=29030400, immutable"
            check_block(small_link, body)

            unknown, _ = encode_block({"not": "stored"})
            status, _, _ = await fetch_over_libp2p(b, addr, f"{IPNI_PATH}/{unknown}")
            assert status == 404
            status, _, _ = await fetch_over_libp2p(b, addr, f"{IPNI_PATH}/not-a-cid")
            assert status == 400

            status, headers, body = await fetch_over_libp2p(b, addr, WELL_KNOWN_PROTOCOLS)
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body) == {"/ipni/v1/ad": {"path": "/ipni/v1/ad/"}}
            assert body == b'{"/ipni/v1/ad":{"path":"/ipni/v1/ad/"}}'

            client = libp2p_client(b, addr, headers={"accept-encoding": "gzip"})
            base = f"http://{key.peer_id()}"

            async def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
                async with client.get(base + path, headers) as response:
                    body = b"".join([chunk async for chunk in response])
                    return response.status, dict(response.headers), body

            status, headers, body = await get(f"{IPNI_PATH}/{big_link}")  # we ask for gzip
            assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == big
            check_block(big_link, gzip.decompress(body))
            status, _, _ = await get(WELL_KNOWN_PROTOCOLS, accept="text/html")
            assert status == 406

            # httpcore's own pool over the same backend: any method, a request body.
            pool = httpcore.AsyncConnectionPool(network_backend=Libp2pBackend(b, addr))
            async with pool:
                r = await pool.request("POST", base + WELL_KNOWN_PROTOCOLS, content=b"x" * 5000)
                assert r.status == 405
                r = await pool.request("POST", f"{base}{IPNI_PATH}/head", content=b"x" * 5000)
                assert r.status == 405

            results: dict[int, bytes] = {}

            async def fetch(i: int) -> None:
                link = big_link if i % 2 else small_link
                _, headers, body = await get(f"{IPNI_PATH}/{link}")
                results[i] = gzip.decompress(body) if headers.get("content-encoding") else body

            async with trio.open_nursery() as nursery:  # one stream each, concurrently
                for i in range(8):
                    nursery.start_soon(fetch, i)
            assert results == {i: big if i % 2 else small for i in range(8)}
            await client.aclose()


async def test_http_to_peer_without_handler_is_a_connect_error() -> None:
    with trio.fail_after(20):
        async with (
            open_host(PrivateKey.generate(), LOOPBACK) as a,
            open_host(PrivateKey.generate(), LOOPBACK) as b,
        ):
            with pytest.raises(TransportFailed, match="ConnectError"):  # no httpcore type
                await fetch_over_libp2p(b, host_addrs(a)[0], WELL_KNOWN_PROTOCOLS)


async def test_one_stream_serves_keep_alive_requests() -> None:
    body = well_known_body(PROTOCOLS)
    request = f"GET {WELL_KNOWN_PROTOCOLS} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    with trio.fail_after(20):
        async with (
            open_host(PrivateKey.generate(), LOOPBACK) as a,
            open_host(PrivateKey.generate(), LOOPBACK) as b,
        ):
            serve_http_over_libp2p(a, ipnisync_handler(MemorySource()), PROTOCOLS)
            await b.connect(peer_info(host_addrs(a)[0]))
            stream = await b.new_stream(a.get_id(), [HTTP_PROTOCOL])
            await stream.write(request * 2)  # pipelined, no Connection: close
            data = b""
            while data.count(body) < 2:
                data += await stream.read(65536)
            assert data.count(b"HTTP/1.1 200 ") == 2 and b"connection: close" not in data
            await stream.close()


def test_well_known_body_is_go_json() -> None:
    body = well_known_body({"/b": "/b", "/a<&>": "/x/"})
    assert body == b'{"/a\\u003c\\u0026\\u003e":{"path":"/x/"},"/b":{"path":"/b/"}}'
    assert json.loads(body) == {"/a<&>": {"path": "/x/"}, "/b": {"path": "/b/"}}


async def test_gossip_announce_is_received_and_garbage_skipped() -> None:
    key = PrivateKey.generate()
    link, _ = encode_block({"ad": 1})
    msg = Message.create(link, ["/ip4/127.0.0.1/tcp/1234/http"], key.peer_id())
    received: list[tuple[str, Message]] = []
    with trio.fail_after(20), capture_logs() as logs:
        async with (
            open_host(key, LOOPBACK) as a,
            open_host(PrivateKey.generate(), LOOPBACK) as b,
            open_gossip(a) as pub_a,  # before the peers connect
            open_gossip(b) as pub_b,
            receive_announces(pub_b) as announces,  # subscribed before anything is published
        ):
            await b.connect(peer_info(host_addrs(a)[0]))
            done = trio.Event()

            async def read() -> None:  # in its own task: the subscription buffers only 32
                async for item in announces:
                    received.append(item)
                    done.set()
                    return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with trio.fail_after(10):  # until the subscription reaches A: re-publish
                    while not done.is_set():
                        await pub_a.publish(ANNOUNCE_TOPIC, b"\xffnot cbor")
                        await publish_announce(pub_a, msg)
                        with trio.move_on_after(0.5):
                            await done.wait()
    assert received == [(str(key.peer_id()), msg)]
    assert received[0][1].publisher() == key.peer_id()
    skipped = [e for e in logs if e["event"] == "undecodable announce skipped"]
    assert skipped and skipped[0]["peer"] == str(key.peer_id())
