"""The h11 HTTP server and the ipnisync handler, over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from sync import encode_block, load_advertisement
from sync.httpserver import Request, Response, serve_tcp
from sync.ipnisync import ipnisync_handler
from sync.metadata import bitswap
from sync.publisher import Publisher

from ..builders import multihash


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/stream":

        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"line {i}\n".encode()

        return Response(200, parts(), "application/x-ndjson")
    body = f"{request.method} {request.path} {dict(request.query)} {len(request.body)}".encode()
    return Response(200, body * 50, "text/plain", compressible=True)


async def start(nursery: trio.Nursery, handler: object, **kw: object) -> str:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_keep_alive_gzip_streaming_and_errors() -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, echo)
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(3):  # one connection, several requests
                r = await client.get("/a/b", params={"q": "1"})
                assert r.status_code == 200 and r.text.startswith("GET /a/b {'q': ['1']} 0")
                assert r.headers["content-encoding"] == "gzip"
            r = await client.put("/x", content=b"12345", headers={"accept-encoding": "identity"})
            assert "content-encoding" not in r.headers and r.text.startswith("PUT /x {} 5")
            r = await client.get("/stream")
            assert r.text == "line 0\nline 1\nline 2\n"
            assert r.headers["transfer-encoding"] == "chunked"
            r = await client.get("/boom")
            assert r.status_code == 500 and r.text == "internal error\n"
            r = await client.post("/big", content=b"x" * ((1 << 20) + 1))
            assert r.status_code == 413
        nursery.cancel_scope.cancel()


async def test_malformed_request_gets_400_not_a_crash() -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, echo)
        port = int(base.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        async with httpx.AsyncClient(base_url=base) as client:  # the server is still up
            assert (await client.get("/")).status_code == 200
        nursery.cancel_scope.cancel()


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    pub = Publisher.init(tmp_path / "pub")
    yield pub  # type: ignore[misc]
    pub.close()


async def test_ipnisync_routes(publisher: Publisher) -> None:
    async with trio.open_nursery() as nursery:
        base = await start(nursery, ipnisync_handler(publisher))
        async with httpx.AsyncClient(base_url=base + "/ipni/v1/ad") as client:
            r = await client.get("/head")
            assert r.status_code == 204 and "no-cache" in r.headers["cache-control"]
            published = publisher.add(b"c", [multihash(i) for i in range(2000)], bitswap())
            r = await client.get("/head")
            assert r.status_code == 200 and r.content == publisher.signed_head()
            assert r.headers["etag"] == f'"{published.cid}"'
            assert r.headers["content-type"] == "application/vnd.ipld.dag-json"
            r = await client.get("/head", headers={"if-none-match": r.headers["etag"]})
            assert r.status_code == 304 and not r.content
            r = await client.get(f"/{published.cid}")
            assert r.status_code == 200 and r.content == publisher.block(published.cid)
            assert r.headers["cache-control"] == "public, max-age=29030400, immutable"
            unknown, _ = encode_block({"x": 1})
            assert (await client.get(f"/{unknown}")).status_code == 404
            assert (await client.get("/not-a-cid")).status_code == 400
            assert (await client.post("/head")).status_code == 405
            assert (await client.get("/a/b")).status_code == 404
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/other")).status_code == 404
            ad = load_advertisement(published.cid, publisher.block(published.cid) or b"")
            chunk = await client.get(
                f"/ipni/v1/ad/{ad.entries}", headers={"accept-encoding": "gzip"}
            )
            assert chunk.headers["content-encoding"] == "gzip"
            assert chunk.content == publisher.block(ad.entries)  # httpx decodes gzip
            assert int(chunk.headers["content-length"]) < len(chunk.content)
        nursery.cancel_scope.cancel()
