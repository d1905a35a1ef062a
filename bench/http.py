"""Sequential GETs per second through each layer of the HTTP client, in one run.

Why ``sync.net.keepalive.KeepAlivePool`` exists: httpcore's ``AsyncConnectionPool`` costs CPU
per request (its request queue, connection assignment, tracing) that a chain of small ads pays
on every block.  This measures, against the same ``indexer publisher serve`` process, GETs of
one small block through: a bare httpcore ``AsyncHTTP11Connection`` (the floor: httpcore's
HTTP/1.1 code alone), httpcore's pool, our ``KeepAlivePool``, and the whole ``HttpClient``
(deadline, redirects, typed errors, body cap).  Each figure is beside the floor as a ratio.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpcore
import trio

from bench.ingest import _mh, _served
from indexer.publisher.chain import Publisher
from sync.model.metadata import bitswap
from sync.net.httpclient import HttpClient, TcpBackend
from sync.net.keepalive import KeepAlivePool

__all__ = ["run"]

REQUESTS = 3_000


def _request(port: int, path: str) -> httpcore.Request:
    url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=path.encode())
    return httpcore.Request(b"GET", url, headers=[(b"host", f"127.0.0.1:{port}".encode())])


async def _through(
    pool: httpcore.AsyncHTTP11Connection | httpcore.AsyncConnectionPool | KeepAlivePool,
    port: int,
    path: str,
) -> float:
    try:
        start = time.perf_counter()
        for _ in range(REQUESTS):
            response = await pool.handle_async_request(_request(port, path))
            await response.aread()
            await response.aclose()
        return REQUESTS / (time.perf_counter() - start)
    finally:
        await pool.aclose()


async def _connection(port: int, path: str) -> float:
    stream = await TcpBackend().connect_tcp("127.0.0.1", port)
    origin = httpcore.Origin(b"http", b"127.0.0.1", port)
    return await _through(httpcore.AsyncHTTP11Connection(origin, stream), port, path)


async def _httpcore_pool(port: int, path: str) -> float:
    return await _through(httpcore.AsyncConnectionPool(network_backend=TcpBackend()), port, path)


async def _keepalive_pool(port: int, path: str) -> float:
    return await _through(KeepAlivePool(TcpBackend(), ssl.create_default_context(), 16), port, path)


async def _client(port: int, path: str) -> float:
    client = HttpClient(timeout=30, ssl_context=ssl.create_default_context())
    url = f"http://127.0.0.1:{port}{path}"
    try:
        start = time.perf_counter()
        for _ in range(REQUESTS):
            async with client.get(url, {}) as response:
                async for _chunk in response:
                    pass
        return REQUESTS / (time.perf_counter() - start)
    finally:
        await client.aclose()


def run() -> dict[str, Any]:
    ways: dict[str, Callable[[int, str], Awaitable[float]]] = {
        "httpcore_connection": _connection,
        "httpcore_pool": _httpcore_pool,
        "keepalive_pool": _keepalive_pool,
        "http_client": _client,
    }
    with tempfile.TemporaryDirectory() as tmp:
        pub = Publisher.init(Path(tmp) / "pub")
        link = pub.add(b"c", [_mh(1)], bitswap()).link
        pub.close()
        with _served(Path(tmp) / "pub") as addr:
            port = int(addr.split("/tcp/")[1].split("/")[0])
            path = f"/ipni/v1/ad/{link}"
            best = {
                name: max(trio.run(way, port, path) for _ in range(2)) for name, way in ways.items()
            }
    floor = best["httpcore_connection"]
    return {
        "requests": REQUESTS,
        **{f"{name}_requests_per_s": round(rate) for name, rate in best.items()},
        **{f"{name}_ratio": round(rate / floor, 3) for name, rate in best.items() if rate != floor},
    }
